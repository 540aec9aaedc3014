// `watch-store`'s engine: a queue of store paths fed by the store directory (new valid
// paths, watch-store-dir.ts) and by the spool (paths queued by `post-build-hook` and other
// producers, spool.ts), pushed in batches through the push pipeline (queued-push.ts).
//
// - Every queued path is on disk until it is in the cache: a path seen in the store is
//   first written to the spool as a job, like the hook's, and a job is deleted only once
//   all its paths are pushed. A watcher killed at any moment loses nothing; the next one
//   drains the spool when it starts.
// - Paths arriving close together go up together: a batch starts `batchWaitMs` after the
//   first path waiting for it, and takes every path queued by then (up to MAX_BATCH_PATHS),
//   so one build's outputs share one plan and one "what is missing" query.
// - The cache being away (no answer, 5xx, refused token) is waited out: the queue keeps
//   growing on disk and the batch is tried again with a growing delay (up to
//   RETRY_MAX_MS), with one line each time saying what it waits for. A path that fails
//   while the cache answers (e.g. a corrupted store path) is tried MAX_PATH_ATTEMPTS times,
//   then set aside in the spool's failed/ directory, named in the log.
// - stop() (the first SIGINT/SIGTERM) stops watching and pushes what is queued, once,
//   without waiting for the batch delay; what cannot be pushed then stays in the spool.
import { watch, type FSWatcher } from "node:fs";
import type { Server } from "node:net";
import { EXIT_PATHS_FAILED, UploaderError, messageOf } from "./errors.ts";
import type { Progress } from "./progress.ts";
import {
  JOB_SUFFIX,
  SpoolError,
  closeSpoolSocket,
  ensureSpool,
  listJobs,
  listenOnSpool,
  moveToFailed,
  newJobName,
  readJob,
  removeJob,
  writeFailedJob,
  writeJob,
} from "./spool.ts";
import { cacheTrouble, type Pusher } from "./queued-push.ts";
import { watchStoreDir, type StoreWatchError } from "./watch-store-dir.ts";

/** Default wait after the first new path before a batch starts: builds finish in bursts. */
export const DEFAULT_BATCH_WAIT_MS = 1_000;
/** Paths per batch: the cache answers "what is missing" for 500 hashes per request. */
export const MAX_BATCH_PATHS = 500;
/** First delay after a failed batch; doubled each time the next one fails too. */
export const RETRY_FIRST_MS = 1_000;
/** Longest delay between attempts while the cache is away: also a heartbeat in the log. */
export const RETRY_MAX_MS = 60_000;
/** Attempts at a path that fails while the cache answers, before it is set aside. */
export const MAX_PATH_ATTEMPTS = 3;
/** Paths seen in the store within this time go to the spool as one job. */
const DETECT_FLUSH_MS = 100;
/**
 * The spool is also read this often, besides on every change the directory watch reports
 * and every producer's ping: a safety net for file systems that report no changes (NFS).
 */
const RESCAN_MS = 60_000;

export interface WatcherOptions {
  spool: string;
  /** The store directory to watch for new paths; null to push only what the spool gets. */
  storeDir: string | null;
  /** New store paths matching this are not queued (paths queued in the spool always are). */
  exclude?: RegExp | undefined;
  batchWaitMs: number;
  pusher: Pusher;
  /** Where the watcher says what it does (stderr). */
  progress: Progress;
}

/** What was left when the watcher stopped. */
export interface WatchReport {
  /** Paths still queued in the spool. */
  left: number;
  /** Why they were not pushed. */
  reason?: string;
}

/** The watcher stopped with paths it could not push; they stay in the spool. */
export class QueueLeftError extends UploaderError {
  constructor(left: number, spool: string, reason: string) {
    super(
      `${left} path${left === 1 ? "" : "s"} not pushed (${reason}); still queued in ${spool}`,
      EXIT_PATHS_FAILED,
      "the next uploader watch-store with this spool pushes them",
    );
  }
}

type Attempt = { ok: true } | { ok: false; waitingFor: string };

export class Watcher {
  readonly #o: WatcherOptions;
  /** Jobs in the spool, by file name, with the paths of each still to push. */
  readonly #jobs = new Map<string, Set<string>>();
  /** Malformed or unreadable jobs already reported. */
  readonly #badJobs = new Set<string>();
  /** Every path to push, oldest first. */
  readonly #pending = new Set<string>();
  /** Failed attempts per path, while the cache answered. */
  readonly #attempts = new Map<string, number>();
  #detected: string[] = [];
  #detectTimer: NodeJS.Timeout | undefined;
  #detectFlush: Promise<void> = Promise.resolve();
  #scanChain: Promise<void> = Promise.resolve();
  /** When the oldest path not yet tried arrived; undefined when every queued path was tried. */
  #waitingSince: number | undefined;
  #sleeper: { resolve: () => void; onArrival: boolean } | undefined;
  #stopping = false;
  #failure: UploaderError | undefined;
  #storeWatch: FSWatcher | undefined;
  #spoolWatch: FSWatcher | undefined;
  #socket: Server | undefined;
  #rescan: NodeJS.Timeout | undefined;

  constructor(options: WatcherOptions) {
    this.#o = options;
  }

  /** Paths queued now (in the spool, not yet in the cache). */
  get queued(): number {
    return this.#pending.size + this.#detected.length;
  }

  /**
   * Watches and pushes until stop(); then pushes what is queued once and returns what is
   * left. Throws when watching cannot start (another watcher on the spool, no store).
   */
  async run(): Promise<WatchReport> {
    const { spool, storeDir, pusher, progress } = this.#o;
    let lastWait: string | undefined;
    try {
      await ensureSpool(spool);
      this.#socket = await listenOnSpool(spool, () => void this.#scan());
      this.#spoolWatch = watch(spool, (_event, name) => {
        if (name !== null && String(name).endsWith(JOB_SUFFIX) && !String(name).startsWith(".")) void this.#scan();
      });
      this.#spoolWatch.on("error", (err) => progress.log(`warning: watching ${spool} failed (${messageOf(err)}); it is still read every ${RESCAN_MS / 1000} s`));
      if (storeDir !== null) {
        this.#storeWatch = watchStoreDir(storeDir, (path) => this.#onStorePath(path), (err) => this.#fail(err));
      }
      this.#rescan = setInterval(() => void this.#scan(), RESCAN_MS);
      this.#rescan.unref();
      await this.#scan();
      const what = storeDir !== null ? `new paths in ${storeDir} and paths queued in ${spool}` : `paths queued in ${spool}`;
      progress.log(`watching for ${what}; pushing to ${pusher.cacheUrl} (stop with Ctrl-C or SIGTERM: queued paths are pushed first)`);
      if (this.#pending.size > 0) progress.log(`${plural(this.#pending.size, "path")} queued from before`);

      /** The current delay's upper bound after failed attempts; 0 after a success. */
      let ceiling = 0;
      while (!this.#stopping) {
        if (this.#pending.size === 0) {
          await this.#sleep(Number.POSITIVE_INFINITY, true);
          continue;
        }
        if (this.#waitingSince !== undefined) {
          const due = this.#waitingSince + this.#o.batchWaitMs;
          if (Date.now() < due) {
            await this.#sleep(due - Date.now(), true);
            continue;
          }
        }
        const attempt = await this.#pushOnce();
        if (attempt.ok) {
          ceiling = 0;
          lastWait = undefined;
          continue;
        }
        lastWait = attempt.waitingFor;
        if (this.#stopping) break;
        ceiling = nextCeiling(ceiling);
        const delay = jitter(ceiling);
        progress.log(`waiting for ${attempt.waitingFor}: ${plural(this.#pending.size, "path")} queued, next attempt in ${Math.max(1, Math.round(delay / 1000))} s`);
        await this.#sleep(delay, false);
      }

      // Stopping: push what is queued, including what arrived just before the signal.
      await this.#flushDetected();
      await this.#scan();
      while (this.#pending.size > 0) {
        const attempt = await this.#pushOnce();
        if (!attempt.ok) {
          lastWait = attempt.waitingFor;
          break;
        }
        lastWait = undefined;
      }
    } finally {
      await this.#close();
    }
    if (this.#failure) throw this.#failure;
    const left = this.#pending.size;
    if (left === 0) {
      progress.log("stopped: nothing left queued");
      return { left };
    }
    return { left, reason: lastWait ? `waiting for ${lastWait}` : "stopped before they were pushed" };
  }

  /** The first signal: stop watching, push what is queued, return from run(). */
  stop(): void {
    if (this.#stopping) return;
    this.#stopping = true;
    const n = this.queued;
    this.#o.progress.log(
      n > 0
        ? `stopping: pushing the ${plural(n, "queued path")} first (interrupt again to abort; they stay queued in ${this.#o.spool})`
        : "stopping",
    );
    this.#unwatch();
    this.#wake(true);
  }

  #fail(err: StoreWatchError): void {
    this.#failure ??= err;
    this.stop();
  }

  #unwatch(): void {
    this.#storeWatch?.close();
    this.#storeWatch = undefined;
    this.#spoolWatch?.close();
    this.#spoolWatch = undefined;
    if (this.#rescan) clearInterval(this.#rescan);
    this.#rescan = undefined;
  }

  async #close(): Promise<void> {
    this.#unwatch();
    if (this.#detectTimer) clearTimeout(this.#detectTimer);
    if (this.#socket) await closeSpoolSocket(this.#socket, this.#o.spool);
    this.#socket = undefined;
    await this.#o.pusher.close();
  }

  // --- waiting ----------------------------------------------------------------------

  /** Resolves after `ms`, on stop(), and (when `onArrival`) when a new path is queued. */
  #sleep(ms: number, onArrival: boolean): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(() => this.#wake(true), ms) : undefined;
      this.#sleeper = {
        resolve: () => {
          if (timer) clearTimeout(timer);
          resolve();
        },
        onArrival,
      };
    });
  }

  #wake(always: boolean): void {
    const s = this.#sleeper;
    if (s && (always || s.onArrival)) {
      this.#sleeper = undefined;
      s.resolve();
    }
  }

  #arrived(): void {
    this.#waitingSince ??= Date.now();
    this.#wake(false);
  }

  // --- feeding the queue --------------------------------------------------------------

  #onStorePath(path: string): void {
    if (this.#stopping || this.#o.exclude?.test(path)) return;
    if (this.#pending.has(path) || this.#detected.includes(path)) return;
    this.#o.progress.detail(`new store path ${path}`);
    this.#detected.push(path);
    this.#detectTimer ??= setTimeout(() => void this.#flushDetected(), DETECT_FLUSH_MS);
  }

  /** Writes the paths seen in the store to the spool as one job, then queues them. */
  #flushDetected(): Promise<void> {
    this.#detectFlush = this.#detectFlush.then(async () => {
      if (this.#detectTimer) clearTimeout(this.#detectTimer);
      this.#detectTimer = undefined;
      const paths = this.#detected.splice(0);
      if (paths.length === 0) return;
      const name = newJobName("store");
      // Known before it exists, so a spool scan meanwhile does not read it a second time.
      this.#jobs.set(name, new Set(paths));
      try {
        await writeJob(this.#o.spool, paths, name);
      } catch (err) {
        this.#o.progress.log(`warning: ${messageOf(err)}; ${plural(paths.length, "new path")} queued in memory only`);
      }
      for (const p of paths) this.#pending.add(p);
      this.#arrived();
    });
    return this.#detectFlush;
  }

  /** Reads jobs not seen yet; serialised, so two scans never read one job twice. */
  #scan(): Promise<void> {
    this.#scanChain = this.#scanChain.then(
      () => this.#scanOnce(),
    ).catch((err: unknown) => this.#o.progress.log(`warning: cannot read the spool ${this.#o.spool}: ${messageOf(err)}`));
    return this.#scanChain;
  }

  async #scanOnce(): Promise<void> {
    const { spool, progress } = this.#o;
    let added = 0;
    for (const name of await listJobs(spool)) {
      if (this.#jobs.has(name) || this.#badJobs.has(name)) continue;
      let paths: string[] | null;
      try {
        paths = await readJob(spool, name);
      } catch (err) {
        this.#badJobs.add(name);
        if (err instanceof SpoolError) {
          const where = await moveToFailed(spool, name).catch(() => `${spool}/${name}`);
          progress.log(`warning: set aside the malformed job ${where}: ${err.message}`);
        } else {
          progress.log(`warning: cannot read the job ${spool}/${name}: ${messageOf(err)}`);
        }
        continue;
      }
      if (paths === null) continue;
      if (paths.length === 0) {
        await removeJob(spool, name);
        continue;
      }
      this.#jobs.set(name, new Set(paths));
      for (const p of paths) {
        if (!this.#pending.has(p)) added++;
        this.#pending.add(p);
      }
    }
    if (added > 0) {
      progress.detail(`${plural(added, "path")} queued from the spool`);
      this.#arrived();
    }
  }

  // --- pushing ------------------------------------------------------------------------

  async #pushOnce(): Promise<Attempt> {
    const { pusher, progress } = this.#o;
    const batch = [...this.#pending].slice(0, MAX_BATCH_PATHS);
    this.#waitingSince = this.#pending.size > batch.length ? Date.now() : undefined;
    let outcome;
    try {
      outcome = await pusher.push(batch);
    } catch (err) {
      if (!(err instanceof UploaderError)) throw err;
      const waitingFor = cacheTrouble(err);
      if (waitingFor) return { ok: false, waitingFor };
      // Nix failed, or a path went away between the checks: count it against the batch.
      await this.#countFailures(batch.map((path) => ({ path, error: err.message })));
      return { ok: false, waitingFor: `a new attempt after: ${err.message}` };
    }
    for (const path of outcome.invalid) {
      progress.log(`dropped ${path}: not valid in the store (a failed build, or garbage-collected)`);
      await this.#complete(path);
    }
    for (const path of outcome.done) await this.#complete(path);
    if (outcome.fatal) return { ok: false, waitingFor: cacheTrouble(outcome.fatal)! };
    if (outcome.failed.length === 0) return { ok: true };
    // Paths failed: the cache going away mid-push is waited out; anything else counts.
    const down = await pusher.probe();
    if (down) return { ok: false, waitingFor: `the cache to answer (${down})` };
    await this.#countFailures(outcome.failed);
    const stillFailing = outcome.failed.filter((f) => this.#pending.has(f.path)).length;
    return stillFailing === 0 ? { ok: true } : { ok: false, waitingFor: `a new attempt at ${plural(stillFailing, "failed path")}` };
  }

  async #countFailures(failures: ReadonlyArray<{ path: string; error: string }>): Promise<void> {
    const givenUp: Array<{ path: string; error: string }> = [];
    for (const f of failures) {
      const n = (this.#attempts.get(f.path) ?? 0) + 1;
      this.#attempts.set(f.path, n);
      if (n >= MAX_PATH_ATTEMPTS) givenUp.push(f);
    }
    if (givenUp.length === 0) return;
    const { spool, progress } = this.#o;
    let where: string;
    try {
      where = await writeFailedJob(spool, givenUp.map((f) => f.path));
    } catch (err) {
      where = `nowhere (${messageOf(err)})`;
    }
    for (const f of givenUp) {
      progress.log(`gave up on ${f.path} after ${MAX_PATH_ATTEMPTS} attempts: ${f.error}`);
      await this.#complete(f.path);
    }
    progress.log(`listed in ${where}: move that file back into ${spool} to try again`);
  }

  /** The path is dealt with: it leaves the queue, and jobs left empty leave the spool. */
  async #complete(path: string): Promise<void> {
    this.#pending.delete(path);
    this.#attempts.delete(path);
    for (const [name, paths] of this.#jobs) {
      if (paths.delete(path) && paths.size === 0) {
        this.#jobs.delete(name);
        await removeJob(this.#o.spool, name);
      }
    }
  }
}

/** The next delay's upper bound: RETRY_FIRST_MS, then doubled each time, up to RETRY_MAX_MS. */
export function nextCeiling(previous: number): number {
  return previous === 0 ? RETRY_FIRST_MS : Math.min(RETRY_MAX_MS, previous * 2);
}

/** A delay under `ceiling`, half fixed and half random, so watchers restarted together spread out. */
function jitter(ceiling: number): number {
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
