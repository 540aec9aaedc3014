// `uploader post-build-hook [<path>...]`: Nix's post-build-hook. Queues $OUT_PATHS (or the
// paths given) in the spool and wakes the running watcher (spool.ts has the protocol), so
// the build never waits for the network; without a watcher, leaves them queued or pushes
// them now, as --if-no-watcher says.
import { messageOf, UsageError } from "../errors.ts";
import { parseCommandLine } from "../settings.ts";
import { SPOOL_ENV, ensureSpool, isStorePath, newJobName, pingWatcher, removeJob, spoolDir, writeJob } from "../spool.ts";
import { resolveStorePaths } from "../store.ts";
import { Pusher, derivationOutputs } from "../queued-push.ts";
import { SPOOL_OPTIONS, pusherSettings } from "./watch-store.ts";

/** Environment variable for --if-no-watcher (Nix runs the hook without arguments). */
export const IF_NO_WATCHER_ENV = "NIX_CACHE_IF_NO_WATCHER";
const FALLBACKS = ["spool", "push"] as const;
type Fallback = (typeof FALLBACKS)[number];

export const HELP = `Usage: uploader post-build-hook [options] [<path>...]

For Nix's post-build-hook setting: queues the paths Nix just built ($OUT_PATHS; the
outputs of $DRV_PATH where Nix leaves that empty; or the paths given) for a running \`uploader watch-store\`, so the build does not wait for the
network. The paths go to the spool directory (written at once, kept until pushed) and
the watcher is told over its socket. When no watcher runs, it says so and, as
--if-no-watcher says:
  spool   leave them in the spool; the next watch-store pushes them (default)
  push    push them now (the build waits); if that fails they stay in the spool

Nix runs the hook with no arguments, so give the options in a script, e.g.
/etc/nix/upload-to-cache.sh (executable):

  #!/bin/sh
  exec uploader post-build-hook --spool /var/lib/nix-edge-cache/spool

and in nix.conf:

  post-build-hook = /etc/nix/upload-to-cache.sh

and run \`uploader watch-store --spool /var/lib/nix-edge-cache/spool\` (as a service).

Options:
  --spool <dir>             the queue directory shared with watch-store
                            [env ${SPOOL_ENV}; default ~/.local/state/nix-edge-cache/spool]
  --if-no-watcher <what>    spool or push (default spool)    [env ${IF_NO_WATCHER_ENV}]
  (for --if-no-watcher push: --cache, --token, --secret-key-file, -j, --compression,
   --compression-level, --upstream-key, --no-skip-upstream as for push)
  -v, --verbose             report more
  -h, --help                show this help

Exit status: 0 queued (or pushed); 2 bad usage (no paths: not run by Nix?); 3 the
spool cannot be written. Nix stops building after a hook that fails, so a cache that
cannot be reached is a warning, not a failure: the paths stay queued.
`;

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    ...SPOOL_OPTIONS,
    "if-no-watcher": { type: "string" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const fallback = parseFallback(values["if-no-watcher"] ?? process.env[IF_NO_WATCHER_ENV]?.trim() ?? "spool");
  const drv = process.env.DRV_PATH?.trim();
  let paths: string[];
  if (positionals.length > 0) {
    paths = await resolveStorePaths(positionals);
  } else if (!process.env.OUT_PATHS?.trim() && drv) {
    // Nix 2.8.0 (and rebuilds in 2.30-2.31) run the hook with OUT_PATHS empty.
    if (!isStorePath(drv)) throw new UsageError(`DRV_PATH is not a store path: "${drv}"`);
    paths = await derivationOutputs(drv);
    if (values.verbose) process.stderr.write(`post-build-hook: OUT_PATHS is empty (a bug of some Nix versions): queuing the outputs of ${drv}\n`);
  } else {
    paths = outPaths(process.env);
  }
  const from = positionals.length === 0 && drv ? ` built by ${drv}` : "";
  const spool = spoolDir(values.spool);

  await ensureSpool(spool);
  const job = await writeJob(spool, paths, newJobName("hook"));
  const pid = await pingWatcher(spool);
  const what = `${paths.length} path${paths.length === 1 ? "" : "s"}${from}`;
  if (pid !== null) {
    process.stderr.write(`post-build-hook: queued ${what} for uploader watch-store (pid ${pid})\n`);
    return;
  }
  const none = `no uploader watch-store is running on ${spool}`;
  if (fallback === "spool") {
    process.stderr.write(`post-build-hook: warning: ${none}: queued ${what} there; start uploader watch-store to push them\n`);
    return;
  }
  process.stderr.write(`post-build-hook: ${none}: pushing ${what} now\n`);
  const pusher = new Pusher(await pusherSettings(values));
  let problem: string | undefined;
  try {
    const outcome = await pusher.push(paths);
    if (outcome.fatal) problem = outcome.fatal.message;
    else if (outcome.failed.length > 0) problem = outcome.failed.map((f) => `${f.path}: ${f.error}`).join("; ");
  } catch (err) {
    problem = messageOf(err);
  } finally {
    await pusher.close();
  }
  if (problem === undefined) {
    await removeJob(spool, job);
    process.stderr.write(`post-build-hook: pushed ${what}\n`);
    return;
  }
  process.stderr.write(`post-build-hook: warning: the push failed (${problem}); the paths stay queued in ${spool} for uploader watch-store\n`);
}

function parseFallback(value: string): Fallback {
  if ((FALLBACKS as readonly string[]).includes(value)) return value as Fallback;
  throw new UsageError(`--if-no-watcher must be ${FALLBACKS.join(" or ")}, got "${value}"`);
}

/** Nix's $OUT_PATHS: the outputs of the build, separated by spaces. */
function outPaths(env: NodeJS.ProcessEnv): string[] {
  const raw = env.OUT_PATHS?.trim();
  if (!raw) {
    throw new UsageError(
      "no paths: OUT_PATHS is not set (Nix sets it when it runs its post-build-hook)",
      "set post-build-hook in nix.conf to a script that runs uploader post-build-hook (see --help), or give paths as arguments",
    );
  }
  const paths = raw.split(/\s+/);
  const bad = paths.find((p) => !isStorePath(p));
  if (bad !== undefined) throw new UsageError(`OUT_PATHS holds something that is not a store path: "${bad}"`);
  return [...new Set(paths)];
}
