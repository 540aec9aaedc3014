// Garbage collection in bounded batches: each call of `runGcBatch` does at most a free-plan
// invocation's worth of work (R2 operations, D1 queries and CPU) and leaves the collection's
// progress in D1 and R2 for the next call, from the cron trigger (src/index.ts) or
// `POST /_api/v1/gc`.
//
// What is kept: a path is *live* when it is young (last pushed at or after the run's cutoff,
// i.e. within GC_RETENTION_DAYS), pinned, or referenced by a live path. Anything pushed after
// the run started is young. A path's last push is the `pushed_at` of its row in the D1 index
// (storage/path-index.ts): set when it is published, moved by every push that finds it
// present, and never earlier than what its narinfo object records. A narinfo the index does
// not know (a crash between object and row, a bucket not yet adopted) was last pushed when
// its object's metadata says (`p`, else R2's upload time).
// Everything else is garbage: its narinfo (and `.ls`) goes; a NAR goes when no remaining
// narinfo points to it and it was uploaded before the grace period (GC_NAR_GRACE_HOURS), so
// an upload in progress never loses its NAR; a listing whose narinfo is gone goes after the
// same grace period. Logs, realisations and debuginfo links are never collected.
//
// A run, phase by phase:
//   mark      first look: list every narinfo, keys only (up to 1000 per operation), and ask
//             the index once per listed page for those paths' push times, names and sizes
//             (one D1 query per page, not per path); young and pinned paths are roots. A
//             live path is queued and followed through the index (references and NAR of up
//             to 200 paths per D1 query, ~1,000 references a batch): its references join the
//             live set, and those the listing has passed are queued too. A listed narinfo
//             the index does not know is looked at in R2 (HEAD: its metadata's push time and
//             sizes) and, if live, read (its metadata's references, else its body). So one
//             listing plus the queues completes the mark however deep the graph. Old paths
//             not (yet) live are written down as candidates.
//   nars      list `nar/`; a NAR no live narinfo points to and older than the grace period is
//             a candidate.
//   compact   candidates that became live later in the mark are dropped: the rest is garbage.
//   announce  write the fence (gc/fence.ts): the garbage paths and NARs.
//   wait      GC_UPLOAD_WINDOW_SECONDS, so every upload that read no fence has finished.
//   mark      second look (pass 2): the same listing again; whatever is live now (pushes and
//             refreshes during the run, new pins) keeps its references, fenced or not.
//   delete    fenced narinfos (with their `.ls`) that are still not live, then fenced NARs no
//             live narinfo points to, in bulk (1000 keys per operation); narinfos first.
//             The index rows of each chunk of narinfos are removed (one D1 query) before any
//             of their objects, so the index never has a row whose narinfo object is gone:
//             the missing query and reference checks trust it. A batch stopped in between
//             leaves objects without rows (harmless: they are fenced, so no upload can come
//             to depend on them, and the next batch deletes them). Between the narinfos
//             and the NARs (and the end of the run) lies a narinfo's max-age (5 minutes,
//             or GC_NAR_GRACE_HOURS if shorter): a client or CDN may serve a deleted
//             narinfo that long, and the NAR it names must still be there.
//   finish    take the fence down, write the statistics (and drop the index's kept counts,
//             gc/stats.ts, when paths went), remove the run's working objects.
//
// The concurrency rule (pushes go on during all of this): an upload reads the fence before
// anything else and refuses (422) to store a narinfo whose path, references or NAR are fenced;
// and it must have written within half the window of reading the fence (409 otherwise). So
// an upload either saw the fence and depends on nothing fenced, or it finished before the
// second look, which sees it (young) and keeps everything it references. Deletions happen
// only after the second look and only to fenced objects. Transiently, while a batch of
// deletions is under way, a garbage path may be served whose references are already gone; it
// is itself deleted moments later, and nothing new can come to depend on it (it is fenced).
//
// Fail safe: retention never breaks a kept closure, whatever the stored documents contain.
// The collector learns a live path's references and NAR from its index row; a path without
// one, from its metadata when that records both in their exact shapes (narinfo-meta.ts
// metaLinks), otherwise from its
// body. When it cannot read a narinfo it keeps (body too large, gone, not parseable, URL not
// `nar/<NAR file name>`), or a pins document from before the pins table lost pins, what it needs is
// unknown: it could be any path and any NAR. The run is then *blocked*: it goes on to the
// end, deletes no narinfo and no NAR (nothing is announced; if the document turns up in the
// second look, the fenced objects stay), and reports the documents (GcResult.unreadable) for
// the operator to delete or re-push. Orphaned listings still go: no document needs them.
// Only live paths are read, so a narinfo nothing keeps is deleted whether or not it could
// be read: its references matter only if it stays, and its NAR goes only when no kept
// narinfo names it, which is known exactly while every kept narinfo could be read. Objects
// whose keys are not exactly the layout's (a `nar/` name that is not a NAR name, a listing
// without a hash part) are never deleted.
//
// The index says which paths are young and what live paths reference. Neither answer can
// make a path garbage that its narinfo would keep: a row is written from the narinfo object
// at its key, after it, and that object never changes what it references or which NAR it
// names (narinfo-store.ts only merges signatures); its push time is the latest push, which
// the object's records can only trail; a narinfo without a row is looked at in R2; a row
// whose object is gone keeps more, never less; a row whose NAR file is not a NAR name blocks
// the run like an unreadable narinfo. When D1 cannot be reached the batch fails
// (storage_unavailable) before deleting anything, and the next batch redoes the step.
//
// Batches exclude each other with a lease in the state document (a D1 row, taken and
// released with writes conditional on its version; a batch that continues a run takes it in
// the query that reads the state); a batch works only while it holds its lease, so a batch
// that stalls cannot act on an outdated state once another has taken over. Working objects
// are named by the generation that wrote them, and the mark sets (with the queues: the
// marks object, gc/mark-sets.ts) are written to the one of two slots the state does not
// name, so a batch that loses its commit leaves nothing the next batch reads. A run's first
// batch only starts it (pins, the fence of a run that never finished, legacy documents).
// Dry runs keep their own state and never write outside their working objects.

import { mapConcurrent } from "../concurrency.ts";
import { fail } from "../errors.ts";
import { NixFormatError } from "../nix/errors.ts";
import { MAX_NARINFO_LENGTH, parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { HASH_PART_LENGTH, STORE_DIR } from "../nix/store-path.ts";
import {
  deleteKeys,
  FENCE_KEY,
  getBinaryObject,
  getTextObject,
  headKey,
  listPrefix,
  listPrefixKeys,
  listTopLevelKeys,
  MAX_DELETE_KEYS,
  PINS_KEY,
  putGcObject,
  runPrefix,
  type KeyPage,
} from "../storage/gc-store.ts";
import { ADOPTION_OPERATIONS, adoptLegacyDocuments, readClaiming, recordCollection, writeGcDocument, type GcDocumentName } from "../storage/gc-documents.ts";
import { NARINFO_MAX_AGE_SECONDS } from "../http/representation.ts";
import { listingKey, listingKeyHashPart, NAR_PREFIX, narInfoKey, narInfoKeyHashPart, parseNarFileName } from "../storage/keys.ts";
import { decodeNarInfoMeta, encodeNarInfoMeta, metaLinks, metaName, metaNumber, metaPushTime, type NarInfoLinks } from "../storage/narinfo-meta.ts";
import { getNarInfoObject, putNarInfoObject } from "../storage/narinfo-object.ts";
import { forgetPaths, linksOf, listedPaths, type ListedPath } from "../storage/path-index.ts";
import { pinRoots } from "../storage/pins.ts";
import {
  chunkLines,
  fileLineNarHash,
  formatChunk,
  formatDraft,
  formatFileLine,
  formatPathLine,
  parseDraft,
  parseFileLine,
  parsePathLine,
  pathLineHash,
} from "./chunk-lines.ts";
import { formatFence, NAR_FILE_HASH_LENGTH } from "./fence.ts";
import { KEY_ABSENT, KEY_MEMBER, KeySet } from "./key-set.ts";
import { formatMarkSets, parseMarkSets } from "./mark-sets.ts";
import { dropPacked, firstPacked, packedCount, sortedPacked } from "./packed-keys.ts";
import { runInfo, type Found, type GcContext, type GcProgress, type GcRequest } from "./progress.ts";
import {
  emptyTotals,
  formatState,
  LEASE_FIELDS,
  parseState,
  type GcResult,
  type GcState,
  type RunState,
  type UnreadableDocument,
} from "./run-state.ts";
import type { GcSettings } from "./settings.ts";
import { formatStats, type CacheStats } from "./stats.ts";

export type { GcContext, GcProgress, GcRequest } from "./progress.ts";

/**
 * R2 operations one batch may make. The free plan allows about 1000 calls to Cloudflare
 * services per invocation; this leaves room for the fixed costs counted separately below
 * and for a margin.
 */
export const BATCH_OPERATIONS = 800;
/** Operations kept back for the end of a batch: mark sets (1), commit (1), slack. */
const RESERVED_OPERATIONS = 12;
/**
 * D1 queries one batch may make: the free plan allows 50 per invocation (1000 on Paid).
 * A batch asks one per listed page and one per chunk of narinfos it deletes; a page holds
 * up to 1000 narinfos (fewer with metadata), so a batch of BATCH_ENTRIES needs a handful.
 * Besides these, a batch makes at most STATE_QUERIES for its state document, and ten
 * are kept back for whatever else the invocation does.
 */
export const BATCH_QUERIES = 36;
/**
 * D1 queries of a batch's state document: read (which takes the lease of a run in
 * progress), lease (a run's start) or the lease given back (a refused request), commit, and
 * the finished run's statistics.
 */
export const STATE_QUERIES = 4;
/**
 * CPU budget of one batch, in listing entries (a listed narinfo, a chunk line). The free
 * plan gives an invocation 10 ms of CPU. bench/gc-cpu.mjs measures the collector's own work
 * (R2 and D1 excluded) on 20,000 narinfos at a median of 2.3 ms per batch of 1000 entries,
 * 7 ms at worst (the first batches: JIT warm-up, mark set growth), on a shared 2-core VM.
 * Inside workerd (bench/worker-cpu.ts) a batch's fixed work is two D1 round trips (the
 * state read with the lease, the commit) and two R2 calls (the marks object read and
 * written), about 2-3 ms; what grows with the entries is the listed page (R2's objects,
 * the index's answer, the garbage they leave) or the references followed. At 500 entries
 * the listing batches cost 8-27 ms and the following 2-15 (mean 7-9 ms a batch, loads 1-4);
 * at 250 the listing batches cost 4-11 ms and most others 2-6 (mean under 6 at load 2.4),
 * for about 1.7 times the batches and the same D1 rows read. If a batch is stopped anyway,
 * the run halves its batches (shrink). A cron tick runs one batch: a collection of 20,000
 * narinfos (two looks over the bucket) takes some 200 ticks.
 */
export const BATCH_ENTRIES = 250;
/**
 * Entries a kind of step may take the first time it runs in an isolate. V8 compiles a
 * function on its first call and runs it unoptimised for a while: in a fresh isolate (a cron
 * tick often gets one) the first listing batch of 500 keys cost 19-27 ms where later ones
 * cost 2-7 (bench/worker-cpu.ts), so a batch that does a kind of step new to its isolate
 * stops at a quarter of a batch's entries; the batches after it, warm, do the rest.
 */
const COLD_STEP_ENTRIES = BATCH_ENTRIES / 4;
/** The kinds of step this isolate has run (module state: it lives as long as the isolate). */
const warmSteps = new Set<string>();

/**
 * What reading one queued narinfo costs, in entries: an R2 call of its own (a promise, an
 * object with its metadata decoded) instead of a share of a listing. bench/worker-cpu.ts
 * (V8's profiler inside workerd) found the runtime's side of each R2 call at about 0.1 ms,
 * the cost of some 30 listed entries: at 6, mark batches made ~166 HEADs and spent 20+ ms.
 * At 30 a batch makes at most BATCH_ENTRIES / 30 lookups (8), about 1 ms of calls.
 */
const LOOKUP_COST = 30;
/**
 * What a chunk costs beyond its lines, in entries: its R2 calls (a get, and a put or a
 * delete), as for LOOKUP_COST. Every batch of the first look leaves a chunk, often of a few
 * lines; without this a batch that compacts, announces or deletes read a dozen of them,
 * two dozen binding calls (bench/worker-cpu.ts), however few lines they held.
 */
const CHUNK_COST = 2 * LOOKUP_COST;
/**
 * What following one queued path through the index costs, in entries: its share of a D1
 * query and its row decoded (the references it adds are charged apart, REFS_PER_ENTRY).
 */
const INDEXED_LOOKUP_COST = 2;
/**
 * References followed from index rows that count as one entry: each is 32 characters of the
 * query's answer for the runtime to decode, then a set insert. bench/worker-cpu.ts saw a
 * batch that followed 27,000 references in one answer spend ~30 ms, so a batch of
 * BATCH_ENTRIES takes at most ~1,000.
 */
const REFS_PER_ENTRY = 4;
/**
 * Queued paths (all queues together) past which the mark follows them before it lists
 * on: each is 32 bytes of the marks object every mark batch reads and writes.
 */
const QUEUE_FLUSH = 1000;
/** Queued paths asked of the index in one query (the list is one JSON parameter). */
const INDEX_ROUND = 200;
/**
 * Bytes of narinfo body read from the queue that count as one entry. Reading and parsing a
 * body costs CPU in proportion to its size; a listed entry makes the runtime decode up to
 * 7 KiB of metadata, so one entry per 4 KiB of body errs on the side of shorter batches (a
 * 1 MiB narinfo counts as 256 entries, a quarter of a batch).
 */
const BODY_BYTES_PER_ENTRY = 4096;
/**
 * Unreadable documents a run lists by name (it counts them all). The state document is read
 * and written by every batch; 50 entries of a few hundred bytes keep it small, and whoever
 * has more than 50 damaged narinfos needs the list of the bucket, not of this report.
 */
export const MAX_REPORTED_UNREADABLE = 50;
/** Longest reason kept for an unreadable document (parser messages quote values). */
const MAX_REASON_LENGTH = 300;
/** A run halves its batches at most this many times (1/64 of the full size). */
const MAX_SHRINK = 6;
/** Smallest batches a shrunken run makes: enough for every step to make progress. */
const MIN_BATCH_OPERATIONS = 40;
const MIN_BATCH_ENTRIES = 20;
/** R2 returns at most 1000 objects per listing (fewer with metadata). */
const MAX_PAGE = 1000;
/** Queued narinfos read per round (each costs 1-3 operations), 6 connections at a time. */
const QUEUE_ROUND = 60;
/** Parallel R2 calls (Workers allow 6 open connections per invocation). */
const CONCURRENCY = 6;
/**
 * How long a batch holds the state. A batch works only during the first half of it, so a
 * call issued near the end has the other half to complete before anyone else may act.
 */
export const LEASE_MS = 30_000;

// What each step may cost, in operations (R2 calls and D1 queries, counted as they are made):
// a step starts only when its cost fits in what is left of the batch (#fits).

/** The mark sets a batch starts from (#loadSets): one get (two for a run an earlier version started). */
const LOAD_SETS_OPERATIONS = 2;
/** A listed page of the mark: the listing of its keys, and the index query about its narinfos. */
const LISTED_PAGE_OPERATIONS = 2;
/** A mark step: the mark sets (when the batch has not loaded them yet) and a listed page. */
const MARK_OPERATIONS = LOAD_SETS_OPERATIONS + LISTED_PAGE_OPERATIONS;
/** R2 calls pinRoots makes beside its query: the get of a pins document from before the pins table, and its delete once moved. */
const PINS_DOCUMENT_OPERATIONS = 2;
/** Loading the roots: the pins query and PINS_DOCUMENT_OPERATIONS, with one to spare. */
const ROOTS_OPERATIONS = 4;
/** Following a round of queued paths through the index: one D1 query. */
const INDEX_ROUND_OPERATIONS = 1;
/**
 * Reading one queued narinfo the index does not know: its HEAD, its body when the metadata
 * lacks references, and the rewrite of that metadata. The HEADs of unlisted narinfos are
 * budgeted alike: those found live are read next.
 */
const LOOKUP_OPERATIONS = 3;
/** A nars step: the mark sets and one listing of `nar/`. */
const NARS_OPERATIONS = LOAD_SETS_OPERATIONS + 1;
/** A compact step: the mark sets, the get of a candidate chunk and the put of its garbage chunk. */
const COMPACT_OPERATIONS = LOAD_SETS_OPERATIONS + 2;
/** Announce, per chunk: its get, with room for the draft's get before and the draft's or the fence's put after. */
const ANNOUNCE_OPERATIONS = 3;
/** A delete step before its deletions: the mark sets and the get of the chunk. */
const DELETE_OPERATIONS = LOAD_SETS_OPERATIONS + 1;
/**
 * Keys a delete step budgets per entry of the batch: a path line deletes two (its narinfo and
 * its listing), doubled because a chunk holds only about one batch's entries (a step may
 * overrun the entry budget by its last round, and chunks written before a run halved its
 * batches are larger).
 */
const DELETE_KEYS_PER_ENTRY = 4;
/** Removing a page of a run's working objects: its listing and one bulk delete. */
const CLEANUP_PAGE_OPERATIONS = 2;
/** The finish step: the fence's delete, the statistics' write, and two pages of working objects. */
const FINISH_OPERATIONS = 2 + 2 * CLEANUP_PAGE_OPERATIONS;

/**
 * Members the mark sets are sized for beyond the last run's path count, for the paths pushed
 * since: a set that fits needs no rehash (a copy of the whole table) during the run.
 */
const SET_HEADROOM = 1024;
/**
 * A requested cutoff this close to the running collection's asks for the same collection: an
 * age becomes a cutoff at each request's own time, so a retry moments later differs a little.
 */
const SAME_CUTOFF_MS = 1000;
/** Characters of a stored value (a NAR file name, a URL) quoted in an unreadable document's reason. */
const MAX_QUOTED_LENGTH = 120;

/** The run's working object `name` (`<kind>-<generation>[.<n>]`). */
function workKey(run: RunState, name: string): string {
  return `${runPrefix(run.id)}${name}`;
}

function newRunId(now: number): string {
  const random = crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36);
  return `${now.toString(36)}-${random}`;
}

/**
 * The file hash of a NAR file name `<filehash52>.nar[.ext]`, or null for any other name.
 * The full check of keys.ts: an object under `nar/` whose name is not exactly a NAR name
 * is not one of ours and is never deleted, and a narinfo whose URL is not exactly a NAR
 * name cannot tell which NAR it needs (the collector then keeps every NAR).
 */
function narFileHash(file: string): string | null {
  return parseNarFileName(file)?.fileHash ?? null;
}

/** While a run has met a document it could not read, it deletes no narinfo and no NAR. */
function blocked(run: RunState): boolean {
  return run.totals.unreadable > 0;
}

/** Same keys and values (a rewrite that changes nothing is not worth an operation). */
function sameMetadata(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/** What reading a queued narinfo found. */
type LookedUp =
  | { kind: "absent" }
  | { kind: "links"; links: NarInfoLinks; bodyBytes: number }
  | { kind: "unreadable"; document: UnreadableDocument };

/** Runs one batch of garbage collection. Throws AppError for requests that cannot be served. */
export async function runGcBatch(ctx: GcContext, req: GcRequest): Promise<GcProgress> {
  return new Batch(ctx, req).run();
}

class Batch {
  readonly #bucket: R2Bucket;
  readonly #db: D1Database;
  readonly #settings: GcSettings;
  readonly #clock: () => number;
  readonly #req: GcRequest;
  readonly #stateName: GcDocumentName;
  readonly #start: number;
  #maxOps: number;
  #maxEntries: number;
  readonly #maxQueries: number;
  #ops = 0;
  #entries = 0;
  /** D1 queries so far (also counted in #ops, with the R2 calls). */
  #queries = 0;
  #state: GcState = parseState(null);
  /** Version of the state row this batch read and wrote; null while there is none. */
  #version: number | null = null;
  #live: KeySet | null = null;
  #nars: KeySet | null = null;
  #setsDirty = false;
  #candidateLines: string[] = [];
  #narLines: string[] = [];
  /** Chunks written by this batch so far (their names must differ). */
  #chunksWritten = 0;
  #found: Found = { paths: [], files: [] };
  #result: GcResult | undefined;
  #stats: CacheStats | undefined;
  /** The run this batch finished (the state no longer holds it). */
  #finished: RunState | null = null;
  #waitMs = 0;

  constructor(ctx: GcContext, req: GcRequest) {
    this.#bucket = ctx.bucket;
    this.#db = ctx.db;
    this.#settings = ctx.settings;
    this.#clock = ctx.clock;
    this.#req = req;
    this.#stateName = req.dryRun ? "dry-run" : "state";
    this.#start = ctx.clock();
    this.#maxOps = Math.min(BATCH_OPERATIONS, ctx.limits?.operations ?? BATCH_OPERATIONS);
    this.#maxEntries = Math.min(BATCH_ENTRIES, ctx.limits?.entries ?? BATCH_ENTRIES);
    // At least one: a batch that may not ask the index cannot list anything.
    this.#maxQueries = Math.max(1, Math.min(BATCH_QUERIES, ctx.limits?.queries ?? BATCH_QUERIES));
  }

  async run(): Promise<GcProgress> {
    const now = this.#clock();
    // A batch that continues a run takes the lease as it reads the state (one D1 round trip).
    const claimed = await this.#op(() => readClaiming(this.#db, this.#stateName, LEASE_FIELDS, now, this.#start + LEASE_MS));
    let loaded = claimed.document;
    if (loaded === null && !this.#req.dryRun) {
      // A cache from before the D1 state: its R2 documents move once.
      this.#ops += ADOPTION_OPERATIONS;
      loaded = await adoptLegacyDocuments(this.#db, this.#bucket, formatState(parseState(null)));
    }
    this.#state = parseState(loaded?.text ?? null);
    this.#version = loaded?.version ?? null;
    if (claimed.leased === null && this.#state.leaseUntil !== null && this.#state.leaseUntil > now) return this.#progress("busy");
    const run0 = this.#state.run;
    if (this.#state.leaseUntil !== null && run0 !== null) {
      // The last batch took the lease and never committed: it failed, or the platform
      // stopped it (over its CPU time). Do less from now on, or the run would never move.
      run0.shrink = Math.min((run0.shrink ?? 0) + 1, MAX_SHRINK);
      console.warn(`gc ${run0.id}: the previous batch did not finish; batches are now 1/${2 ** run0.shrink} of the full size`);
    }
    if (run0 !== null && (run0.shrink ?? 0) > 0) {
      this.#maxOps = Math.max(MIN_BATCH_OPERATIONS, Math.floor(this.#maxOps / 2 ** run0.shrink));
      this.#maxEntries = Math.max(MIN_BATCH_ENTRIES, Math.floor(this.#maxEntries / 2 ** run0.shrink));
    }

    let refusal: GcProgress | null;
    try {
      refusal = this.#lastRunEnded() ?? (this.#state.run === null ? this.#whyNotStart(now) : (this.#checkJoin(this.#state.run), null));
    } catch (err) {
      if (claimed.leased !== null) await this.#release(loaded!.text, claimed.leased);
      throw err;
    }
    if (refusal !== null) {
      if (claimed.leased !== null) await this.#release(loaded!.text, claimed.leased);
      return refusal;
    }
    if (claimed.leased !== null) {
      this.#state.leaseUntil = this.#start + LEASE_MS;
      this.#version = claimed.leased;
    } else if (!(await this.#takeLease())) {
      return this.#progress("busy");
    }

    const run = this.#state.run === null || this.#req.restart === true ? await this.#startRun(now) : this.#state.run;
    if (run.gen === 0 && !run.rootsLoaded) {
      // A run's first batch only starts it (the fence of a run that never finished, the
      // pins, the legacy documents): the first look begins with the next batch, so no
      // batch pays for both.
      await this.#loadRoots(run);
    } else {
      while (await this.#step(run)) {
        // each step does a bounded piece of work and says whether the batch can go on
      }
    }
    if (!(await this.#commit(run))) return this.#progress("busy");
    if (this.#result !== undefined) return this.#progress("done");
    return this.#progress(this.#waitMs > 0 ? "waiting" : "running");
  }

  // ---- starting, joining, leases and commits -------------------------------------------

  /** When the caller follows a run that has ended: its result. */
  #lastRunEnded(): GcProgress | null {
    const id = this.#req.runId;
    if (id === undefined || this.#state.run?.id === id) return null;
    if (this.#state.last?.runId === id) {
      this.#result = this.#state.last;
      return this.#progress("done");
    }
    if (this.#state.run === null) return this.#progress("done");
    throw fail("conflict", `collection ${id} is no longer running; another one (${this.#state.run.id}) is`);
  }

  /** Why no run starts now (a progress to return), or null when one should start. */
  #whyNotStart(now: number): GcProgress | null {
    const { retentionMs, intervalMs, uploadWindowMs } = this.#settings;
    if (this.#req.onlyIfDue === true) {
      if (retentionMs === null) return this.#progress("idle");
      if (this.#state.lastStartedAt !== null && now - this.#state.lastStartedAt < intervalMs) return this.#progress("idle");
    }
    // A new real run waits half a window after the last one ended, so nothing a batch of the
    // old run issued at the very end of its lease can land after the new run's fence is up.
    const last = this.#state.last;
    if (!this.#req.dryRun && last !== null && now < last.finishedAt + uploadWindowMs / 2) {
      this.#waitMs = last.finishedAt + uploadWindowMs / 2 - now;
      return this.#progress("waiting");
    }
    if (this.#req.cutoff === undefined && retentionMs === null) {
      throw fail("bad_request", "GC_RETENTION_DAYS is off: give the age to collect explicitly (uploader gc --older-than <duration>)");
    }
    return null;
  }

  /** Refuses to silently continue a run with another cutoff than the caller asked for. */
  #checkJoin(run: RunState): void {
    const { cutoff, restart } = this.#req;
    if (restart === true) {
      if (!run.dryRun && (run.phase === "announce" || run.phase === "wait" || run.phase === "delete" || run.phase === "finish" || run.pass === 2)) {
        throw fail("conflict", `collection ${run.id} has announced what it deletes (phase ${run.phase}); it cannot be abandoned now, only finished (uploader gc without --restart)`);
      }
      return;
    }
    if (cutoff !== undefined && Math.abs(cutoff - run.cutoff) > SAME_CUTOFF_MS) {
      throw fail(
        "conflict",
        `collection ${run.id} (started ${new Date(run.startedAt).toISOString()}, collecting paths pushed before ` +
          `${new Date(run.cutoff).toISOString()}) is in progress; run uploader gc without an age to finish it, or with --restart to replace it`,
      );
    }
  }

  async #takeLease(): Promise<boolean> {
    this.#state.leaseUntil = this.#start + LEASE_MS;
    const version = await this.#op(() =>
      writeGcDocument(this.#db, this.#stateName, formatState(this.#state), this.#version === null ? { ifAbsent: true } : { ifVersion: this.#version }),
    );
    this.#version = version;
    return version !== null;
  }

  /**
   * Gives back a lease taken with the state's read for a request that is refused: the
   * state as it was read, unless another batch has written it since.
   */
  async #release(text: string, version: number): Promise<void> {
    await this.#op(() => writeGcDocument(this.#db, this.#stateName, text, { ifVersion: version }));
  }

  /** Whether this batch may still issue R2 calls that change anything. */
  #leaseValid(): boolean {
    return this.#clock() < this.#start + LEASE_MS / 2;
  }

  async #startRun(now: number): Promise<RunState> {
    const old = this.#state.run;
    if (old !== null) await this.#removeWorkObjects(old);
    const cutoff = Math.min(this.#req.cutoff ?? now - (this.#settings.retentionMs ?? 0), now);
    this.#state.run = {
      id: newRunId(now),
      dryRun: this.#req.dryRun,
      trigger: this.#req.trigger,
      startedAt: now,
      cutoff,
      narCutoff: now - this.#settings.narGraceMs,
      windowMs: this.#settings.uploadWindowMs,
      gen: 0,
      phase: "mark",
      pass: 1,
      cursor: null,
      position: "",
      listed: false,
      rootsLoaded: false,
      queue: "",
      unindexed: "",
      unlisted: "",
      pendingListing: null,
      sets: null,
      marks: null,
      candidates: [],
      garbage: [],
      narCandidates: [],
      index: 0,
      announcedAt: null,
      draft: null,
      shrink: 0,
      unreadable: [],
      totals: emptyTotals(),
    };
    if (!this.#req.dryRun) {
      this.#state.lastStartedAt = now;
      // A fence left behind by a run that never finished (its state was lost) fences nothing now.
      await this.#op(() => deleteKeys(this.#bucket, [FENCE_KEY]));
    }
    return this.#state.run;
  }

  /** Writes this batch's objects and the state; false when the lease was lost meanwhile. */
  async #commit(run: RunState): Promise<boolean> {
    if (this.#state.run !== null) {
      if (this.#setsDirty) {
        // The slot the state does not name: should this commit be lost, the next batch
        // reads the sets the state names, untouched.
        const slot = run.marks === 0 ? 1 : 0;
        const queues = { queue: run.queue, unindexed: run.unindexed, unlisted: run.unlisted };
        await this.#op(() => putGcObject(this.#bucket, workKey(run, `marks-${slot}`), formatMarkSets({ live: this.#live!, nars: this.#nars!, queues })));
        run.marks = slot;
        run.sets = null;
      }
      await this.#flushChunks(run);
      run.gen++;
    }
    this.#state.leaseUntil = null;
    if (!this.#leaseValid()) return false;
    const version = await this.#op(() => writeGcDocument(this.#db, this.#stateName, this.#stateText(), { ifVersion: this.#version! }));
    return version !== null;
  }

  /** The state document to write: a run's queues are in its mark sets' object once it has one. */
  #stateText(): string {
    const run = this.#state.run;
    if (run === null || run.marks === null) return formatState(this.#state);
    const { queue, unindexed, unlisted } = run;
    run.queue = run.unindexed = run.unlisted = "";
    try {
      return formatState(this.#state);
    } finally {
      run.queue = queue;
      run.unindexed = unindexed;
      run.unlisted = unlisted;
    }
  }

  // ---- budget -------------------------------------------------------------------------------

  /** One call to R2 (or D1, through #query): Cloudflare counts both per invocation. */
  async #op<T>(call: () => Promise<T>): Promise<T> {
    this.#ops++;
    return call();
  }

  /** One D1 query (a `batch` of statements is one round trip, one query). */
  async #query<T>(call: () => Promise<T>): Promise<T> {
    this.#queries++;
    return this.#op(call);
  }

  /**
   * Whether `ops` more operations (`queries` of them D1 queries) and `entries` more entries
   * fit in this batch (a step that asks for 1 entry needs room for at least one more).
   */
  #fits(ops: number, entries = 0, queries = 0): boolean {
    return (
      this.#ops + ops + RESERVED_OPERATIONS <= this.#maxOps &&
      this.#entries + entries <= this.#maxEntries &&
      this.#queries + queries <= this.#maxQueries &&
      this.#leaseValid()
    );
  }

  /**
   * The first time this isolate runs a kind of step, the batch's entries stop at
   * COLD_STEP_ENTRIES more (code run for the first time costs several times its warm CPU).
   */
  #capIfCold(kind: string): void {
    if (warmSteps.has(kind)) return;
    warmSteps.add(kind);
    this.#maxEntries = Math.min(this.#maxEntries, this.#entries + COLD_STEP_ENTRIES);
  }

  // ---- the phases ---------------------------------------------------------------------------

  /** One bounded piece of work; false when the batch should stop. */
  async #step(run: RunState): Promise<boolean> {
    switch (run.phase) {
      case "mark":
        return this.#markStep(run);
      case "nars":
        return this.#narsStep(run);
      case "compact":
        return this.#compactStep(run);
      case "announce":
        return this.#announceStep(run);
      case "wait":
        return this.#waitStep(run);
      case "delete":
        return this.#deleteStep(run);
      case "finish":
        return this.#finishStep(run);
    }
  }

  async #loadSets(run: RunState): Promise<void> {
    if (this.#live !== null) return;
    if (run.marks !== null) {
      const slot = run.marks;
      const stored = await this.#op(() => getBinaryObject(this.#bucket, workKey(run, `marks-${slot}`)));
      const sets = stored === null ? null : parseMarkSets(stored);
      this.#live = sets?.live ?? null;
      this.#nars = sets?.nars ?? null;
      if (sets !== null) ({ queue: run.queue, unindexed: run.unindexed, unlisted: run.unlisted } = sets.queues);
    } else if (run.sets !== null) {
      // A run an earlier version started keeps its sets as two objects of its generation.
      const gen = run.sets;
      const [live, nars] = await Promise.all([
        this.#op(() => getBinaryObject(this.#bucket, workKey(run, `live-${gen}`))),
        this.#op(() => getBinaryObject(this.#bucket, workKey(run, `nars-${gen}`))),
      ]);
      this.#live = live === null ? null : KeySet.fromBuffer(live, HASH_PART_LENGTH);
      this.#nars = nars === null ? null : KeySet.fromBuffer(nars, NAR_FILE_HASH_LENGTH);
    } else {
      const expected = this.#state.lastPaths + SET_HEADROOM;
      this.#live = KeySet.create(HASH_PART_LENGTH, expected);
      this.#nars = KeySet.create(NAR_FILE_HASH_LENGTH, expected);
      this.#setsDirty = true;
      return;
    }
    if (this.#live === null || this.#nars === null) {
      // Only a bug or a manual change of the bucket gets here: the run cannot go on safely.
      throw new Error(`the mark sets of collection ${run.id} are missing or damaged`);
    }
  }

  async #markStep(run: RunState): Promise<boolean> {
    if (!this.#fits(MARK_OPERATIONS)) return false;
    await this.#loadSets(run);
    if (!run.rootsLoaded && !(await this.#loadRoots(run))) return false;
    // Queued paths are followed as the listing goes, so the queues (kept in the state
    // document) stay short.
    if (run.queue.length + run.unindexed.length + run.unlisted.length >= QUEUE_FLUSH * HASH_PART_LENGTH) return this.#queueStep(run);
    if (!run.listed) {
      this.#capIfCold("list");
      const room = Math.max(1, Math.min(MAX_PAGE, this.#maxEntries - this.#entries));
      // The listing (keys only) and the index query about its narinfos.
      if (!this.#fits(LISTED_PAGE_OPERATIONS, 1, 1)) return false;
      const page = await this.#op(() => listTopLevelKeys(this.#bucket, run.cursor, room));
      const hashes = page.keys.map(narInfoKeyHashPart);
      const narinfos = hashes.filter((h): h is string => h !== null);
      const rows = narinfos.length === 0 ? new Map<string, ListedPath>() : await this.#query(() => listedPaths(this.#db, narinfos));
      for (let i = 0; i < hashes.length; i++) this.#listed(run, page, i, hashes[i] ?? null, rows);
      this.#entries += page.keys.length;
      this.#setsDirty = true;
      run.cursor = page.cursor;
      if (page.cursor === null) {
        run.listed = true;
        this.#flushListing(run, null);
      }
      return true;
    }
    if (run.queue !== "" || run.unindexed !== "" || run.unlisted !== "") return this.#queueStep(run);
    // The look is complete.
    await this.#flushChunks(run);
    if (run.pass === 1) {
      run.phase = "nars";
      run.cursor = null;
    } else {
      run.phase = "delete";
      run.index = 0;
    }
    return true;
  }

  /** Marks the pinned paths live (once per look); false when that does not fit in the batch. */
  async #loadRoots(run: RunState): Promise<boolean> {
    // One D1 query; a get of the pins document of a cache from before the pins table,
    // and its delete once moved into the table.
    if (!this.#fits(ROOTS_OPERATIONS, 0, 1)) return false;
    await this.#loadSets(run);
    this.#ops += PINS_DOCUMENT_OPERATIONS;
    const roots = await this.#query(() => pinRoots(this.#bucket, this.#db, { dryRun: run.dryRun }));
    for (const hash of roots.hashes) this.#live!.add(hash);
    if (roots.document.state === "damaged") this.#noteUnreadable(run, { key: PINS_KEY, path: null, reason: roots.document.reason });
    run.rootsLoaded = true;
    this.#setsDirty = true;
    return true;
  }

  /**
   * The `i`th object of a listed page (a narinfo, a listing, or anything else); `hash` is
   * its hash part when it is a narinfo, and `rows` what the index holds of the page's
   * narinfos. This runs for every narinfo of the bucket twice per collection: a live path
   * is queued (its references come from the index), an old one not (yet) live becomes a
   * candidate, and a narinfo the index does not know is looked at in R2 later (#unlistedStep).
   */
  #listed(run: RunState, page: KeyPage, i: number, hash: string | null, rows: ReadonlyMap<string, ListedPath>): void {
    if (hash === null) {
      if (run.pass === 1 && listingKeyHashPart(page.keys[i]!) !== null) {
        this.#flushListing(run, null);
        run.pendingListing = page.object(i);
      }
      return;
    }
    this.#flushListing(run, hash);
    const totals = run.totals;
    totals.listed++;
    totals.paths++;
    run.position = hash;
    const row = rows.get(hash);
    if (row === undefined) {
      run.unlisted += hash;
      return;
    }
    totals.savedBytes += Math.max(0, row.narSize - row.fileSize);
    this.#decide(run, hash, row.pushedAt >= run.cutoff, row.name, row.fileSize, row.narSize, true);
  }

  /**
   * What a listed narinfo is: live (young, pinned, or referenced by a live path) and not yet
   * followed → flagged and queued (through the index when `indexed`, else read from R2);
   * old and not live → a candidate of the first look.
   */
  #decide(run: RunState, hash: string, young: boolean, name: string | null, fileSize: number | null, narSize: number | null, indexed: boolean): void {
    const live = this.#live!;
    let state = live.state(hash);
    if (state === KEY_ABSENT && young) {
      live.add(hash);
      state = KEY_MEMBER;
    }
    if (state === KEY_MEMBER) {
      live.setExpanded(hash);
      if (indexed) run.queue += hash;
      else run.unindexed += hash;
    } else if (state === KEY_ABSENT && run.pass === 1) {
      this.#candidateLines.push(formatPathLine({ hash, name, fileSize, narSize }));
    }
  }

  /** A pending listing is orphaned unless `nextHash` is its narinfo. */
  #flushListing(run: RunState, nextHash: string | null): void {
    const pending = run.pendingListing;
    if (pending === null) return;
    run.pendingListing = null;
    if (nextHash !== null && pending.key === listingKey(nextHash)) return;
    if (pending.uploaded < run.narCutoff) {
      this.#narLines.push(formatFileLine(pending));
      run.totals.orphanListings++;
      if (run.dryRun) this.#found.files.push({ key: pending.key, size: pending.size });
    }
  }

  /**
   * Follows the references of `hash` (already flagged expanded in the live set), given
   * packed (concatenated hash parts): they become live; those the listing has passed are
   * queued. Its NAR is in use. Callers pass only validated hash parts (the index's rows as
   * linksOf checks them, metaLinks, the narinfo parser); anything else makes the set throw
   * and the batch fail, rather than a reference be skipped.
   */
  #expand(run: RunState, hash: string, refs: string, narFileHash: string): void {
    const live = this.#live!;
    for (let at = 0; at < refs.length; at += HASH_PART_LENGTH) {
      if (refs.startsWith(hash, at)) continue;
      // Already live (most references, in a closure): no string is made for it.
      if (!live.addAt(refs, at)) continue;
      const ref = refs.slice(at, at + HASH_PART_LENGTH);
      if (run.listed || ref < run.position) run.queue += ref;
    }
    this.#nars!.add(narFileHash);
    run.totals.expanded++;
  }

  /**
   * Records a document the run needed and could not read. From now on the run deletes no
   * narinfo and no NAR; it finishes and reports the document.
   */
  #noteUnreadable(run: RunState, document: UnreadableDocument): void {
    if (run.unreadable.some((d) => d.key === document.key)) return;
    run.totals.unreadable++;
    if (run.unreadable.length >= MAX_REPORTED_UNREADABLE) return;
    const reason = document.reason.length > MAX_REASON_LENGTH ? `${document.reason.slice(0, MAX_REASON_LENGTH - 1)}…` : document.reason;
    run.unreadable.push({ ...document, reason });
    console.error(`gc ${run.id}: cannot read ${document.key} (${reason}); this collection deletes no narinfo and no NAR`);
  }

  /**
   * Follows queued live paths: their references and NAR from the index, one query for a
   * round of them; those the index has no row for are read from R2 afterwards (#lookUpStep).
   */
  async #queueStep(run: RunState): Promise<boolean> {
    if (run.queue === "") return run.unindexed !== "" ? this.#lookUpStep(run) : this.#unlistedStep(run);
    this.#capIfCold("queue");
    // A batch that has done nothing else follows at least one, however small its budget.
    const first = this.#entries === 0;
    const left = this.#maxEntries - this.#entries;
    const affordable = Math.max(first ? 1 : 0, Math.floor(left / INDEXED_LOOKUP_COST));
    const count = Math.min(packedCount(run.queue, HASH_PART_LENGTH), INDEX_ROUND, affordable);
    if (count <= 0 || !this.#fits(INDEX_ROUND_OPERATIONS, 0, 1)) return false;
    const hashes = firstPacked(run.queue, HASH_PART_LENGTH, count);
    // The index answers references for as many of them as the batch can still afford.
    const { links, answered } = await this.#query(() => linksOf(this.#db, hashes, Math.max(1, left) * REFS_PER_ENTRY));
    let taken = 0;
    for (const hash of hashes) {
      // Past the references the answer could carry, or the batch's entries: this one and
      // the rest stay queued.
      if (taken >= answered || (taken > 0 && this.#entries >= this.#maxEntries)) break;
      const row = links.get(hash);
      this.#entries += INDEXED_LOOKUP_COST + Math.ceil((row?.refs?.length ?? 0) / HASH_PART_LENGTH / REFS_PER_ENTRY);
      taken++;
      run.totals.indexLookups++;
      if (row === undefined) {
        run.unindexed += hash;
        continue;
      }
      this.#live!.setExpanded(hash);
      const fileHash = narFileHash(row.narFile);
      if (fileHash === null) {
        this.#noteUnreadable(run, { key: narInfoKey(hash), path: null, reason: `its NAR file ${JSON.stringify(row.narFile.slice(0, MAX_QUOTED_LENGTH))} is not <file hash>.nar[.ext], so which NAR it needs is unknown` });
        continue;
      }
      if (row.refs === null) {
        this.#noteUnreadable(run, { key: narInfoKey(hash), path: null, reason: "its references in the index are not all hash parts, so what it needs is unknown" });
        continue;
      }
      this.#expand(run, hash, row.refs, fileHash);
    }
    run.queue = dropPacked(run.queue, HASH_PART_LENGTH, taken);
    this.#setsDirty = true;
    return taken > 0;
  }

  /**
   * Listed narinfos the index has no row for (a crash between object and row, or a bucket
   * not yet adopted): their push time and sizes from R2's metadata (one HEAD each), then
   * decided like any other; a live one is read from R2 (#lookUpStep).
   */
  async #unlistedStep(run: RunState): Promise<boolean> {
    const room = Math.floor((this.#maxOps - RESERVED_OPERATIONS - this.#ops) / LOOKUP_OPERATIONS);
    const first = this.#entries === 0;
    const affordable = Math.max(first ? 1 : 0, Math.floor((this.#maxEntries - this.#entries) / LOOKUP_COST));
    const count = Math.min(packedCount(run.unlisted, HASH_PART_LENGTH), QUEUE_ROUND, room, affordable);
    // One HEAD each.
    if (count <= 0 || !this.#fits(count, first ? 0 : count * LOOKUP_COST)) return false;
    const hashes = firstPacked(run.unlisted, HASH_PART_LENGTH, count);
    run.unlisted = dropPacked(run.unlisted, HASH_PART_LENGTH, count);
    this.#entries += count * LOOKUP_COST;
    run.totals.lookups += count;
    const heads = await mapConcurrent(hashes, CONCURRENCY, (hash) => this.#op(() => headKey(this.#bucket, narInfoKey(hash))));
    hashes.forEach((hash, i) => {
      const head = heads[i];
      if (head === null || head === undefined) return; // deleted since it was listed
      const meta = head.customMetadata;
      const fileSize = metaNumber(meta, "fs");
      const narSize = metaNumber(meta, "ns");
      if (fileSize !== null && narSize !== null) run.totals.savedBytes += Math.max(0, narSize - fileSize);
      else run.totals.pathsWithoutSizes++;
      const pushed = metaPushTime(meta) ?? head.uploaded.getTime();
      this.#decide(run, hash, pushed >= run.cutoff, metaName(meta), fileSize, narSize, false);
    });
    this.#setsDirty = true;
    return true;
  }

  /** Reads queued narinfos the index does not know (HEAD; their body when the metadata lacks references). */
  async #lookUpStep(run: RunState): Promise<boolean> {
    const room = Math.floor((this.#maxOps - RESERVED_OPERATIONS - this.#ops) / LOOKUP_OPERATIONS);
    // A batch that has done nothing else reads at least one, however small its budget.
    const first = this.#entries === 0;
    const affordable = Math.max(first ? 1 : 0, Math.floor((this.#maxEntries - this.#entries) / LOOKUP_COST));
    const count = Math.min(packedCount(run.unindexed, HASH_PART_LENGTH), QUEUE_ROUND, room, affordable);
    if (count <= 0 || !this.#fits(count * LOOKUP_OPERATIONS, first ? 0 : count * LOOKUP_COST)) return false;
    const hashes = firstPacked(run.unindexed, HASH_PART_LENGTH, count);
    run.unindexed = dropPacked(run.unindexed, HASH_PART_LENGTH, count);
    this.#entries += count * LOOKUP_COST;
    const found = await mapConcurrent(hashes, CONCURRENCY, (hash) => this.#lookUp(run, hash));
    let bodyBytes = 0;
    hashes.forEach((hash, i) => {
      const result = found[i]!;
      if (result.kind === "absent") return; // not stored (e.g. a path of an upstream cache)
      this.#live!.setExpanded(hash);
      if (result.kind === "unreadable") {
        this.#noteUnreadable(run, result.document);
        return;
      }
      this.#expand(run, hash, result.links.refs.join(""), result.links.narFileHash);
      bodyBytes += result.bodyBytes;
    });
    // Charged afterwards: a round overruns the entry budget by at most its own bodies.
    this.#entries += Math.ceil(bodyBytes / BODY_BYTES_PER_ENTRY);
    this.#setsDirty = true;
    return true;
  }

  /**
   * The references and NAR of a stored, live narinfo: from its metadata when that records
   * both, else from its body. A narinfo that is there but cannot be read (too large, gone
   * between the two reads, does not parse, its URL names no NAR of this cache) is
   * "unreadable": what it references is unknown.
   */
  async #lookUp(run: RunState, hash: string): Promise<LookedUp> {
    const key = narInfoKey(hash);
    run.totals.lookups++;
    const head = await this.#op(() => headKey(this.#bucket, key));
    if (head === null) return { kind: "absent" };
    const links = metaLinks(head.customMetadata);
    if (links !== null) return { kind: "links", links, bodyBytes: 0 };
    const name = metaName(head.customMetadata);
    const unreadable = (reason: string, path: string | null = name === null ? null : `${STORE_DIR}/${hash}-${name}`): LookedUp => ({
      kind: "unreadable",
      document: { key, path, reason },
    });
    // Not read at all: the Worker's parser refuses it anyway, and it could be any size.
    if (head.size > MAX_NARINFO_LENGTH) return unreadable(`it is ${head.size} bytes, more than the ${MAX_NARINFO_LENGTH} a narinfo may have`);
    const stored = await this.#op(() => getNarInfoObject(this.#bucket, key));
    if (stored === null) return unreadable("it disappeared while the collection read it");
    let parsed: NarInfo;
    try {
      parsed = parseNarInfo(stored.text);
    } catch (err) {
      if (!(err instanceof NixFormatError)) throw err;
      return unreadable(`it does not parse: ${err.message}`);
    }
    const file = parsed.url.startsWith(NAR_PREFIX) ? parseNarFileName(parsed.url.slice(NAR_PREFIX.length)) : null;
    if (file === null) {
      return unreadable(`its URL ${JSON.stringify(parsed.url.slice(0, MAX_QUOTED_LENGTH))} is not nar/<file hash>.nar[.ext], so which NAR it needs is unknown`, parsed.storePath);
    }
    // Every reference counts, even one with the hash part of the body's own StorePath: the
    // key is what names this narinfo, and a body for another path keeps what it names.
    const refs = parsed.references.map((r) => r.slice(0, HASH_PART_LENGTH));
    if (!run.dryRun && this.#leaseValid()) {
      // Record the metadata now, so later collections list this path instead of reading it
      // (unless it is what is stored already: references that do not fit are left out).
      const pushed = decodeNarInfoMeta(stored.customMetadata)?.pushed ?? stored.uploaded;
      const meta = encodeNarInfoMeta(parsed, pushed);
      if (!sameMetadata(meta, stored.customMetadata)) {
        await this.#op(() => putNarInfoObject(this.#bucket, key, stored.text, meta, { ifEtag: stored.etag }));
      }
    }
    return { kind: "links", links: { refs, narFileHash: file.fileHash }, bodyBytes: stored.text.length };
  }

  async #narsStep(run: RunState): Promise<boolean> {
    this.#capIfCold("nars");
    if (!this.#fits(NARS_OPERATIONS, 1)) return false;
    await this.#loadSets(run);
    const room = Math.min(MAX_PAGE, this.#maxEntries - this.#entries);
    const page = await this.#op(() => listPrefixKeys(this.#bucket, NAR_PREFIX, run.cursor, room));
    const totals = run.totals;
    for (let i = 0; i < page.keys.length; i++) {
      const fileHash = narFileHash(page.keys[i]!.slice(NAR_PREFIX.length));
      if (fileHash === null) continue; // not a NAR of ours
      const size = page.size(i);
      totals.narFiles++;
      totals.narBytes += size;
      // The upload time only of a NAR no live narinfo names (most are named).
      if (blocked(run) || this.#nars!.has(fileHash)) continue;
      const object = page.object(i);
      if (object.uploaded >= run.narCutoff) continue;
      this.#narLines.push(formatFileLine(object));
      totals.garbageNars++;
      totals.garbageNarBytes += size;
      if (run.dryRun) this.#found.files.push({ key: object.key, size });
    }
    this.#entries += page.keys.length;
    run.cursor = page.cursor;
    if (page.cursor === null) {
      await this.#flushChunks(run);
      run.phase = "compact";
      run.index = 0;
    }
    return true;
  }

  /**
   * Writes the candidate and NAR lines gathered so far as chunk objects named after this
   * batch's generation, so later phases (in this batch or the next) can read them.
   */
  async #flushChunks(run: RunState): Promise<void> {
    const name = (kind: string): string => `${kind}-${run.gen + 1}.${this.#chunksWritten++}`;
    if (this.#candidateLines.length > 0) {
      const chunk = name("candidates");
      await this.#op(() => putGcObject(this.#bucket, workKey(run, chunk), formatChunk(this.#candidateLines)));
      run.candidates.push(chunk);
      this.#candidateLines = [];
    }
    if (this.#narLines.length > 0) {
      const chunk = name("files");
      await this.#op(() => putGcObject(this.#bucket, workKey(run, chunk), formatChunk(this.#narLines)));
      run.narCandidates.push(chunk);
      this.#narLines = [];
    }
  }

  /**
   * Drops the candidates that became live later in the first look. Each candidate chunk
   * becomes one garbage chunk named after it, so redoing a step after a lost commit writes
   * the same object again.
   */
  async #compactStep(run: RunState): Promise<boolean> {
    // A blocked run has no garbage: it announces nothing (orphaned listings aside).
    if (run.index >= run.candidates.length || blocked(run)) {
      run.phase = run.dryRun ? "finish" : "announce";
      run.index = 0;
      return true;
    }
    // A chunk holds about one batch's entries; one more chunk may overrun the entry budget
    // by that much, which keeps a batch within twice its CPU allowance.
    this.#capIfCold("compact");
    if (!this.#fits(COMPACT_OPERATIONS, 1)) return false;
    await this.#loadSets(run);
    const name = run.candidates[run.index]!;
    const chunk = await this.#op(() => getTextObject(this.#bucket, workKey(run, name)));
    const candidates = chunkLines(chunk?.text ?? "");
    this.#entries += CHUNK_COST + candidates.length;
    const garbage: string[] = [];
    for (const line of candidates) {
      const path = parsePathLine(line);
      if (this.#live!.has(path.hash)) continue;
      garbage.push(line);
      run.totals.garbagePaths++;
      run.totals.garbagePathBytes += path.fileSize ?? 0;
      if (run.dryRun) this.#found.paths.push({ hash: path.hash, name: path.name, fileSize: path.fileSize });
    }
    if (garbage.length > 0 && !run.dryRun) {
      if (!this.#leaseValid()) return false;
      await this.#op(() => putGcObject(this.#bucket, workKey(run, `garbage-${name}`), formatChunk(garbage)));
      run.garbage.push(`garbage-${name}`);
    }
    run.index++;
    return true;
  }

  /**
   * Builds the fence from the garbage and NAR chunks, a bounded number of chunks per batch
   * (a draft object carries the part built so far), then writes it.
   */
  async #announceStep(run: RunState): Promise<boolean> {
    const chunks = [...run.garbage, ...run.narCandidates];
    // A chunk's lines count as entries, so however many chunks a large bucket leaves, a batch
    // reads a bounded number of them (one at least).
    const chunkFits = () => this.#fits(ANNOUNCE_OPERATIONS, this.#entries === 0 ? 0 : 1);
    this.#capIfCold("announce");
    if (!chunkFits()) return false;
    let paths = "";
    let nars = "";
    if (run.draft !== null) {
      const draft = (await this.#op(() => getTextObject(this.#bucket, workKey(run, run.draft!))))?.text;
      // Without it the fence would lack what the chunks before it hold, and those would be
      // deleted unannounced: only a bug or a manual change of the bucket gets here.
      if (draft === undefined) throw new Error(`the fence draft of collection ${run.id} is missing`);
      ({ paths, nars } = parseDraft(draft));
    }
    while (run.index < chunks.length && chunkFits()) {
      const name = chunks[run.index]!;
      const text = (await this.#op(() => getTextObject(this.#bucket, workKey(run, name))))?.text ?? "";
      const isPaths = run.index < run.garbage.length;
      const lines = chunkLines(text);
      this.#entries += CHUNK_COST + lines.length;
      for (const line of lines) {
        if (isPaths) paths += pathLineHash(line);
        else nars += fileLineNarHash(line) ?? ""; // an orphaned listing's line: not fenced
      }
      run.index++;
    }
    if (run.index < chunks.length) {
      if (!this.#leaseValid()) return false;
      const draft = `draft-${run.gen + 1}.${this.#chunksWritten++}`;
      await this.#op(() => putGcObject(this.#bucket, workKey(run, draft), formatDraft({ paths, nars })));
      run.draft = draft;
      return false;
    }
    // Uploads search the fence by bisection: it must be sorted. Listings come in key order,
    // so it is; checking costs little and a mistake here would let an upload slip through.
    paths = sortedPacked(paths, HASH_PART_LENGTH);
    nars = sortedPacked(nars, NAR_FILE_HASH_LENGTH);
    run.draft = null;
    if (paths === "" && nars === "") {
      // Nothing to delete but orphaned listings, which nothing can depend on.
      run.phase = "delete";
      run.index = run.garbage.length;
      run.announcedAt = null;
      return true;
    }
    if (!this.#leaseValid()) return false;
    await this.#op(() => putGcObject(this.#bucket, FENCE_KEY, formatFence({ runId: run.id, announcedAt: this.#clock(), paths, nars })));
    run.announcedAt = this.#clock();
    run.phase = "wait";
    run.index = 0;
    return true;
  }

  #waitStep(run: RunState): boolean {
    // The window may have been changed since the run started; uploads follow the current one.
    const until = (run.announcedAt ?? 0) + Math.max(run.windowMs, this.#settings.uploadWindowMs);
    const now = this.#clock();
    if (now < until) {
      this.#waitMs = until - now;
      return false;
    }
    run.phase = "mark";
    run.pass = 2;
    run.cursor = null;
    run.position = "";
    run.listed = false;
    run.rootsLoaded = false;
    const totals = run.totals;
    totals.paths = 0;
    totals.savedBytes = 0;
    totals.pathsWithoutSizes = 0;
    return true;
  }

  async #deleteStep(run: RunState): Promise<boolean> {
    if (run.index >= run.garbage.length && run.totals.deletedPaths > 0 && !this.#narinfoCopiesExpired(run)) return false;
    const total = run.garbage.length + run.narCandidates.length;
    if (run.index >= total) {
      run.phase = "finish";
      return true;
    }
    // Deleting a chunk's objects takes a few bulk deletes, and forgetting its paths one D1 query.
    if (!this.#fits(DELETE_OPERATIONS + Math.ceil((DELETE_KEYS_PER_ENTRY * this.#maxEntries) / MAX_DELETE_KEYS), 1, 1)) return false;
    const isPaths = run.index < run.garbage.length;
    if (isPaths && blocked(run)) {
      // An unreadable document turned up in the second look: no fenced narinfo goes.
      run.index++;
      return true;
    }
    await this.#loadSets(run);
    const name = isPaths ? run.garbage[run.index]! : run.narCandidates[run.index - run.garbage.length]!;
    const chunk = await this.#op(() => getTextObject(this.#bucket, workKey(run, name)));
    const entries = chunkLines(chunk?.text ?? "");
    this.#entries += CHUNK_COST + entries.length;
    const keys: string[] = [];
    const forgotten: string[] = [];
    const totals = run.totals;
    for (const line of entries) {
      if (isPaths) {
        const path = parsePathLine(line);
        if (this.#live!.has(path.hash)) {
          totals.rescued++;
          continue;
        }
        forgotten.push(path.hash);
        keys.push(narInfoKey(path.hash), listingKey(path.hash));
        totals.deletedPaths++;
        totals.paths--;
        if (path.fileSize !== null && path.narSize !== null) totals.savedBytes -= Math.max(0, path.narSize - path.fileSize);
        else totals.pathsWithoutSizes--;
        this.#found.paths.push({ hash: path.hash, name: path.name, fileSize: path.fileSize });
      } else {
        const file = parseFileLine(line);
        if (file.key.startsWith(NAR_PREFIX)) {
          const fileHash = narFileHash(file.key.slice(NAR_PREFIX.length));
          if (blocked(run) || fileHash === null || this.#nars!.has(fileHash)) continue;
          totals.deletedNars++;
          totals.freedBytes += file.size;
          totals.narFiles--;
          totals.narBytes -= file.size;
        } else {
          // An orphaned listing: it stays when its narinfo was pushed during the run.
          const hash = listingKeyHashPart(file.key);
          if (hash === null || this.#live!.has(hash)) continue;
        }
        keys.push(file.key);
        this.#found.files.push(file);
      }
    }
    const outOfTime = () => fail("storage_unavailable", "the collection batch ran out of time; the next batch redoes it");
    if (forgotten.length > 0) {
      // Rows first: from here on the index no longer offers these paths as present.
      if (!this.#leaseValid()) throw outOfTime();
      await this.#query(() => forgetPaths(this.#db, forgotten, this.#clock()));
    }
    // R2 deletes up to 1000 keys per call: a chunk's objects go in a few operations.
    for (let i = 0; i < keys.length; i += MAX_DELETE_KEYS) {
      if (!this.#leaseValid()) throw outOfTime();
      const slice = keys.slice(i, i + MAX_DELETE_KEYS);
      await this.#op(() => deleteKeys(this.#bucket, slice));
    }
    run.index++;
    return true;
  }

  /**
   * Whether the narinfos this run deleted can no longer be served by any cache. A client or
   * a CDN (the Worker's edge cache, a public bucket's domain) may serve a narinfo for its
   * max-age after it was deleted; what it names must outlive it by that long, or
   * GC_NAR_GRACE_HOURS if shorter. So the NARs (and the end of the run: the next run's
   * NARs) wait; meanwhile the batch says how long.
   */
  #narinfoCopiesExpired(run: RunState): boolean {
    const now = this.#clock();
    run.narinfosGoneAt ??= now;
    const until = run.narinfosGoneAt + Math.min(this.#settings.narGraceMs, NARINFO_MAX_AGE_SECONDS * 1000);
    if (now >= until) return true;
    this.#waitMs = until - now;
    return false;
  }

  async #finishStep(run: RunState): Promise<boolean> {
    if (!this.#fits(FINISH_OPERATIONS)) return false;
    const now = this.#clock();
    const totals = run.totals;
    const result: GcResult = {
      runId: run.id,
      trigger: run.trigger,
      startedAt: run.startedAt,
      finishedAt: now,
      cutoff: run.cutoff,
      deletedPaths: totals.deletedPaths,
      deletedNars: totals.deletedNars,
      freedBytes: totals.freedBytes,
      unreadableCount: totals.unreadable,
      unreadable: run.unreadable,
    };
    if (!run.dryRun) {
      if (!this.#leaseValid()) return false;
      await this.#op(() => deleteKeys(this.#bucket, [FENCE_KEY]));
      const stats: CacheStats = {
        countedAt: now,
        paths: totals.paths,
        narFiles: totals.narFiles,
        narBytes: totals.narBytes,
        savedBytes: totals.savedBytes,
        pathsWithoutSizes: totals.pathsWithoutSizes,
        lastGc: result,
      };
      // With the paths gone, the index's kept counts go too: the statistics count again.
      await this.#op(() => recordCollection(this.#db, formatStats(stats), totals.deletedPaths > 0));
      this.#stats = stats;
      this.#state.last = result;
      this.#state.lastPaths = totals.paths;
    }
    if (!(await this.#removeWorkObjects(run))) return false;
    this.#result = result;
    this.#finished = run;
    this.#state.run = null;
    return false;
  }

  /** Deletes a run's working objects; false when they did not all fit in this batch. */
  async #removeWorkObjects(run: RunState): Promise<boolean> {
    let cursor: string | null = null;
    do {
      if (!this.#fits(CLEANUP_PAGE_OPERATIONS)) return false;
      const page = await this.#op(() => listPrefix(this.#bucket, runPrefix(run.id), cursor));
      const keys = page.objects.map((o) => o.key);
      if (keys.length > 0) await this.#op(() => deleteKeys(this.#bucket, keys));
      cursor = page.cursor;
    } while (cursor !== null);
    return true;
  }

  #progress(status: GcProgress["status"]): GcProgress {
    const run = this.#state.run ?? this.#finished;
    return {
      status,
      run: run === null ? null : runInfo(run),
      waitMs: Math.max(0, Math.ceil(this.#waitMs)),
      batch: { operations: this.#ops, entries: this.#entries },
      totals: run?.totals ?? emptyTotals(),
      found: this.#found,
      ...(this.#result === undefined ? {} : { result: this.#result }),
      ...(this.#stats === undefined ? {} : { stats: this.#stats }),
    };
  }
}
