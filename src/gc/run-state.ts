// The collector's state document (the D1 rows `state` and `dry-run`,
// storage/gc-documents.ts): the collection in progress, carried from one bounded batch to
// the next, and what the last one did.
//
// Everything a batch needs to resume is here or in the run's working objects it names by
// generation (`_gc/runs/<id>/<kind>-<gen>` in R2): a batch reads the state, takes a lease by
// a conditional write (on the version it read), works, writes new objects under a new
// generation and commits the state with another conditional write. A batch that loses
// either write has changed nothing the next batch will read.

// What a finished collection did and the documents it could not read are also the GC API's
// answer and the statistics' last collection: their types are the shared contract
// (src/api/gc.ts), named here too for the collector's modules.
import type { GcResult, UnreadableDocument } from "../api/gc.ts";

export type { GcResult, UnreadableDocument };

export type Phase = "mark" | "nars" | "compact" | "announce" | "wait" | "delete" | "finish";

export type Trigger = "cron" | "manual";

/** Counters of a run; `paths`…`pathsWithoutSizes` are for the statistics. */
export interface RunTotals {
  /** Narinfos listed (both looks). */
  listed: number;
  /** Paths whose references were followed. */
  expanded: number;
  /** Queued paths (references listed before them, or without metadata) followed through the index. */
  indexLookups: number;
  /** Queued narinfos the index had no row for, read from R2 one by one. */
  lookups: number;
  /** Old, unreferenced paths found by the first look. */
  garbagePaths: number;
  /** Σ FileSize of those (as far as known). */
  garbagePathBytes: number;
  /** Unreferenced NARs past the grace period, and their bytes. */
  garbageNars: number;
  garbageNarBytes: number;
  /** Listings (`.ls`) whose narinfo is gone. */
  orphanListings: number;
  /** Fenced paths kept after all, because a push during the collection used them. */
  rescued: number;
  deletedPaths: number;
  deletedNars: number;
  freedBytes: number;
  /** Counted during the last look: narinfos, Σ(NarSize − FileSize), paths without sizes. */
  paths: number;
  savedBytes: number;
  pathsWithoutSizes: number;
  /** NAR files and bytes in the bucket. */
  narFiles: number;
  narBytes: number;
  /** Documents the run needed and could not read: while > 0 it deletes no narinfo or NAR. */
  unreadable: number;
}

export interface PendingListing {
  key: string;
  size: number;
  uploaded: number;
}

export interface RunState {
  id: string;
  dryRun: boolean;
  trigger: Trigger;
  startedAt: number;
  /** Paths last pushed before this (ms) are old. */
  cutoff: number;
  /** Unreferenced NARs uploaded before this (ms) may go. */
  narCutoff: number;
  /** The fence wait (ms), fixed when the run starts. */
  windowMs: number;
  /** Generation of the last committed batch; working objects are named by it. */
  gen: number;
  phase: Phase;
  /** 1: the first look (mark); 2: the look after the fence wait. */
  pass: 1 | 2;
  /** The current listing's R2 cursor (null: from the start). */
  cursor: string | null;
  /** Hash part of the last narinfo of the current listing processed ("" before the first). */
  position: string;
  /** The current listing is complete. */
  listed: boolean;
  /** Pins have been read for the current look. */
  rootsLoaded: boolean;
  /**
   * Concatenated hash parts of live paths whose references still have to be read. This
   * and the two queues below are kept in the mark sets' object (gc/mark-sets.ts) once the
   * run has one (`marks`), and written here empty: they can grow with the bucket.
   */
  queue: string;
  /**
   * Of those, the ones the index has no row for (a narinfo stored without FileSize, or not
   * adopted yet): read from R2 one by one.
   */
  unindexed: string;
  /** Concatenated hash parts of listed narinfos the index has no row for, to look at in R2. */
  unlisted: string;
  /** A listing seen whose narinfo may follow in the next page. */
  pendingListing: PendingListing | null;
  /**
   * Slot of the mark sets' object (`marks-<slot>`, gc/mark-sets.ts), 0 or 1, null before
   * any: a batch writes the other slot, so the one the state names is never overwritten.
   */
  marks: 0 | 1 | null;
  /**
   * Generation of the mark sets of a run an earlier version started (`live-<gen>`,
   * `nars-<gen>`); null once `marks` names them.
   */
  sets: number | null;
  /** Names of the chunk objects: candidates (first look), garbage, NARs and listings. */
  candidates: string[];
  garbage: string[];
  narCandidates: string[];
  /** Next chunk to compact, announce or delete. */
  index: number;
  /** The fence built so far by the announce phase (a working object), or null. */
  draft: string | null;
  /** Batches of this run are 1/2^shrink of the full size (a batch failed to finish). */
  shrink: number;
  /** When the fence was written (ms). */
  announcedAt: number | null;
  /**
   * When the delete phase found every fenced narinfo deleted (ms); the NARs go a
   * narinfo's max-age later. Absent before then (and in runs of earlier versions).
   */
  narinfosGoneAt?: number;
  /** The first unreadable documents (totals.unreadable counts them all). */
  unreadable: UnreadableDocument[];
  totals: RunTotals;
}

export interface GcState {
  run: RunState | null;
  /** A batch holds the state until this time (ms); others answer "busy". */
  leaseUntil: number | null;
  /** Start of the last run (the cron trigger starts one per interval). */
  lastStartedAt: number | null;
  /** Narinfos the last run counted: sizes the next run's mark sets. */
  lastPaths: number;
  /** What the last finished run did. */
  last: GcResult | null;
}

/**
 * Where the state's lease and run are in its JSON text: a batch that continues a run takes
 * the lease in the query that reads the state (storage/gc-documents.ts readClaiming).
 */
export const LEASE_FIELDS = { until: "$.leaseUntil", work: "$.run" } as const;

export function emptyTotals(): RunTotals {
  return {
    listed: 0,
    expanded: 0,
    indexLookups: 0,
    lookups: 0,
    garbagePaths: 0,
    garbagePathBytes: 0,
    garbageNars: 0,
    garbageNarBytes: 0,
    orphanListings: 0,
    rescued: 0,
    deletedPaths: 0,
    deletedNars: 0,
    freedBytes: 0,
    paths: 0,
    savedBytes: 0,
    pathsWithoutSizes: 0,
    narFiles: 0,
    narBytes: 0,
    unreadable: 0,
  };
}

export function emptyState(): GcState {
  return { run: null, leaseUntil: null, lastStartedAt: null, lastPaths: 0, last: null };
}

export function formatState(state: GcState): string {
  return JSON.stringify(state);
}

/**
 * The state in `text`. The document is only ever written by the collector; one that does
 * not parse (a bug, a manual edit) is logged and replaced by an empty state, which at worst
 * restarts a collection: nothing is deleted without a complete run behind it.
 */
export function parseState(text: string | null): GcState {
  if (text === null) return emptyState();
  try {
    const doc = JSON.parse(text) as GcState;
    if (typeof doc !== "object" || doc === null || !("run" in doc)) throw new Error("no run field");
    // A run started by an earlier version of the collector lacks the fields added since.
    if (doc.run !== null) {
      doc.run.unreadable ??= [];
      doc.run.unindexed ??= "";
      doc.run.unlisted ??= "";
      doc.run.marks ??= null;
      doc.run.totals = { ...emptyTotals(), ...doc.run.totals };
    }
    return { ...emptyState(), ...doc };
  } catch (err) {
    console.error("the GC state document is damaged; starting over", err);
    return emptyState();
  }
}
