// The action's `post` step (action.yml `runs.post`); the step itself is in steps.ts.
import { post } from "./steps.ts";

process.exitCode = await post();
