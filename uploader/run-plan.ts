// Carrying out a push plan: upload paths with bounded parallelism, narinfos in reference
// order, and account for every path of the closure in one summary.
//
// Up to `jobs` large paths are in progress at once, and besides them more small ones
// (scheduleUploads): a small path costs two round trips and little CPU, so a real
// network's latency, not the cores, bounds how fast they go, and it should not wait for a
// large NAR's compression, nor a large NAR for a queue of small paths. NARs (the expensive
// part: reading, hashing, compressing, sending) proceed in parallel; each narinfo waits
// until the narinfos of its references are in the cache. A path starts only after the
// paths it references have started, so it only ever waits for paths in flight, and the
// pool cannot deadlock.
//
// A path that fails is reported and the rest continue; paths that depend on it get no
// narinfo (they are "blocked"), which keeps the cache's invariant that a narinfo's
// references are all there. A rejected token stops the push: every later request would
// fail the same way.
import { rm } from "node:fs/promises";
import { AuthError, messageOf } from "./errors.ts";
import type { PushPlan } from "./plan.ts";
import { summarise, type PathReport, type Progress, type PushSummary } from "./progress.ts";
import type { StorePathInfo } from "./store.ts";
import { MULTIPART_CONCURRENCY } from "./multipart.ts";
import { narInfoFor, prepareAndUploadNar, prepareNar, uploadNar, type PreparedNar, type UploadSettings } from "./path-upload.ts";

/**
 * Large paths in progress at once by default: enough to keep 2-4 cores and the network
 * busy (besides them, SMALL_PER_JOB times as many small ones: see scheduleUploads).
 */
export const DEFAULT_JOBS = 4;

export interface PushSettings extends UploadSettings {
  jobs: number;
  progress: Progress;
  /**
   * How a path's NAR file and narinfo are made; by default from the local store
   * (prepareNar, narInfoFor). `uploader import` makes them from another cache or an
   * export stream and shares everything else: order, parallelism, uploads, reports.
   */
  transfer?: PathTransfer | undefined;
}

export interface PathTransfer {
  /** The path's compressed NAR in a temp file (in settings.tmpDir), checked (a throw fails the path). */
  prepare(info: StorePathInfo, settings: UploadSettings): Promise<PreparedNar>;
  /** The narinfo to publish once the NAR is in the cache. */
  narInfo(info: StorePathInfo, prepared: PreparedNar, settings: UploadSettings): Promise<string>;
}

export interface PushOutcome {
  summary: PushSummary;
  /** Set when the push stopped early (rejected token): the CLI reports it after the summary. */
  fatal?: AuthError;
}

export async function executePlan(plan: PushPlan, settings: PushSettings): Promise<PushOutcome> {
  const started = performance.now();
  const { progress } = settings;
  const reports: PathReport[] = [];
  const report = (r: PathReport): void => {
    reports.push(r);
    progress.finished(r);
  };
  for (const info of plan.alreadyCached) report({ path: info.path, outcome: "cached", narSize: info.narSize });
  for (const info of plan.skippedUpstream) report({ path: info.path, outcome: "upstream", narSize: info.narSize });
  for (const r of plan.rejected ?? []) report(r);

  // One settled flag per path to upload: true once its narinfo is in the cache.
  const committed = new Map<string, Deferred<boolean>>(plan.toUpload.map((p) => [p.path, deferred<boolean>()]));
  const failed = new Set<string>();
  let fatal: AuthError | undefined;

  const uploadOne = async (info: StorePathInfo): Promise<PathReport> => {
    const refs = info.references.filter((r) => r !== info.path && committed.has(r));
    if (fatal) return { path: info.path, outcome: "blocked", narSize: info.narSize, error: `push stopped: ${fatal.message}` };
    const failedRef = refs.find((r) => failed.has(r));
    if (failedRef) return blocked(info, failedRef);
    progress.started(info.path);
    try {
      // A large NAR from the store goes in parts while it is compressed; anything else is
      // prepared into its temp file, then uploaded.
      const streamed = settings.transfer ? null : await prepareAndUploadNar(info, settings);
      const prepared = streamed?.prepared ?? (settings.transfer ? await settings.transfer.prepare(info, settings) : await prepareNar(info, settings));
      let sentBytes: number;
      try {
        sentBytes = streamed ? streamed.sentBytes : await uploadNar(prepared, settings);
      } finally {
        await rm(prepared.file, { force: true });
      }
      const text = settings.transfer ? await settings.transfer.narInfo(info, prepared, settings) : await narInfoFor(info, prepared, settings);
      const outcomes = await Promise.all(refs.map((r) => committed.get(r)!.promise));
      const missingRef = refs.find((_, i) => !outcomes[i]);
      if (missingRef) return blocked(info, missingRef);
      await settings.cache.putNarInfo(info.hashPart, text);
      return { path: info.path, outcome: "uploaded", narSize: prepared.narSize, fileSize: prepared.fileSize, sentBytes };
    } catch (err) {
      if (err instanceof AuthError) fatal ??= err;
      return { path: info.path, outcome: "failed", narSize: info.narSize, error: messageOf(err) };
    }
  };

  progress.begin(plan.toUpload.length, plan.toUpload.reduce((n, p) => n + p.narSize, 0));
  await scheduleUploads(plan.toUpload, Math.max(1, settings.jobs), async (info) => {
    const r = await uploadOne(info);
    if (r.outcome !== "uploaded") failed.add(info.path);
    committed.get(info.path)!.resolve(r.outcome === "uploaded");
    report(r);
  });

  const summary = summarise(reports, (performance.now() - started) / 1000);
  progress.end(summary);
  return fatal ? { summary, fatal } : { summary };
}

/**
 * Paths smaller than this are bound by round trips (two requests each, little CPU), not
 * by compression or bandwidth: many of them may be in flight besides the large ones.
 */
export const SMALL_PATH_BYTES = 1024 * 1024;
/** Small paths in flight per -j: at a 30 ms round trip, 16 keep ~250 small paths/s going. */
export const SMALL_PER_JOB = 4;

/**
 * Connections a push keeps open for `jobs`: one per path in flight (large and small), the
 * parts of a large NAR, and one for planning. More requests than this wait for a socket.
 */
export function socketsFor(jobs: number): number {
  return jobs * (1 + SMALL_PER_JOB) + MULTIPART_CONCURRENCY + 1;
}

/**
 * Runs `fn` over `paths` (references first) with at most `jobs` large paths and, besides
 * them, `jobs × SMALL_PER_JOB` small ones in flight: the two kinds have their own slots,
 * so large NARs are compressed and sent while small paths make their round trips,
 * instead of one kind queuing behind the other (a large path listed after many small ones
 * starts at once, not when the small ones are done). A path starts only once every path
 * it references has started (paths already in the cache are not in the list), so a path
 * only ever waits for paths in flight and the pool cannot deadlock; a path whose turn has
 * come but whose kind is full lets the next ones of the other kind go first.
 */
export function scheduleUploads(paths: readonly StorePathInfo[], jobs: number, fn: (info: StorePathInfo) => Promise<void>): Promise<void> {
  const listed = new Set(paths.map((p) => p.path));
  const started = new Set<string>();
  const pending = [...paths];
  const maxSmall = jobs * SMALL_PER_JOB;
  let large = 0;
  let small = 0;
  return new Promise((resolve, reject) => {
    const pump = (): void => {
      for (let i = 0; i < pending.length && (large < jobs || small < maxSmall); ) {
        const info = pending[i]!;
        const isLarge = info.narSize >= SMALL_PATH_BYTES;
        const ready = info.references.every((r) => r === info.path || !listed.has(r) || started.has(r));
        if (!ready || (isLarge ? large >= jobs : small >= maxSmall)) {
          i++;
          continue;
        }
        pending.splice(i, 1);
        started.add(info.path);
        if (isLarge) large++;
        else small++;
        fn(info).then(
          () => {
            if (isLarge) large--;
            else small--;
            if (pending.length === 0 && large + small === 0) resolve();
            else pump();
          },
          reject,
        );
      }
    };
    if (pending.length === 0) resolve();
    else pump();
  });
}

function blocked(info: StorePathInfo, dependency: string): PathReport {
  return { path: info.path, outcome: "blocked", narSize: info.narSize, error: `dependency ${dependency} was not uploaded` };
}


interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
}

function deferred<T>(): Deferred<T> {
  // Not Promise.withResolvers: the installed uploader also runs on Node 20, which lacks it.
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
