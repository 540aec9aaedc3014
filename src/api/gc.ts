// The wire contract of `POST /_api/v1/gc`: one batch of garbage collection, for
// `uploader gc` (ADMIN_TOKEN). The Worker's route (src/routes/gc.ts) answers with these
// types, the uploader (uploader/cache-admin.ts, uploader/commands/gc.ts) reads them.
//
//   request   {"dryRun"?: bool, "olderThanSeconds"?: n | "before"?: ms since epoch,
//              "runId"?: id, "restart"?: bool}                         all optional
//   response  the batch's progress, garbage paths given as store paths (GcBatchAnswer)
//
// The collection's result (GcResult) is also what `GET /_api/v1/stats` reports as the last
// collection (src/gc/stats.ts keeps it).

/** The path below the cache's URL (relative: caches may live under a prefix). */
export const GC_PATH = "_api/v1/gc";

export interface GcBatchRequest {
  /** Find what would go, delete nothing. */
  dryRun?: boolean;
  /** Start a collection of the paths last pushed more than this long ago (else GC_RETENTION_DAYS). */
  olderThanSeconds?: number;
  /** Or of those last pushed before this time (ms since the epoch). */
  before?: number;
  /** Continue this collection only (the caller loops until it is done). */
  runId?: string;
  /** Abandon the collection in progress (only before its fence is up) and start anew. */
  restart?: boolean;
}

/**
 * A document a collection needed and could not read: a narinfo it keeps whose body is
 * missing, too large or does not parse, or names no NAR of this cache; or the pins.
 */
export interface UnreadableDocument {
  /** The R2 key (`<hash>.narinfo`, `_gc/pins.json`). */
  key: string;
  /** The store path, when the metadata or the body names it. */
  path: string | null;
  /** What is wrong, for the operator. */
  reason: string;
}

/** What one finished collection did. */
export interface GcResult {
  runId: string;
  trigger: "cron" | "manual";
  startedAt: number;
  finishedAt: number;
  /** Paths last pushed before this were old. */
  cutoff: number;
  deletedPaths: number;
  deletedNars: number;
  /** Bytes of the deleted NARs. */
  freedBytes: number;
  /**
   * How many documents it could not read. While there are any, a collection deletes no
   * narinfo and no NAR (retention fails safe): the operator deletes or re-pushes them.
   * Absent in results written before this was counted.
   */
  unreadableCount?: number;
  /** The first of them (gc/collector.ts MAX_REPORTED_UNREADABLE). */
  unreadable?: UnreadableDocument[];
}

/**
 * idle: nothing to do (no run, none due); running: call again; waiting: call again after
 * waitMs; busy: another batch holds the state, call again shortly; done: the run ended.
 */
export type GcStatus = "idle" | "running" | "waiting" | "busy" | "done";

/**
 * The run's counters the uploader reports (the collector keeps more: gc/run-state.ts
 * RunTotals, all of which the answer carries).
 */
export type GcCounter =
  | "listed"
  | "expanded"
  | "narFiles"
  | "narBytes"
  | "garbagePaths"
  | "garbageNars"
  | "garbageNarBytes"
  | "deletedPaths"
  | "deletedNars"
  | "unreadable";

/** One batch's answer (the collector's GcProgress with garbage paths as store paths). */
export interface GcBatchAnswer {
  status: GcStatus;
  /** The collection the batch worked on (or the one that ended last), if any. */
  run: { id: string; dryRun: boolean; trigger: "cron" | "manual"; startedAt: number; cutoff: number; phase: string; pass: number } | null;
  waitMs: number;
  /** What this batch cost. */
  batch: { operations: number; entries: number };
  totals: Record<GcCounter, number>;
  /** Garbage found in this batch (dry runs: what would go). */
  found: { paths: Array<{ path: string; fileSize: number | null }>; files: Array<{ key: string; size: number }> };
  /** When a real run ended: what it did, and the statistics it wrote. */
  result?: GcResult;
  stats?: { paths: number; narFiles: number; narBytes: number; savedBytes: number };
}
