// Cache statistics: counted by each garbage collection while it lists the bucket anyway, and
// kept in one small document, so `GET /_api/v1/stats` and the landing page cost one R2 read
// instead of a listing of the whole bucket. They are as of the last collection.

import { getTextObject, STATE_KEY, STATS_KEY } from "../storage/gc-store.ts";
import { parseState } from "./run-state.ts";

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

export interface CacheStats {
  /** When these numbers were counted (the end of the last collection), ms. */
  countedAt: number;
  /** Narinfos (store paths) in the cache. */
  paths: number;
  /** NAR files and their bytes: what the bucket stores. */
  narFiles: number;
  narBytes: number;
  /** Σ (NarSize − FileSize) over the paths: what compression saves. */
  savedBytes: number;
  /** Paths whose sizes are unknown (stored before the Worker recorded them). */
  pathsWithoutSizes: number;
  lastGc: GcResult | null;
}

export function formatStats(stats: CacheStats): string {
  return JSON.stringify(stats);
}

function count(value: unknown): number | null {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

/** The statistics in `text`, or null when they are missing or damaged. */
export function parseStats(text: string): CacheStats | null {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (typeof doc !== "object" || doc === null) return null;
  const fields = ["countedAt", "paths", "narFiles", "narBytes", "savedBytes", "pathsWithoutSizes"] as const;
  if (!fields.every((f) => count(doc[f]) !== null)) return null;
  const last = doc.lastGc as GcResult | null | undefined;
  return {
    countedAt: doc.countedAt as number,
    paths: doc.paths as number,
    narFiles: doc.narFiles as number,
    narBytes: doc.narBytes as number,
    savedBytes: doc.savedBytes as number,
    pathsWithoutSizes: doc.pathsWithoutSizes as number,
    lastGc: last && typeof last === "object" && typeof last.finishedAt === "number" ? last : null,
  };
}

/** What the stats endpoint and the landing page show: the counts and any collection running. */
export interface StatsView {
  stats: CacheStats | null;
  /** The collection in progress, if any. */
  running: { id: string; startedAt: number; phase: string } | null;
}

/** Reads the statistics and the collector's state (two R2 reads). */
export async function loadStatsView(bucket: R2Bucket): Promise<StatsView> {
  const [stats, state] = await Promise.all([getTextObject(bucket, STATS_KEY), getTextObject(bucket, STATE_KEY)]);
  const run = parseState(state?.text ?? null).run;
  return {
    stats: stats === null ? null : parseStats(stats.text),
    running: run === null ? null : { id: run.id, startedAt: run.startedAt, phase: run.phase },
  };
}
