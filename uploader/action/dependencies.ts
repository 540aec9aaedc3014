// The uploader's runtime dependencies, installed into the action's own checkout.
//
// GitHub downloads an action's repository without node_modules. The uploader needs its
// production dependencies at run time (@noble/ed25519 for signing, which `push` imports;
// aws4fetch, which only `uploader import` from S3 uses), so the action runs
//   npm install --omit=dev --no-save
// in the checkout's root: the versions come from the committed package-lock.json, nothing
// in the checkout changes, and the dev tools (wrangler, vitest, TypeScript) are left out.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The package the uploader imports at run time (through src/nix/signature.ts). */
export const RUNTIME_DEPENDENCY = "@noble/ed25519";

/** The checkout's root: uploader/action/ is two levels below it. */
export const PROJECT_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** npm's flags: production dependencies at the locked versions, no lifecycle scripts, quiet. */
const NPM_ARGS = ["install", "--omit=dev", "--no-save", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"];

/** True when the runtime dependency resolves from the uploader's sources. */
export function dependenciesPresent(): boolean {
  try {
    import.meta.resolve(RUNTIME_DEPENDENCY);
    return true;
  } catch {
    return false;
  }
}

/**
 * Installs the runtime dependencies unless they are already there. Returns what happened;
 * throws with npm's last lines when npm is missing or fails.
 */
export async function ensureDependencies(env: NodeJS.ProcessEnv = process.env): Promise<"present" | "installed"> {
  if (dependenciesPresent()) return "present";
  await runNpm(env);
  return "installed";
}

function runNpm(env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("npm", NPM_ARGS, { cwd: PROJECT_ROOT, env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (err) => reject(new Error(`cannot run npm to install ${RUNTIME_DEPENDENCY}: ${err.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve();
      else {
        const tail = stderr.trim().split("\n").filter((l) => !/EBADENGINE|Unknown user config/.test(l)).slice(-5).join("\n");
        reject(new Error(`npm ${NPM_ARGS.join(" ")} failed in ${PROJECT_ROOT} (exit ${code}):\n${tail}`));
      }
    });
  });
}
