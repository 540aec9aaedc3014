// Garbage collection on the D1 index, against the real local R2 and D1: a path's last push
// is the later of its narinfo object's and its row's (a push that finds a path present
// moves only the row), asked once per listed page; rows go before their objects, in bulk;
// an index that cannot be read stops the batch before it deletes anything.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { BATCH_ENTRIES, BATCH_QUERIES, LEASE_MS, STATE_QUERIES, runGcBatch, type GcProgress } from "../../src/gc/collector.ts";
import { MAX_DELETE_KEYS } from "../../src/storage/gc-store.ts";
import { narInfoKey } from "../../src/storage/keys.ts";
import { decodeNarInfoMeta, encodeNarInfoMeta } from "../../src/storage/narinfo-meta.ts";
import { putNarInfoObject } from "../../src/storage/narinfo-object.ts";
import { indexedPaths } from "../../src/storage/path-index.ts";
import { bearer, call, push, putNarInfo, testPath, type TestPath } from "../helpers/worker.ts";
import { cacheKeys, clearIndex, collect, CountingDb, DAY_MS, gcSettings, indexedPushTime, indexProblems, storePath, TestClock } from "../helpers/gc.ts";

afterEach(() => reset());

/** The test Worker keeps paths 30 days (GC_RETENTION_DAYS default): 40 days is old. */
const OLD = 40 * DAY_MS;

/** The push time the narinfo object records (what a refresh no longer rewrites). */
async function objectPushTime(p: TestPath): Promise<number | null> {
  return decodeNarInfoMeta((await env.CACHE.head(narInfoKey(p.hash)))?.customMetadata)?.pushed ?? null;
}

/** Makes a pushed path look pushed at `at`: its object's metadata and its row. */
async function backdate(p: TestPath, at: number, what: { object?: boolean; row?: boolean } = {}): Promise<void> {
  if (what.object !== false) {
    const stored = (await env.CACHE.get(narInfoKey(p.hash)))!;
    await putNarInfoObject(env.CACHE, narInfoKey(p.hash), await stored.text(), encodeNarInfoMeta(p.info, at));
  }
  if (what.row !== false) await env.DB.prepare("UPDATE paths SET pushed_at = ?2 WHERE hash = ?1").bind(p.hash, at).run();
}

function keysOf(p: TestPath): string[] {
  return [narInfoKey(p.hash), `nar/${p.fileName}`];
}

function done(batches: GcProgress[]): GcProgress {
  const last = batches.at(-1)!;
  expect(last.status).toBe("done");
  return last;
}

async function rowHashes(): Promise<string[]> {
  return (await env.DB.prepare("SELECT hash FROM paths ORDER BY hash").all<{ hash: string }>()).results.map((r) => r.hash);
}

describe("push times from the index", () => {
  it("keeps a path that POST /_api/v1/missing refreshed (the index only), and what it references", async () => {
    const dep = await testPath("refreshed-dep");
    const top = await testPath("refreshed-top", { references: [dep] });
    const other = await testPath("not-refreshed");
    for (const p of [dep, top, other]) await push(p);
    const refreshedAt = Date.now();
    for (const p of [dep, top, other]) await backdate(p, refreshedAt - OLD);

    // A pipeline pushes top's closure again: the uploader asks what is missing.
    const res = await call("/_api/v1/missing", { method: "POST", body: JSON.stringify({ hashes: [dep.hash, top.hash] }), headers: bearer() });
    expect(await res.json()).toEqual({ missing: [], unchecked: [] });
    expect(await indexedPushTime(top.hash)).toBeGreaterThanOrEqual(refreshedAt);
    expect(await objectPushTime(top)).toBe(refreshedAt - OLD);

    // 40 days after the original push, an hour after the refresh.
    const clock = new TestClock();
    const last = done(await collect(env.CACHE, gcSettings(), clock));
    expect(last.result?.deletedPaths).toBe(1);
    const keys = await cacheKeys(env.CACHE);
    for (const p of [top, dep]) for (const k of keysOf(p)) expect(keys).toContain(k);
    for (const k of keysOf(other)) expect(keys).not.toContain(k);
    expect(await rowHashes()).toEqual([dep.hash, top.hash].sort());
  });

  it("keeps a path whose identical narinfo was uploaded again (the index only)", async () => {
    const p = await testPath("re-put");
    await push(p);
    const at = Date.now();
    await backdate(p, at - OLD);
    const etag = (await env.CACHE.head(narInfoKey(p.hash)))!.etag;
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(204);
    expect((await env.CACHE.head(narInfoKey(p.hash)))!.etag).toBe(etag);

    done(await collect(env.CACHE, gcSettings(), new TestClock()));
    for (const k of keysOf(p)) expect(await cacheKeys(env.CACHE)).toContain(k);
  });

  it("takes an indexed path's push time from its row, and an unindexed one's from its object", async () => {
    const clock = new TestClock();
    // The row says old, the object young: the row decides (it is never behind the object).
    const rowOld = await testPath("row-old-object-young");
    await storePath(env.CACHE, rowOld, clock.now - DAY_MS);
    await backdate(rowOld, clock.now - OLD, { object: false });
    // The row says young, the object old: a refresh, kept.
    const rowYoung = await testPath("row-young-object-old");
    await storePath(env.CACHE, rowYoung, clock.now - OLD);
    await backdate(rowYoung, clock.now - DAY_MS, { object: false });
    // No row: the object's metadata decides, one way and the other.
    const bareYoung = await testPath("unindexed-young");
    await storePath(env.CACHE, bareYoung, clock.now - DAY_MS, { indexed: false });
    const bareOld = await testPath("unindexed-old-2");
    await storePath(env.CACHE, bareOld, clock.now - OLD, { indexed: false });
    const last = done(await collect(env.CACHE, gcSettings(), clock));
    expect(last.result?.deletedPaths).toBe(2);
    const keys = await cacheKeys(env.CACHE);
    for (const p of [rowYoung, bareYoung]) for (const k of keysOf(p)) expect(keys).toContain(k);
    for (const p of [rowOld, bareOld]) for (const k of keysOf(p)) expect(keys).not.toContain(k);
    expect(await rowHashes()).toEqual([rowYoung.hash]);
  });

  it("a dry run asks the index too, and removes no row", async () => {
    const clock = new TestClock();
    const refreshed = await testPath("dry-refreshed");
    const old = await testPath("dry-old");
    await storePath(env.CACHE, refreshed, clock.now - OLD);
    await storePath(env.CACHE, old, clock.now - OLD);
    await env.DB.prepare("UPDATE paths SET pushed_at = ?2 WHERE hash = ?1").bind(refreshed.hash, clock.now - DAY_MS).run();
    const dry = await collect(env.CACHE, gcSettings(), clock, { request: { dryRun: true } });
    expect(dry.flatMap((b) => b.found.paths.map((p) => p.hash))).toEqual([old.hash]);
    expect(await rowHashes()).toEqual([refreshed.hash, old.hash].sort());
  });

  it("lists keys only and asks the index once per listed page about its narinfos", async () => {
    const clock = new TestClock();
    const paths = await Promise.all(Array.from({ length: 30 }, (_, i) => testPath(`page-${i}`)));
    for (const [i, p] of paths.entries()) await storePath(env.CACHE, p, clock.now - (i % 2 === 0 ? OLD : DAY_MS));
    const db = new CountingDb(env.DB);
    let topLevelLists = 0;
    let withMetadata = 0;
    const bucket = new Proxy(env.CACHE, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const options = args[0] as R2ListOptions | undefined;
          // The collector's listings (with a limit; the helper's invariant check lists without).
          if (prop === "list" && options?.delimiter === "/" && options.limit !== undefined) {
            topLevelLists++;
            if (options.include !== undefined) withMetadata++;
          }
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const perBatch: number[] = [];
    let seen = 0;
    const last = done(
      await collect(bucket, gcSettings(), clock, {
        db: db.db,
        limits: { entries: 5 },
        perBatch: () => {
          perBatch.push(db.queries.length - seen);
          seen = db.queries.length;
        },
      }),
    );
    expect(last.result?.deletedPaths).toBe(15);
    expect(withMetadata).toBe(0);
    const lookups = db.count(/p\.pushed_at\)\) AS paths FROM json_each/);
    // Two looks over 30 narinfos in pages of at most 5: at least 12 pages, one query each
    // (a page holding no narinfo, such as the last, asks nothing).
    expect(lookups).toBeGreaterThanOrEqual(12);
    expect(lookups).toBeLessThanOrEqual(topLevelLists);
    for (const n of perBatch) expect(n).toBeLessThanOrEqual(BATCH_QUERIES);
  }, 60_000); // two collections in small batches

  it("stays within a budget of one D1 query per batch and still collects exactly", async () => {
    const clock = new TestClock();
    const kept = await testPath("budget-kept");
    const dep = await testPath("budget-dep");
    const user = await testPath("budget-user", { references: [dep] });
    const garbage = await Promise.all(Array.from({ length: 6 }, (_, i) => testPath(`budget-garbage-${i}`)));
    await storePath(env.CACHE, kept, clock.now - OLD);
    await storePath(env.CACHE, dep, clock.now - OLD);
    await storePath(env.CACHE, user, clock.now - OLD);
    for (const g of garbage) await storePath(env.CACHE, g, clock.now - OLD);
    await backdate(kept, clock.now - DAY_MS, { object: false });
    await backdate(user, clock.now - DAY_MS, { object: false });
    const db = new CountingDb(env.DB);
    let seen = 0;
    let stateSeen = 0;
    const last = done(
      await collect(env.CACHE, gcSettings({ uploadWindowMs: 60_000 }), clock, {
        db: db.db,
        limits: { entries: 3, queries: 1 },
        perBatch: () => {
          // Index queries, that is; the batch's own state document costs its own few (STATE_QUERIES).
          const index = db.queries.filter((q) => !q.includes("gc_documents"));
          expect(index.length - seen).toBeLessThanOrEqual(1);
          expect(db.queries.length - index.length - stateSeen).toBeLessThanOrEqual(STATE_QUERIES);
          seen = index.length;
          stateSeen = db.queries.length - index.length;
        },
      }),
    );
    expect(last.result?.deletedPaths).toBe(garbage.length);
    expect(await rowHashes()).toEqual([kept.hash, dep.hash, user.hash].sort());
  }, 60_000); // a collection in batches of one query
});

describe("rows before objects", () => {
  it("removes a chunk's rows in one query before any of its narinfos, and deletes its keys in one call", async () => {
    const clock = new TestClock();
    const kept = await testPath("bulk-kept");
    await storePath(env.CACHE, kept, clock.now - DAY_MS);
    const garbage = await Promise.all(Array.from({ length: 600 }, (_, i) => testPath(`bulk-${i}`)));
    for (let i = 0; i < garbage.length; i += 50) await Promise.all(garbage.slice(i, i + 50).map((g) => storePath(env.CACHE, g, clock.now - OLD)));

    const violations: string[] = [];
    const deletes: string[][] = [];
    const bucket = new Proxy(env.CACHE, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== "function") return value;
        if (prop !== "delete") return (value as (...a: unknown[]) => unknown).bind(target);
        return async (keys: string | string[]) => {
          const list = Array.isArray(keys) ? keys : [keys];
          const narinfos = list.filter((k) => k.endsWith(".narinfo")).map((k) => k.slice(0, 32));
          if (narinfos.length > 0) {
            deletes.push(list);
            // At the moment R2 is asked to delete them, the index must no longer have them.
            for (const row of await indexedPaths(env.DB, narinfos)) violations.push(row.hash);
          }
          return target.delete(keys);
        };
      },
    });
    const db = new CountingDb(env.DB);
    const last = done(await collect(bucket, gcSettings(), clock, { db: db.db }));
    expect(last.result?.deletedPaths).toBe(600);
    expect(violations).toEqual([]);
    // 600 narinfos and their listings: 1200 keys, a chunk's in one call (a chunk holds at
    // most a batch's BATCH_ENTRIES lines, two keys each, within R2's 1000 per call), and one
    // query per chunk for its rows. The first listing of an isolate takes fewer entries
    // (COLD_STEP_ENTRIES), so there may be one chunk more than the entries need.
    expect(deletes.flat().length).toBe(2 * garbage.length);
    expect(Math.max(...deletes.map((d) => d.length))).toBeLessThanOrEqual(Math.min(MAX_DELETE_KEYS, 2 * BATCH_ENTRIES));
    expect(deletes.length).toBeLessThanOrEqual(Math.ceil(garbage.length / BATCH_ENTRIES) + 1);
    expect(db.count(/DELETE FROM paths/)).toBe(deletes.length);
    expect(await rowHashes()).toEqual([kept.hash]);
    const audit = await env.DB.prepare("SELECT count(*) AS n FROM audit WHERE actor = 'gc' AND action = 'delete'").first<{ n: number }>();
    expect(audit?.n).toBe(600);
    expect(await indexProblems()).toEqual([]);
  }, 120_000);

  it("an index it cannot reach stops the batch before it deletes anything; the run finishes once it is back", async () => {
    const clock = new TestClock();
    const kept = await testPath("down-kept");
    const old = await testPath("down-old");
    await storePath(env.CACHE, kept, clock.now - DAY_MS);
    await storePath(env.CACHE, old, clock.now - OLD);
    const before = (await cacheKeys(env.CACHE)).sort();
    const db = new CountingDb(env.DB);
    db.failing = true;
    await expect(runGcBatch({ bucket: env.CACHE, db: db.db, settings: gcSettings(), clock: clock.read }, { dryRun: false, trigger: "manual" })).rejects.toMatchObject({
      kind: "storage_unavailable",
    });
    expect((await cacheKeys(env.CACHE)).sort()).toEqual(before);
    expect(await rowHashes()).toEqual([kept.hash, old.hash].sort());

    db.failing = false;
    clock.advance(LEASE_MS);
    const last = done(await collect(env.CACHE, gcSettings(), clock, { db: db.db }));
    expect(last.result?.deletedPaths).toBe(1);
    expect(await rowHashes()).toEqual([kept.hash]);
  });

  it("a path that stays unindexed (a crash between object and row) is collected like any other", async () => {
    const clock = new TestClock();
    const p = await testPath("unindexed-old");
    await storePath(env.CACHE, p, clock.now - OLD, { indexed: false });
    const last = done(await collect(env.CACHE, gcSettings(), clock));
    expect(last.result?.deletedPaths).toBe(1);
    expect(await cacheKeys(env.CACHE)).toEqual([]);
  });
});

describe("references through the index", () => {
  /** A chain of `n` paths, each referencing the one before; the last is young, the rest old. */
  async function chain(prefix: string, n: number, clock: TestClock, opts: { indexed?: (i: number) => boolean } = {}): Promise<TestPath[]> {
    const paths: TestPath[] = [];
    for (let i = 0; i < n; i++) paths.push(await testPath(`${prefix}-${i}`, { references: i === 0 ? [] : [paths[i - 1]!] }));
    for (const [i, p] of paths.entries()) await storePath(env.CACHE, p, clock.now - (i === n - 1 ? DAY_MS : OLD), { indexed: opts.indexed?.(i) ?? true });
    return paths;
  }

  /** The bucket, counting HEADs and GETs of narinfos (what following a path from R2 costs). */
  function narinfoReads(): { bucket: R2Bucket; reads: string[] } {
    const reads: string[] = [];
    const bucket = new Proxy(env.CACHE, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          if ((prop === "head" || prop === "get") && typeof args[0] === "string" && args[0].endsWith(".narinfo")) reads.push(args[0]);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    return { bucket, reads };
  }

  it("follows queued references with one index query per round and no R2 call per path", async () => {
    const clock = new TestClock();
    const paths = await chain("indexed-chain", 40, clock);
    const { bucket, reads } = narinfoReads();
    const db = new CountingDb(env.DB);
    const last = done(await collect(bucket, gcSettings(), clock, { db: db.db }));
    expect(last.result?.deletedPaths).toBe(0);
    // Some references were listed before their referrers (hash order is random): queued.
    expect(last.totals.indexLookups).toBeGreaterThan(0);
    expect(last.totals.lookups).toBe(0);
    expect(reads).toEqual([]);
    expect(db.count(/p\.nar_file AS nar_file/)).toBeGreaterThan(0);
    const keys = await cacheKeys(env.CACHE);
    for (const p of paths) for (const k of keysOf(p)) expect(keys).toContain(k);
  }, 60_000);

  it("reads a queued path the index has no row for from R2, and keeps what it references", async () => {
    const clock = new TestClock();
    // Every path but the young one unindexed: whatever is queued must be read from R2.
    const paths = await chain("unindexed-chain", 30, clock, { indexed: (i) => i === 29 });
    const { bucket, reads } = narinfoReads();
    const last = done(await collect(bucket, gcSettings(), clock));
    expect(last.result?.deletedPaths).toBe(0);
    expect(last.totals.lookups).toBeGreaterThan(0);
    expect(reads.length).toBeGreaterThanOrEqual(last.totals.lookups);
    const keys = await cacheKeys(env.CACHE);
    for (const p of paths) for (const k of keysOf(p)) expect(keys).toContain(k);
  }, 60_000);

  it("a row that cannot say which NAR its path needs blocks the deletions, as an unreadable narinfo does", async () => {
    const clock = new TestClock();
    const paths = await chain("bad-row-chain", 20, clock);
    const garbage = await testPath("bad-row-garbage");
    await storePath(env.CACHE, garbage, clock.now - OLD);
    await env.DB.prepare("UPDATE paths SET nar_file = 'not-a-nar-name' WHERE hash <> ?1").bind(paths.at(-1)!.hash).run();
    const last = done(await collect(env.CACHE, gcSettings(), clock));
    // Only a queued path is read from its row; the chain's hash order queues some.
    expect(last.totals.indexLookups).toBeGreaterThan(0);
    expect(last.result?.deletedPaths).toBe(0);
    expect(last.result?.unreadableCount).toBeGreaterThan(0);
    expect(await cacheKeys(env.CACHE)).toEqual(expect.arrayContaining(keysOf(garbage)));
  }, 60_000);

  it("so does a row whose references are not all hash parts, whatever their total length", async () => {
    for (const [i, refs] of [
      (h: string) => JSON.stringify([h, `${h.slice(0, 31)}e`]), // an e: not nix32
      (h: string) => JSON.stringify([`${h.slice(0, 16)} ${h.slice(17)}`]), // a space
      (h: string) => `[${JSON.stringify(h)}, 1]`, // a number
      (h: string) => JSON.stringify([h, h.slice(1)]), // one character short
      (h: string) => JSON.stringify([h.slice(0, 31), `${h}0`]), // 31 and 33 characters: the total of two
    ].entries()) {
      const clock = new TestClock();
      const paths = await chain(`bad-refs-${i}`, 20, clock);
      const garbage = await testPath(`bad-refs-garbage-${i}`);
      await storePath(env.CACHE, garbage, clock.now - OLD);
      for (const p of paths.slice(1)) await env.DB.prepare("UPDATE paths SET refs = ?2 WHERE hash = ?1").bind(p.hash, refs(paths[0]!.hash)).run();
      const last = done(await collect(env.CACHE, gcSettings(), clock));
      expect(last.totals.indexLookups).toBeGreaterThan(0);
      expect(last.result?.deletedPaths).toBe(0);
      expect(last.result?.unreadableCount).toBeGreaterThan(0);
      expect(last.result?.unreadable?.[0]?.reason).toMatch(/references in the index are not all hash parts/);
      expect(await cacheKeys(env.CACHE)).toEqual(expect.arrayContaining(keysOf(garbage)));
      await env.CACHE.delete((await cacheKeys(env.CACHE)).filter((k) => !k.startsWith("_gc/")));
      await clearIndex();
    }
  }, 120_000);
});
