// What a garbage collection batch is given and what it answers (gc/collector.ts runGcBatch):
// the context (bindings, settings, clock, smaller limits for tests), the caller's request,
// and the progress it reports to the cron trigger, `POST /_api/v1/gc` and `uploader gc`.

import type { GcResult, RunState, RunTotals, Trigger } from "./run-state.ts";
import type { GcSettings } from "./settings.ts";
import type { CacheStats } from "./stats.ts";

export interface GcContext {
  bucket: R2Bucket;
  /** The D1 index of published paths: push times are read from it, rows removed from it. */
  db: D1Database;
  settings: GcSettings;
  /** The time (ms); the scheduled handler and the route pass Date.now. */
  clock: () => number;
  /** Smaller batches than the free plan allows (tests interrupt collections with them). */
  limits?: { operations?: number; entries?: number; queries?: number };
}

export interface GcRequest {
  dryRun: boolean;
  trigger: Trigger;
  /** Start a run with this cutoff (ms): paths last pushed before it are old. */
  cutoff?: number;
  /** Continue this run only (a caller that started one and loops until it is done). */
  runId?: string;
  /** Abandon a run in progress (only before its fence is up) and start a new one. */
  restart?: boolean;
  /** The cron trigger: start a run only when GC_INTERVAL_HOURS have passed since the last. */
  onlyIfDue?: boolean;
}

/** A path the collection deletes (or would, in a dry run). */
export interface FoundPath {
  hash: string;
  /** The store path's name, when the narinfo recorded it. */
  name: string | null;
  fileSize: number | null;
}

/** A NAR (or orphaned listing) the collection deletes (or would). */
export interface FoundFile {
  key: string;
  size: number;
}

/** What a batch found to delete. */
export interface Found {
  paths: FoundPath[];
  files: FoundFile[];
}

/** The part of a run's state its progress shows. */
export type RunInfo = Pick<RunState, "id" | "dryRun" | "trigger" | "startedAt" | "cutoff" | "phase" | "pass">;

export interface GcProgress {
  /**
   * idle: nothing to do (no run, none due); running: call again; waiting: call again after
   * waitMs; busy: another batch holds the state, call again shortly; done: the run ended.
   */
  status: "idle" | "running" | "waiting" | "busy" | "done";
  run: RunInfo | null;
  waitMs: number;
  /** What this batch cost. */
  batch: { operations: number; entries: number };
  totals: RunTotals;
  /** Garbage found in this batch (dry runs: what would go). */
  found: Found;
  /** When a real run ended: what it did, and the statistics it wrote. */
  result?: GcResult;
  stats?: CacheStats;
}

export function runInfo(run: RunState): RunInfo {
  return { id: run.id, dryRun: run.dryRun, trigger: run.trigger, startedAt: run.startedAt, cutoff: run.cutoff, phase: run.phase, pass: run.pass };
}
