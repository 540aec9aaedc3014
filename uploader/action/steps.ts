// The action's three steps (action.yml `runs: pre / main / post`), each bundled into one
// file (dist/, built by build.ts) so a job installs nothing.
//
//   pre   at the start of the job, before every other step (so before Nix is installed):
//         checks the inputs and asks the cache whether `cache-url` is a nix-edge-cache and
//         `token` may write, so a wrong one is reported at once, naming the input.
//   main  where the step stands in the job (after Nix is installed, before the build):
//         - configures Nix for the later steps: substitute from the cache (its keys from
//           its own description, GET /_api/v1/cache) and the extra caches, and run the
//           action's post-build-hook (nix-setup.ts);
//         - push-mode hook (the default): starts `uploader watch-store --spool-only` in the
//           background; the hook queues each build's outputs for it, so they are pushed as
//           builds finish (watcher-process.ts);
//         - push-mode store-diff, or where the hook cannot be installed (an untrusted user
//           of a daemon without sudo): records which store paths exist now.
//         It runs *here*, not in pre, because pre runs before the step that installs Nix.
//   post  at the end of the job (after the build, even a failed one): stops the watcher,
//         which pushes what is still queued first; or pushes the given paths, or every
//         valid store path that appeared since main; then writes the job summary and the
//         outputs (pushed-paths, pushed-bytes, pushed-nar-bytes).
//
// Reaching the cache is best effort by default: a failed push is a warning and the job's
// result is the build's. With `fail-on-error: true` it fails the job. A mistake in the
// inputs fails the pre and main steps whatever the setting: it would fail every run the same way.
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatBytes, type PushSummary } from "../progress.ts";
import { ensureSpool } from "../spool.ts";
import { defaultStoreDir } from "../store.ts";
import { readInputs, type ActionInputs } from "./inputs.ts";
import { noteMarkdown, pushSummaryMarkdown } from "./job-summary.ts";
import { confFilesWith, setUpNix, undoSetup, type SystemChange } from "./nix-setup.ts";
import { checkCache } from "./preflight.ts";
import { pushPaths } from "./push-process.ts";
import * as runner from "./runner.ts";
import { listStore, newOutputs, readSnapshot, validPaths, writeSnapshot } from "./store-snapshot.ts";
import { drainWatcher, hookScript, startWatcher } from "./watcher-process.ts";

/** State entries (GITHUB_STATE) main leaves for post. */
const STATE = {
  mode: "mode",
  snapshot: "snapshot",
  dir: "dir",
  watcher: "watcher-pid",
  spool: "spool",
  log: "watcher-log",
  watcherStarted: "watcher-started",
  keyFile: "key-file",
  notPushing: "not-pushing",
  systemChange: "system-nix-conf",
} as const;

type Mode = "hook" | "store-diff" | "paths" | "none";

/** Owner-only, as Nix itself keeps secret key files. */
const SECRET_KEY_MODE = 0o600;

function scratchDir(env: NodeJS.ProcessEnv): string {
  return env.RUNNER_TEMP || tmpdir();
}

/** Reads the inputs; reports a mistake as an error annotation naming the input. */
function inputsOrReport(env: NodeJS.ProcessEnv): ActionInputs | null {
  try {
    return readInputs(env);
  } catch (err) {
    if (err instanceof runner.InputError) {
      runner.error(`nix-edge-cache: ${err.message}`);
      return null;
    }
    throw err;
  }
}

export async function pre(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const inputs = inputsOrReport(env);
  if (!inputs) return 1;
  runner.mask(inputs.token);
  runner.mask(inputs.secretKey);
  const check = await checkCache(inputs.cacheUrl, inputs.token);
  for (const n of check.notes) runner.notice(`nix-edge-cache: ${n}`);
  for (const p of check.problems) runner.warning(`nix-edge-cache: ${p}`);
  if (check.problems.length === 0) {
    const access = !inputs.token ? "no token: nothing will be pushed" : check.canPush ? "the token may write" : "";
    runner.info(`nix-edge-cache: ${inputs.cacheUrl} answers${access ? `; ${access}` : ""}`);
  }
  return 0;
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const inputs = inputsOrReport(env);
  if (!inputs) return 1;
  runner.mask(inputs.token);
  runner.mask(inputs.secretKey);
  const dir = await mkdtemp(join(scratchDir(env), "nix-edge-cache-"));
  runner.saveState(STATE.dir, dir, env);

  // The cache: is it there, may the token write, which keys sign it?
  const pushing = inputs.token !== "" && !inputs.skipPush;
  const check = await checkCache(inputs.cacheUrl, inputs.token);
  for (const n of check.notes) runner.notice(`nix-edge-cache: ${n}`);
  const refused = pushing && !check.canPush;
  for (const p of check.problems) (refused && inputs.failOnError ? runner.error : runner.warning)(`nix-edge-cache: ${p}`);
  if (refused) {
    runner.saveState(STATE.notPushing, check.problems.join(" ").replace(/[\r\n]+/g, " "), env);
    if (inputs.failOnError) return 1;
  }

  let mode: Mode = !pushing || refused ? "none" : inputs.paths.length > 0 ? "paths" : inputs.pushMode;
  let hook: { script: string; spool: string } | undefined;
  if (mode === "hook") {
    hook = { script: join(dir, "post-build-hook.sh"), spool: join(dir, "spool") };
    await ensureSpool(hook.spool);
    await writeFile(hook.script, hookScript({ spool: hook.spool, exclude: inputs.exclude }), { mode: 0o755 });
    await chmod(hook.script, 0o755);
  }

  // Nix for the later steps: substituters, keys, the hook.
  const d = check.description;
  const substituters = inputs.configureNix ? [inputs.cacheUrl, ...inputs.extraSubstituters] : [];
  const publicKeys = inputs.configureNix ? [...(d?.publicKeys ?? []), ...inputs.extraTrustedPublicKeys] : [];
  if (inputs.configureNix && d && d.publicKeys.length === 0 && inputs.extraTrustedPublicKeys.length === 0) {
    runner.warning(`nix-edge-cache: ${inputs.cacheUrl} announces no public key (no SIGNING_KEY on the Worker): give its key in extra-trusted-public-keys, or Nix will not use what it has`);
  }
  const netrc = inputs.configureNix && d?.private && d.access.read ? { host: new URL(inputs.cacheUrl).hostname, token: inputs.token } : undefined;
  let setup;
  try {
    setup = await setUpNix({ dir, substituters, publicKeys, hookScript: hook?.script, netrc, env });
  } catch (err) {
    runner.warning(`nix-edge-cache: cannot configure Nix: ${(err as Error).message}`);
    setup = { how: "not applied" as const, hookInstalled: false, lines: [], notes: [], done: [] };
  }
  if (setup.systemChange) runner.saveState(STATE.systemChange, JSON.stringify(setup.systemChange), env);
  if (setup.confFile) runner.exportVariable("NIX_USER_CONF_FILES", confFilesWith(setup.confFile, env), env);
  for (const n of setup.notes) runner.warning(`nix-edge-cache: ${n}`);
  for (const n of setup.done) runner.notice(`nix-edge-cache: ${n}`);
  if (setup.lines.length > 0 && setup.how !== "not applied") {
    runner.info(`nix-edge-cache: Nix configured for the next steps (${setup.how}):\n${setup.lines.map((l) => `  ${l}`).join("\n")}`);
  }

  if (mode === "hook" && !setup.hookInstalled) {
    runner.notice("nix-edge-cache: Nix's post-build-hook cannot be installed here: the store paths new since this step are pushed at the end of the job instead");
    mode = "store-diff";
  }
  if (mode === "hook" && hook) {
    const keyFile = inputs.secretKey ? await writeSecretKey(dir, inputs.secretKey) : undefined;
    if (keyFile) runner.saveState(STATE.keyFile, keyFile, env);
    const log = join(dir, "watcher.log");
    const started = await startWatcher({
      spool: hook.spool,
      log,
      cacheUrl: inputs.cacheUrl,
      token: inputs.token,
      secretKeyFile: keyFile,
      compression: inputs.compression,
      jobs: inputs.jobs,
      extraArgs: inputs.uploaderArgs,
      env,
      cwd: env.GITHUB_WORKSPACE || process.cwd(),
    });
    if ("pid" in started) {
      runner.saveState(STATE.watcher, String(started.pid), env);
      runner.saveState(STATE.spool, hook.spool, env);
      runner.saveState(STATE.log, log, env);
      runner.saveState(STATE.watcherStarted, String(Date.now()), env);
      runner.info(`nix-edge-cache: every build's outputs are pushed to ${inputs.cacheUrl} as the build ends (uploader watch-store, pid ${started.pid})`);
    } else {
      runner.warning(`nix-edge-cache: ${started.problem}; the store paths new since this step are pushed at the end of the job instead`);
      mode = "store-diff";
    }
  }
  if (mode === "store-diff") {
    const storeDir = defaultStoreDir(env);
    const names = await listStore(storeDir);
    const file = join(dir, "store-before");
    await writeSnapshot(file, names);
    runner.saveState(STATE.snapshot, file, env);
    runner.info(`nix-edge-cache: ${names.length} entries in ${storeDir} now; the store paths built after this step will be pushed to ${inputs.cacheUrl} at the end of the job`);
  }
  if (mode === "paths") runner.info(`nix-edge-cache: will push ${inputs.paths.join(" ")} to ${inputs.cacheUrl} at the end of the job`);
  runner.saveState(STATE.mode, mode, env);
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
  } finally {
    const keyFile = runner.state(STATE.keyFile, env);
    if (keyFile) await rm(keyFile, { force: true });
    await undoSystemChange(env);
  }
}

/** Takes what main added to the system's nix.conf out again (after the last push). */
async function undoSystemChange(env: NodeJS.ProcessEnv): Promise<void> {
  const saved = runner.state(STATE.systemChange, env);
  if (!saved) return;
  try {
    runner.info(`nix-edge-cache: ${await undoSetup(JSON.parse(saved) as SystemChange, env)}`);
  } catch (err) {
    runner.warning(`nix-edge-cache: ${(err as Error).message}`);
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
  const outputs = (s: Pick<PushSummary, "uploaded" | "fileBytes" | "narBytes"> | null): void => {
    runner.setOutput("pushed-paths", String(s?.uploaded ?? 0), env);
    runner.setOutput("pushed-bytes", String(s?.fileBytes ?? 0), env);
    runner.setOutput("pushed-nar-bytes", String(s?.narBytes ?? 0), env);
  };
  const fail = (problem: string): number => {
    const message = `nix-edge-cache: could not push to ${inputs.cacheUrl}: ${problem}`;
    if (inputs.failOnError) {
      runner.error(message);
      return 1;
    }
    runner.warning(`${message} (the job goes on; set fail-on-error: true to fail it)`);
    return 0;
  };
  const note = (text: string, annotate: (m: string) => void = runner.info): number => {
    annotate(`nix-edge-cache: ${text}`);
    runner.appendSummary(noteMarkdown(text), env);
    outputs(null);
    return 0;
  };

  if (!inputs.token) return note("No token given (pull requests from forks get no secrets): nothing was pushed.", runner.notice);
  if (inputs.skipPush) return note("skip-push is set: nothing was pushed.");
  const notPushing = runner.state(STATE.notPushing, env);
  if (notPushing) {
    runner.appendSummary(pushSummaryMarkdown({ cacheUrl: inputs.cacheUrl, summary: null, seconds: 0, compression: inputs.compression, problem: notPushing }), env);
    outputs(null);
    return fail(notPushing);
  }
  const mode = runner.state(STATE.mode, env) as Mode | "";
  if (mode === "" || mode === "none") {
    // main did not run to the end (the job was cancelled or failed before it).
    runner.info("nix-edge-cache: the action's main step did not run to its end; nothing to push");
    outputs(null);
    return 0;
  }

  if (mode === "hook") return drain(inputs, env, started, outputs, fail);

  let paths: string[];
  if (mode === "paths") {
    paths = inputs.paths;
  } else {
    try {
      const storeDir = defaultStoreDir(env);
      const fresh = newOutputs(await readSnapshot(runner.state(STATE.snapshot, env)), await listStore(storeDir), storeDir);
      const kept = inputs.exclude ? fresh.filter((p) => !inputs.exclude!.test(p)) : fresh;
      paths = kept.length > 0 ? await validPaths(kept, env) : [];
    } catch (err) {
      outputs(null);
      return fail(`cannot list the new store paths: ${(err as Error).message}`);
    }
    if (paths.length === 0) return note("No new store paths since the action started: nothing to push.");
    runner.info(`nix-edge-cache: ${paths.length} new store paths`);
  }

  const scratch = await mkdtemp(join(scratchDir(env), "nix-edge-cache-key-"));
  try {
    const secretKeyFile = inputs.secretKey ? await writeSecretKey(scratch, inputs.secretKey) : undefined;
    const result = await pushPaths(paths, {
      cacheUrl: inputs.cacheUrl,
      token: inputs.token,
      secretKeyFile,
      compression: inputs.compression,
      jobs: inputs.jobs,
      extraArgs: inputs.uploaderArgs,
      cwd: env.GITHUB_WORKSPACE || process.cwd(),
      env,
    });
    const seconds = (performance.now() - started) / 1000;
    const problem = result.exitCode === 0 ? undefined : result.errorText || `the uploader exited with ${result.exitCode}`;
    runner.appendSummary(
      pushSummaryMarkdown({ cacheUrl: inputs.cacheUrl, summary: result.summary, seconds, compression: inputs.compression, problem }),
      env,
    );
    outputs(result.summary);
    return problem ? fail(problem) : 0;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** push-mode hook: stop the watcher (it pushes what is queued first) and report. */
async function drain(
  inputs: ActionInputs,
  env: NodeJS.ProcessEnv,
  started: number,
  outputs: (s: PushSummary | null) => void,
  fail: (problem: string) => number,
): Promise<number> {
  const pid = Number(runner.state(STATE.watcher, env));
  const spool = runner.state(STATE.spool, env);
  const log = runner.state(STATE.log, env);
  runner.info(`nix-edge-cache: stopping the watcher (pid ${pid}); it pushes what is still queued first`);
  const base = inputs.cacheUrl.endsWith("/") ? inputs.cacheUrl : `${inputs.cacheUrl}/`;
  // The upload time in the summary: the watcher's whole life, from main to now.
  const watched = (Date.now() - Number(runner.state(STATE.watcherStarted, env))) / 1000;
  const result = await drainWatcher({ pid, spool, log, seconds: Number.isFinite(watched) ? watched : 0 }, async (storePath) => {
    const hash = storePath.split("/").at(-1)!.slice(0, 32);
    const res = await fetch(new URL(`${hash}.narinfo`, base), { headers: { authorization: `Bearer ${inputs.token}` } });
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`GET ${hash}.narinfo: HTTP ${res.status}`);
    return res.text();
  });
  runner.group("nix-edge-cache: the watcher's log", result.log);
  const seconds = (performance.now() - started) / 1000;
  const s = result.summary;
  runner.info(`nix-edge-cache: ${s.uploaded} paths uploaded while the job ran (${formatBytes(s.fileBytes)} sent)`);
  runner.appendSummary(
    pushSummaryMarkdown({
      cacheUrl: inputs.cacheUrl,
      summary: s,
      seconds,
      compression: inputs.compression,
      problem: result.problem,
      how: "as builds finished (the last ones when the job ended)",
    }),
    env,
  );
  outputs(s);
  return result.problem ? fail(result.problem) : 0;
}

async function writeSecretKey(dir: string, key: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = join(dir, "secret.key");
  await writeFile(file, key, { mode: SECRET_KEY_MODE });
  await chmod(file, SECRET_KEY_MODE);
  return file;
}
