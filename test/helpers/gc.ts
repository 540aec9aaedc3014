// Helpers for garbage collection tests inside workerd: store paths with chosen push times
// straight into the real local R2 bucket and the D1 index (through the storage modules, as
// the upload route stores them), a clock the tests move, a bucket wrapper that counts R2
// operations per batch, a loop that runs batches until a collection is done, and the
// index's invariant (every row has its narinfo object, for the same store path), which
// that loop checks after every batch that deleted paths and after every collection.

import { env } from "cloudflare:workers";
import { formatNarInfo, parseNarInfo } from "../../src/nix/narinfo.ts";
import { toHex } from "../../src/nix/encoding.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { MAX_PINS, type Pins } from "../../src/gc/pins.ts";
import { setPin } from "../../src/storage/pins.ts";
import { runGcBatch, type GcProgress, type GcRequest } from "../../src/gc/collector.ts";
import type { GcSettings } from "../../src/gc/settings.ts";
import { narInfoKey } from "../../src/storage/keys.ts";
import { encodeNarInfoMeta, metaName } from "../../src/storage/narinfo-meta.ts";
import { putNarInfoObject } from "../../src/storage/narinfo-object.ts";
import { recordPath, rowOf } from "../../src/storage/path-index.ts";
import { STORE_DIR } from "../../src/nix/store-path.ts";
import type { TestPath } from "./worker.ts";

export const DAY_MS = 24 * 3600 * 1000;

/**
 * A clock the test moves. It starts an hour ahead of the real time, so objects the test
 * writes (which R2 stamps with the real time) are older than "now", as they would be.
 */
export class TestClock {
  now: number;
  constructor(offsetMs = 3600 * 1000) {
    this.now = Date.now() + offsetMs;
  }
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}

/** Settings for tests: 30 days retention, no NAR grace, no fence wait unless asked. */
export function gcSettings(overrides: Partial<GcSettings> = {}): GcSettings {
  return { retentionMs: 30 * DAY_MS, narGraceMs: 0, uploadWindowMs: 0, intervalMs: DAY_MS, ...overrides };
}

/**
 * Stores a path's NAR and narinfo (with metadata saying it was pushed at `pushedAt`), then
 * its row in the index (env.DB) with the same push time, in the upload route's order.
 * `indexed: false` leaves the object unindexed, as a crash or a bucket from before the
 * index does.
 */
export async function storePath(bucket: R2Bucket, p: TestPath, pushedAt: number, opts: { indexed?: boolean } = {}): Promise<void> {
  await bucket.put(`nar/${p.fileName}`, p.file, { sha256: toHex(await sha256(p.file)) });
  await putNarInfoObject(bucket, narInfoKey(p.hash), formatNarInfo(p.info), encodeNarInfoMeta(p.info, pushedAt));
  if (opts.indexed !== false) await recordPath(env.DB, rowOf(p.info, null, pushedAt)!, null, null);
}

/** Empties the index (tests that clear the bucket between runs clear it too). */
export async function clearIndex(db: D1Database = env.DB): Promise<void> {
  await db.batch([db.prepare("DELETE FROM paths"), db.prepare("DELETE FROM audit"), db.prepare("DELETE FROM index_state")]);
}

/** The push time the index holds for a path, or null when it has no row for it. */
export async function indexedPushTime(hash: string, db: D1Database = env.DB): Promise<number | null> {
  return (await db.prepare("SELECT pushed_at FROM paths WHERE hash = ?1").bind(hash).first<{ pushed_at: number }>())?.pushed_at ?? null;
}

/**
 * Violations of the index's invariant: a row whose narinfo object is missing, or whose
 * object is for another store path (by its metadata's name, else its body's StorePath).
 * Empty when the index is sound. One listing of the bucket's top level, one D1 query.
 */
export async function indexProblems(bucket: R2Bucket = env.CACHE, db: D1Database = env.DB): Promise<string[]> {
  const rows = (await db.prepare("SELECT hash, name FROM paths ORDER BY hash").all<{ hash: string; name: string }>()).results;
  const objects = new Map<string, Record<string, string> | undefined>();
  let cursor: string | undefined;
  do {
    const page = await bucket.list({ delimiter: "/", include: ["customMetadata"], ...(cursor === undefined ? {} : { cursor }) });
    for (const o of page.objects) if (o.key.endsWith(".narinfo")) objects.set(o.key, o.customMetadata);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  const problems: string[] = [];
  for (const row of rows) {
    const key = narInfoKey(row.hash);
    const expected = `${STORE_DIR}/${row.hash}-${row.name}`;
    if (!objects.has(key)) {
      problems.push(`the row of ${expected} has no narinfo object`);
      continue;
    }
    let stored = metaName(objects.get(key));
    if (stored === null) {
      const text = await (await bucket.get(key))?.text();
      try {
        stored = text === undefined ? null : parseNarInfo(text).storePath.slice(STORE_DIR.length + 34);
      } catch {
        stored = null;
      }
    }
    if (`${STORE_DIR}/${row.hash}-${stored}` !== expected) problems.push(`the row of ${expected} has the narinfo object of ${stored ?? "an unreadable document"}`);
  }
  return problems;
}

async function assertIndexSound(bucket: R2Bucket, db: D1Database, when: string): Promise<void> {
  const problems = await indexProblems(bucket, db);
  if (problems.length > 0) throw new Error(`${when}: ${problems.join("; ")}`);
}

/** Replaces the pins (rows of the D1 table, as the pins routes write them). */
export async function setPins(pins: Pins, db: D1Database = env.DB): Promise<void> {
  await db.prepare("DELETE FROM pins").run();
  for (const [name, pin] of Object.entries(pins)) {
    const result = await setPin(db, name, pin, MAX_PINS);
    if (!result.set) throw new Error(`could not set pin ${name}`);
  }
}

/** Counts the R2 calls made through it (one per call, as Cloudflare counts them). */
export class CountingBucket {
  count = 0;
  readonly bucket: R2Bucket;
  constructor(inner: R2Bucket) {
    const counter = this;
    this.bucket = new Proxy(inner, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          counter.count++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  }
}

type Runner = "all" | "run" | "first" | "raw";

/**
 * Counts the D1 queries made through it (a `batch` of statements is one query, one round
 * trip) and records their SQL; with `failing` set, every query throws, as an unreachable
 * D1 would. The statements are the real ones (D1's `batch` needs them), with their
 * runners wrapped.
 */
export class CountingDb {
  readonly queries: string[] = [];
  failing = false;
  /** Queries fail once this many have been made. */
  failFrom = Infinity;
  readonly db: D1Database;
  constructor(inner: D1Database) {
    const counter = this;
    const sqlOf = new WeakMap<D1PreparedStatement, string>();
    const record = (sql: string): void => {
      if (counter.failing || counter.queries.length >= counter.failFrom) throw new Error("D1_ERROR: the index is unreachable (test)");
      counter.queries.push(sql);
    };
    const wrap = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
      sqlOf.set(statement, sql);
      const target = statement as unknown as Record<string, (...a: unknown[]) => unknown>;
      for (const runner of ["all", "run", "first", "raw"] satisfies Runner[]) {
        const original = target[runner]!.bind(statement);
        target[runner] = (...args: unknown[]) => {
          record(sql);
          return original(...args);
        };
      }
      const bind = statement.bind.bind(statement);
      target.bind = (...values: unknown[]) => wrap(bind(...values), sql);
      return statement;
    };
    this.db = new Proxy(inner, {
      get(target, prop) {
        if (prop === "prepare") return (sql: string) => wrap(target.prepare(sql), sql);
        if (prop === "batch") {
          return (statements: D1PreparedStatement[]) => {
            record(statements.map((s) => sqlOf.get(s) ?? "?").join("; "));
            return target.batch(statements);
          };
        }
        const value = Reflect.get(target, prop) as unknown;
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  /** How many queries so far had SQL matching `pattern`. */
  count(pattern: RegExp): number {
    return this.queries.filter((q) => pattern.test(q)).length;
  }
}

export interface GcRunOptions {
  request?: Partial<GcRequest>;
  /** Called between batches (e.g. to push paths while the collection runs). */
  between?: (batch: number, progress: GcProgress) => Promise<void>;
  /** Called with each batch's own count of R2 operations (through a CountingBucket). */
  perBatch?: (operations: number, progress: GcProgress) => void;
  maxBatches?: number;
  /** Smaller batches (gc/collector.ts GcContext.limits). */
  limits?: { operations?: number; entries?: number; queries?: number };
  /** The index the collector uses (default env.DB; tests pass counting wrappers). */
  db?: D1Database;
}

/**
 * Runs batches until the collection is done; a waiting batch moves the clock on. After
 * each batch that deleted paths, their rows must be gone; after the collection, every row
 * of the index must have its narinfo object (it throws otherwise).
 */
export async function collect(bucket: R2Bucket, settings: GcSettings, clock: TestClock, opts: GcRunOptions = {}): Promise<GcProgress[]> {
  // The checks read the index itself, not through a wrapper the test counts with.
  const db = env.DB;
  const counting = new CountingBucket(bucket);
  const batches: GcProgress[] = [];
  let runId: string | undefined;
  for (let i = 0; i < (opts.maxBatches ?? 3000); i++) {
    const before = counting.count;
    const req: GcRequest = { dryRun: false, trigger: "manual", ...opts.request, ...(runId === undefined ? {} : { runId }) };
    if (runId !== undefined) delete req.cutoff;
    const progress = await runGcBatch({ bucket: counting.bucket, db: opts.db ?? db, settings, clock: clock.read, ...(opts.limits ? { limits: opts.limits } : {}) }, req);
    opts.perBatch?.(counting.count - before, progress);
    batches.push(progress);
    runId ??= progress.run?.id;
    if (!req.dryRun && progress.found.paths.length > 0) {
      // What a real batch reports in found.paths it deleted: their rows went first.
      const left = await db
        .prepare("SELECT p.hash AS hash FROM json_each(?1) j JOIN paths p ON p.hash = j.value")
        .bind(JSON.stringify(progress.found.paths.map((p) => p.hash)))
        .all<{ hash: string }>();
      if (left.results.length > 0) throw new Error(`batch ${i} deleted paths whose rows are still indexed: ${left.results.map((r) => r.hash).join(", ")}`);
    }
    if (progress.status === "done" || progress.status === "idle") {
      await assertIndexSound(bucket, db, "after the collection");
      return batches;
    }
    if (progress.status === "busy") throw new Error("a batch found the state leased in a single-caller test");
    if (progress.status === "waiting") clock.advance(progress.waitMs);
    await opts.between?.(i, progress);
  }
  throw new Error("the collection did not finish");
}

/** Every key in the bucket outside `_gc/`. */
export async function cacheKeys(bucket: R2Bucket): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await bucket.list(cursor === undefined ? {} : { cursor });
    for (const o of page.objects) if (!o.key.startsWith("_gc/")) out.push(o.key);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return out;
}
