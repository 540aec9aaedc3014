// `uploader watch-store`: flags → settings → Watcher (watcher.ts) until SIGINT/SIGTERM.
// The first signal stops watching and pushes what is queued; a second one aborts, leaving
// the queue in the spool for the next watcher.
import { rmSync } from "node:fs";
import { DEFAULT_COMPRESSION } from "../compress.ts";
import { EXIT_INTERRUPTED, UsageError } from "../errors.ts";
import { readSecretKeyFile } from "../key-file.ts";
import { Progress } from "../progress.ts";
import { DEFAULT_JOBS } from "../run-plan.ts";
import { ENV, integerFlag, parseCommandLine, requireToken, resolveCache, type CacheSettings } from "../settings.ts";
import { SPOOL_ENV, socketPath, spoolDir } from "../spool.ts";
import { defaultStoreDir } from "../store.ts";
import { Pusher, checkCacheAtStart, type PusherSettings } from "../queued-push.ts";
import { DEFAULT_BATCH_WAIT_MS, QueueLeftError, Watcher } from "../watcher.ts";
import { HELP_OPTION, LEVEL_AND_UPSTREAM_HELP, PUSH_OPTIONS, pushChoices, type PushFlags } from "./flags.ts";

/** Upper bound for --batch-wait, in seconds: longer only delays what was built. */
const MAX_BATCH_WAIT_S = 3_600;

export const HELP = `Usage: uploader watch-store [options]

Pushes every new store path, with its closure, as it appears: it watches the Nix store
for paths that become valid (built, substituted, added) and the spool for paths queued
by \`uploader post-build-hook\`. Paths arriving together go up together. While the cache
cannot be reached (or refuses the token), paths stay queued and the push is tried again
with a growing delay (up to a minute), saying what it waits for. Derivations (.drv) are
not pushed; paths signed by an upstream cache are skipped, as with push.

Stop it with Ctrl-C or SIGTERM: it stops watching and pushes what is queued first; a
second signal aborts at once. Queued paths are kept on disk in the spool until they are
in the cache, so a watcher that is killed or cannot finish loses nothing: the next one
pushes them when it starts.

Options:
  --spool <dir>             the queue directory shared with post-build-hook
                            [env ${SPOOL_ENV}; default ~/.local/state/nix-edge-cache/spool]
  --spool-only              push only what is queued in the spool (by post-build-hook);
                            do not watch the store
  --exclude <regex>         do not queue new store paths that match (e.g. '-source$')
  --batch-wait <seconds>    wait this long after a new path for others (default ${DEFAULT_BATCH_WAIT_MS / 1000})
  --cache <url|name>        the cache's URL, or a name given to login [env ${ENV.cacheUrl}]
  --token <token>           a write token for the cache          [env ${ENV.token}]
  --secret-key-file <file>  sign narinfos with this Nix secret key
                                                                 [env ${ENV.secretKeyFile}]
  -j, --jobs <n>            paths uploaded in parallel (default ${DEFAULT_JOBS})
  --compression <method>    zstd, xz or none (default ${DEFAULT_COMPRESSION})
${LEVEL_AND_UPSTREAM_HELP}
  --no-skip-upstream        upload paths signed by upstream keys too
  -v, --verbose             also report each new path, cached paths and retries
  -h, --help                show this help

It starts with push's check of the cache (the URL answers as this cache, the token may
write) and refuses to start when that fails, unless the cache is only away.

Exit status: 0 stopped with nothing left queued; 1 stopped with paths still queued
(they stay in the spool); 2 bad usage; 3 a local problem (the store cannot be watched,
the spool cannot be written, another watcher uses the spool); 4 not the cache, or a
token it refuses, at start.
`;

/** Options shared by watch-store and post-build-hook: a push's, the spool's, -h. */
export const SPOOL_OPTIONS = { ...PUSH_OPTIONS, spool: { type: "string" }, ...HELP_OPTION } as const;

/** The push settings from PUSH_OPTIONS' values, checked as push checks them. */
export async function pusherSettings(values: PushFlags, settings: CacheSettings = resolveCache(values)): Promise<PusherSettings> {
  const token = requireToken(settings, "write");
  const { jobs, compression, level, upstreamKeys } = pushChoices(values);
  const secretKey = settings.secretKeyFile ? await readSecretKeyFile(settings.secretKeyFile) : undefined;
  return { cacheUrl: settings.url, token, secretKey, compression, level, jobs, upstreamKeys, verbose: values.verbose ?? false };
}

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    ...SPOOL_OPTIONS,
    "spool-only": { type: "boolean" },
    exclude: { type: "string" },
    "batch-wait": { type: "string" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) {
    throw new UsageError(`watch-store takes no paths (got "${positionals[0]}")`, "to push given paths, use uploader push; to queue them for a watcher, uploader post-build-hook <path>...");
  }
  let exclude: RegExp | undefined;
  if (values.exclude !== undefined) {
    try {
      exclude = new RegExp(values.exclude);
    } catch (err) {
      throw new UsageError(`--exclude is not a regular expression: ${(err as Error).message}`);
    }
  }
  const batchWait = integerFlag("--batch-wait", values["batch-wait"], 0, MAX_BATCH_WAIT_S);
  const cache = resolveCache(values);
  const settings = await pusherSettings(values, cache);
  const spool = spoolDir(values.spool);
  const progress = new Progress({ verbose: settings.verbose });
  // As push does: is this the cache, and may the token write? Only its being away is not
  // fatal here: paths queue until it is back.
  const start = await checkCacheAtStart(cache);
  for (const warning of start.warnings) progress.log(warning);
  if (start.away) progress.log(`the cache does not answer yet; waiting for ${start.away}; paths stay queued until it does`);
  const pusher = new Pusher(settings);
  const watcher = new Watcher({
    spool,
    storeDir: values["spool-only"] ? null : defaultStoreDir(),
    exclude,
    batchWaitMs: batchWait === undefined ? DEFAULT_BATCH_WAIT_MS : batchWait * 1000,
    pusher,
    progress,
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      watcher.stop();
      return;
    }
    // The second signal: the queue is on disk, so only the temp files need removing.
    const tmp = pusher.tmpDir;
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    rmSync(socketPath(spool), { force: true });
    process.stderr.write(`\n${signal} again: aborted; ${watcher.queued} queued path(s) stay in ${spool} for the next watch-store\n`);
    process.exit(EXIT_INTERRUPTED);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const report = await watcher.run();
    if (report.left > 0) throw new QueueLeftError(report.left, spool, report.reason ?? "not pushed");
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
