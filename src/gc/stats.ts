// Cache statistics, from two sources:
//   - the D1 index (storage/path-index.ts): how many paths the cache holds and their sizes,
//     current, from any request. Counting reads every row of the index, and D1 bills rows
//     read (the free plan: 5,000,000 a day) while the statistics are public, so a count is
//     kept in a small document (`index-stats`, storage/gc-documents.ts) and reused until the
//     cache can afford the next one (STATS_ROWS_PER_DAY); a collection that deleted paths
//     drops it.
//   - each garbage collection, which counts what only a listing of the bucket shows (NAR
//     files and their bytes) and records what it did, in one small document (`stats`): as of
//     the last collection.
// `GET /_api/v1/stats` and the landing page read both and the collection's state in one D1
// query, and count the index now and then, instead of listing the whole bucket.

import { parseJsonObject } from "../json-document.ts";
import { readGcDocuments, writeGcDocument, type GcDocument } from "../storage/gc-documents.ts";
import { indexComplete, indexStats } from "../storage/path-index.ts";
import { parseState, type GcResult } from "./run-state.ts";

const DAY_MS = 24 * 3600 * 1000;

/**
 * D1 rows the statistics may read a day, whatever the traffic: a fifth of the free plan's
 * 5,000,000. A count of N paths reads N rows, so it is reused for N × 86.4 ms: a cache of
 * 1,000 paths is recounted at most every 86 s, one of 20,000 every 29 minutes, an empty
 * one on every request.
 */
export const STATS_ROWS_PER_DAY = 1_000_000;

/** What the index held when it was last counted (the `index-stats` document). */
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
  const doc = countsDocument(text, ["countedAt", "paths", "fileBytes", "narBytes"]);
  if (doc === null || typeof doc.complete !== "boolean") return null;
  return { countedAt: doc.countedAt as number, paths: doc.paths as number, fileBytes: doc.fileBytes as number, narBytes: doc.narBytes as number, complete: doc.complete };
}

/**
 * The index's counts: the kept ones while they are fresh enough, else counted again (two
 * D1 queries) and kept. When the index cannot be read, the last counts however old, or null.
 */
async function loadIndexCounts(db: D1Database, kept: GcDocument | null, now: number): Promise<IndexCounts | null> {
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
  // each counted the same index. A failed write only means counting again next time.
  try {
    await writeGcDocument(db, "index-stats", JSON.stringify(counts));
  } catch (err) {
    console.error("statistics: the index's count cannot be kept", err);
  }
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

/** The JSON object in `text` when each of `fields` is a count; null when it does not parse or one is not. */
function countsDocument(text: string, fields: readonly string[]): Record<string, unknown> | null {
  const doc = parseJsonObject(text);
  return doc !== null && fields.every((f) => count(doc[f]) !== null) ? doc : null;
}

/** The statistics in `text`, or null when they are missing or damaged. */
export function parseStats(text: string): CacheStats | null {
  const doc = countsDocument(text, ["countedAt", "paths", "narFiles", "narBytes", "savedBytes", "pathsWithoutSizes"]);
  if (doc === null) return null;
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
  /** The index's paths and sizes (recent: see STATS_ROWS_PER_DAY); null when D1 cannot be read. */
  index: IndexCounts | null;
  /** The collection in progress, if any. */
  running: { id: string; startedAt: number; phase: string } | null;
}

/**
 * Reads the collection's statistics, its state and the index's kept counts (one D1 query),
 * and counts the index again when those expired. When D1 cannot be read, there is nothing
 * to show, and the view says so rather than failing the landing page.
 */
export async function loadStatsView(db: D1Database, now: number = Date.now()): Promise<StatsView> {
  let docs: Map<string, GcDocument>;
  try {
    docs = await readGcDocuments(db, ["stats", "state", "index-stats"]);
  } catch (err) {
    console.error("statistics: D1 cannot be read", err);
    return { stats: null, index: null, running: null };
  }
  const stats = docs.get("stats");
  const run = parseState(docs.get("state")?.text ?? null).run;
  return {
    stats: stats === undefined ? null : parseStats(stats.text),
    index: await loadIndexCounts(db, docs.get("index-stats") ?? null, now),
    running: run === null ? null : { id: run.id, startedAt: run.startedAt, phase: run.phase },
  };
}
