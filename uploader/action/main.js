// The action's `main` step (action.yml `runs.main`); the step itself is in steps.ts.
import { main } from "./steps.ts";

process.exitCode = await main();
