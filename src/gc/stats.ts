// Cache statistics, from two sources:
//   - the D1 index (storage/path-index.ts): how many paths the cache holds and their sizes,
//     current, from any request. Counting reads every row of the index, and D1 bills rows
//     read (the free plan: 5,000,000 a day) while the statistics are public, so a count is
//     kept in a small R2 document and reused until the cache can afford the next one
//     (STATS_ROWS_PER_DAY); a collection that deleted paths drops it.
//   - each garbage collection, which counts what only a listing of the bucket shows (NAR
//     files and their bytes) and records what it did, in one small document: as of the last
//     collection.
// `GET /_api/v1/stats` and the landing page read both: a few R2 reads, and a D1 count now
// and then, instead of a listing of the whole bucket.

import { getTextObject, INDEX_STATS_KEY, putGcObject, STATE_KEY, STATS_KEY } from "../storage/gc-store.ts";
import { indexComplete, indexStats } from "../storage/path-index.ts";
import { parseState } from "./run-state.ts";

const DAY_MS = 24 * 3600 * 1000;

/**
 * D1 rows the statistics may read a day, whatever the traffic: a fifth of the free plan's
 * 5,000,000. A count of N paths reads N rows, so it is reused for N × 86.4 ms: a cache of
 * 1,000 paths is recounted at most every 86 s, one of 20,000 every 29 minutes, an empty
 * one on every request.
 */
export const STATS_ROWS_PER_DAY = 1_000_000;

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

/** What the index held when it was last counted (`_gc/index-stats.json`). */
export interface IndexCounts {
  /** When, ms. */
  countedAt: number;
  /** Indexed store paths. */
  paths: number;
  /** Σ FileSize and Σ NarSize over them (a NAR file two paths share counts twice). */
  fileBytes: number;
  narBytes: number;
  /** Whether every narinfo of the bucket was indexed (false while adoption is under way). */
  complete: boolean;
}

/** How long a count of the index is reused: until counting again fits STATS_ROWS_PER_DAY. */
export function indexCountLifetime(paths: number): number {
  return (paths * DAY_MS) / STATS_ROWS_PER_DAY;
}

function parseIndexCounts(text: string): IndexCounts | null {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (typeof doc !== "object" || doc === null) return null;
  const fields = ["countedAt", "paths", "fileBytes", "narBytes"] as const;
  if (!fields.every((f) => count(doc[f]) !== null) || typeof doc.complete !== "boolean") return null;
  return { countedAt: doc.countedAt as number, paths: doc.paths as number, fileBytes: doc.fileBytes as number, narBytes: doc.narBytes as number, complete: doc.complete };
}

/**
 * The index's counts: the kept ones while they are fresh enough, else counted again (two
 * D1 queries) and kept. When the index cannot be read, the last counts however old, or null.
 */
async function loadIndexCounts(bucket: R2Bucket, db: D1Database, kept: { text: string } | null, now: number): Promise<IndexCounts | null> {
  const last = kept === null ? null : parseIndexCounts(kept.text);
  if (last !== null && now >= last.countedAt && now < last.countedAt + indexCountLifetime(last.paths)) return last;
  let counts: IndexCounts;
  try {
    const [stats, complete] = await Promise.all([indexStats(db), indexComplete(db)]);
    counts = { countedAt: now, paths: stats.paths, fileBytes: stats.fileBytes, narBytes: stats.narBytes, complete };
  } catch (err) {
    console.error("statistics: the D1 index cannot be counted; showing its last count", err);
    return last;
  }
  // Several requests may count at once when the counts expire; the last write wins, and
  // each counted the same index.
  await putGcObject(bucket, INDEX_STATS_KEY, JSON.stringify(counts));
  return counts;
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
  /** As of the last collection; null before the first. */
  stats: CacheStats | null;
  /**
   * The index's paths and sizes (recent: see STATS_ROWS_PER_DAY); null when the caller
   * passed no index or it cannot be read.
   */
  index: IndexCounts | null;
  /** The collection in progress, if any. */
  running: { id: string; startedAt: number; phase: string } | null;
}

/**
 * Reads the collection's statistics and state (two R2 reads) and, given the index, its
 * kept counts (a third, in parallel; counted again in D1 and written back when expired).
 */
export async function loadStatsView(bucket: R2Bucket, db?: D1Database, now: number = Date.now()): Promise<StatsView> {
  const [stats, state, kept] = await Promise.all([
    getTextObject(bucket, STATS_KEY),
    getTextObject(bucket, STATE_KEY),
    db === undefined ? Promise.resolve(null) : getTextObject(bucket, INDEX_STATS_KEY),
  ]);
  const run = parseState(state?.text ?? null).run;
  return {
    stats: stats === null ? null : parseStats(stats.text),
    index: db === undefined ? null : await loadIndexCounts(bucket, db, kept, now),
    running: run === null ? null : { id: run.id, startedAt: run.startedAt, phase: run.phase },
  };
}
