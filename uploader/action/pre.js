// The action's `pre` step (action.yml `runs.pre`); the step itself is in steps.ts.
import { pre } from "./steps.ts";

process.exitCode = await pre();
