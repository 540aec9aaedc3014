// The uploader the push benchmarks run: by default the JavaScript `npm pack` ships
// (uploader/tsconfig.build.json, compiled here into bench/out/), which is what an installed
// uploader and the GitHub Action run. From a clone, `uploader/cli.ts` runs the TypeScript
// sources through Node's type stripping, which costs about a second of CPU at every start
// (stripping and loading the stripper; measured with --cpu-prof on 2 loaded cores): a cost
// users never pay, and one that would count against every push timed here.
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import { PROJECT_ROOT, runOk } from "../test/e2e/harness.ts";

/** Inside the project, so that the compiled modules find its node_modules. */
const OUT_DIR = join(PROJECT_ROOT, "bench", "out", "uploader-js");

/**
 * The script to run as `node <script> push …`: the sources with `fromSource`, otherwise
 * the uploader compiled afresh from them (a few seconds, not timed).
 */
export async function uploaderScript(fromSource: boolean): Promise<string> {
  if (fromSource) return join(PROJECT_ROOT, "uploader", "cli.ts");
  await runOk(process.execPath, [join(PROJECT_ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", join(PROJECT_ROOT, "uploader", "tsconfig.build.json"), "--outDir", OUT_DIR]);
  // Where the compiled cli.js looks for its version, as in the package (dist/ beside it).
  await copyFile(join(PROJECT_ROOT, "package.json"), join(OUT_DIR, "package.json"));
  return join(OUT_DIR, "uploader", "cli.js");
}
