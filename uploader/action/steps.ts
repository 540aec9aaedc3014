// The action's three steps (action.yml `runs: pre / main / post`).
//
//   pre   at the start of the job: installs the uploader's runtime dependency, so a
//         missing npm or registry shows up before the build rather than after it.
//   main  where the step stands in the job: checks the inputs, and records which store
//         paths exist now. It runs *here*, not in pre, because pre runs before every
//         other step, and so before the step that installs Nix: a snapshot taken then
//         would count Nix itself as built by the job.
//   post  at the end of the job (after the build, even a failed one): pushes the given
//         paths, or every valid store path that appeared since main, with the uploader,
//         and writes the job summary.
//
// Reaching the cache is best effort by default: a failed push is a warning and the job's
// result is the build's. With `fail-on-error: true` it fails the job. A mistake in the
// inputs fails the main step whatever the setting: it would fail every run the same way.
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultStoreDir } from "../store.ts";
import { ensureDependencies } from "./dependencies.ts";
import { readInputs, type ActionInputs } from "./inputs.ts";
import { noteMarkdown, pushSummaryMarkdown } from "./job-summary.ts";
import { pushPaths } from "./push-process.ts";
import * as runner from "./runner.ts";
import { listStore, newOutputs, readSnapshot, validPaths, writeSnapshot } from "./store-snapshot.ts";

/** The state entry that carries the snapshot file's path from main to post. */
const SNAPSHOT_STATE = "snapshot";

/** Owner-only, as Nix itself keeps secret key files. */
const SECRET_KEY_MODE = 0o600;

function scratchDir(env: NodeJS.ProcessEnv): string {
  return env.RUNNER_TEMP || tmpdir();
}

export async function pre(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    const done = await ensureDependencies(env);
    runner.info(done === "installed" ? "nix-edge-cache: installed the uploader's dependencies" : "nix-edge-cache: uploader ready");
  } catch (err) {
    // post tries again and reports the outcome as a push failure.
    runner.warning(`nix-edge-cache: ${(err as Error).message}`);
  }
  return 0;
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let inputs: ActionInputs;
  try {
    inputs = readInputs(env);
  } catch (err) {
    if (err instanceof runner.InputError) {
      runner.error(`nix-edge-cache: ${err.message}`);
      return 1;
    }
    throw err;
  }
  runner.mask(inputs.token);
  runner.mask(inputs.secretKey);
  if (inputs.paths.length > 0) {
    runner.info(`nix-edge-cache: will push ${inputs.paths.join(" ")} to ${inputs.cacheUrl} at the end of the job`);
    return 0;
  }
  const storeDir = defaultStoreDir(env);
  const names = await listStore(storeDir);
  const file = join(await mkdtemp(join(scratchDir(env), "nix-edge-cache-")), "store-before");
  await writeSnapshot(file, names);
  runner.saveState(SNAPSHOT_STATE, file, env);
  runner.info(
    `nix-edge-cache: ${names.length} entries in ${storeDir} now; the store paths built after this step ` +
      `will be pushed to ${inputs.cacheUrl} at the end of the job`,
  );
  return 0;
}

export async function post(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    return await pushAtEndOfJob(env);
  } catch (err) {
    // A bug in the action must not fail the user's build unless they asked for that.
    const message = `nix-edge-cache: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    let failOnError = false;
    try {
      failOnError = runner.booleanInput("fail-on-error", env);
    } catch {
      // a bad value was reported by main
    }
    if (failOnError) runner.error(message);
    else runner.warning(message);
    return failOnError ? 1 : 0;
  }
}

async function pushAtEndOfJob(env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  let inputs: ActionInputs;
  try {
    inputs = readInputs(env);
  } catch (err) {
    // main already reported it and failed the job.
    if (err instanceof runner.InputError) return 0;
    throw err;
  }
  const fail = (problem: string): number => {
    const message = `nix-edge-cache: could not push to ${inputs.cacheUrl}: ${problem}`;
    if (inputs.failOnError) {
      runner.error(message);
      return 1;
    }
    runner.warning(`${message} (the job goes on; set fail-on-error: true to fail it)`);
    return 0;
  };

  if (!inputs.token) {
    const text = "No token given (pull requests from forks get no secrets): nothing was pushed.";
    runner.notice(`nix-edge-cache: ${text}`);
    runner.appendSummary(noteMarkdown(text), env);
    return 0;
  }

  let paths: string[];
  if (inputs.paths.length > 0) {
    paths = inputs.paths;
  } else {
    const snapshot = runner.state(SNAPSHOT_STATE, env);
    if (!snapshot) {
      // main did not run to the end (the job was cancelled or failed before it).
      runner.info("nix-edge-cache: no store snapshot from the main step; nothing to push");
      return 0;
    }
    try {
      const storeDir = defaultStoreDir(env);
      const fresh = newOutputs(await readSnapshot(snapshot), await listStore(storeDir), storeDir);
      const kept = inputs.exclude ? fresh.filter((p) => !inputs.exclude!.test(p)) : fresh;
      paths = kept.length > 0 ? await validPaths(kept, env) : [];
    } catch (err) {
      return fail(`cannot list the new store paths: ${(err as Error).message}`);
    }
    if (paths.length === 0) {
      const text = "No new store paths since the action started: nothing to push.";
      runner.info(`nix-edge-cache: ${text}`);
      runner.appendSummary(noteMarkdown(text), env);
      return 0;
    }
    runner.info(`nix-edge-cache: ${paths.length} new store paths`);
  }

  try {
    await ensureDependencies(env);
  } catch (err) {
    runner.appendSummary(pushSummaryMarkdown({ cacheUrl: inputs.cacheUrl, summary: null, seconds: 0, compression: inputs.compression, problem: (err as Error).message }), env);
    return fail((err as Error).message);
  }

  const scratch = await mkdtemp(join(scratchDir(env), "nix-edge-cache-key-"));
  try {
    let secretKeyFile: string | undefined;
    if (inputs.secretKey) {
      secretKeyFile = join(scratch, "secret.key");
      await writeFile(secretKeyFile, inputs.secretKey, { mode: SECRET_KEY_MODE });
      await chmod(secretKeyFile, SECRET_KEY_MODE);
    }
    const result = await pushPaths(paths, {
      cacheUrl: inputs.cacheUrl,
      token: inputs.token,
      secretKeyFile,
      compression: inputs.compression,
      jobs: inputs.jobs,
      cwd: env.GITHUB_WORKSPACE || process.cwd(),
      env,
    });
    const seconds = (performance.now() - started) / 1000;
    const problem = result.exitCode === 0 ? undefined : result.errorText || `the uploader exited with ${result.exitCode}`;
    runner.appendSummary(
      pushSummaryMarkdown({ cacheUrl: inputs.cacheUrl, summary: result.summary, seconds, compression: inputs.compression, problem }),
      env,
    );
    return problem ? fail(problem) : 0;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
