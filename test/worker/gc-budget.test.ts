// A bucket of 20,000 narinfos is collected in batches that each stay within the free plan's
// per-invocation budget of R2 operations and D1 queries, and make a number of R2 calls that
// does not grow with the bucket: every R2 call and D1 query of every batch is counted
// through wrappers around the real local bindings (the collector takes the bucket and the
// index it is given). Every path is indexed; a tenth of the old ones were refreshed in the
// index only.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { utf8 } from "../../src/nix/encoding.ts";
import { formatSha256, sha256 } from "../../src/nix/hash.ts";
import { formatNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { BATCH_OPERATIONS, BATCH_QUERIES } from "../../src/gc/collector.ts";
import { narInfoKey } from "../../src/storage/keys.ts";
import { encodeNarInfoMeta } from "../../src/storage/narinfo-meta.ts";
import { putNarInfoObject } from "../../src/storage/narinfo-object.ts";
import { adoptRows, rowOf, type IndexedPath } from "../../src/storage/path-index.ts";
import { collect, CountingDb, DAY_MS, gcSettings, setPins, TestClock } from "../helpers/gc.ts";

afterAll(() => reset());

/** The free plan's limit on calls to Cloudflare services (R2 included) per invocation. */
const FREE_PLAN_OPERATIONS = 1000;
/** The free plan's limit on D1 queries per invocation. */
const FREE_PLAN_QUERIES = 50;
/**
 * R2 calls a batch makes at most here, however large the bucket: a few reads and writes of
 * working objects and a listing page, as the collector charges each call a share of the
 * batch's entries (LOOKUP_COST, CHUNK_COST in gc/collector.ts). When the announce step read
 * every chunk the collection left, one batch of this bucket made 95. (No narinfo here lacks
 * a row, so no batch looks narinfos up one by one.)
 */
const MAX_R2_CALLS_PER_BATCH = 16;
/** Rows written to the index per query while filling it. */
const ROWS_PER_QUERY = 500;
const PATHS = 20_000;
/** Writes in flight while filling the bucket. */
const FILL_CONCURRENCY = 64;

/** A deterministic pseudo-random generator (xorshift), so the graph is the same every run. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += FILL_CONCURRENCY) await Promise.all(items.slice(i, i + FILL_CONCURRENCY).map(fn));
}

describe("garbage collection of 20,000 narinfos", () => {
  it("stays within the free plan's R2 operations in every batch and keeps exactly the live closure", async () => {
    const clock = new TestClock();
    const next = random(20_000);
    const hashes: string[] = [];
    const fileHashes: string[] = [];
    for (let i = 0; i < PATHS; i++) {
      hashes.push(encodeNix32((await sha256(utf8(`budget path ${i}`))).slice(0, 20)));
      fileHashes.push(encodeNix32(await sha256(utf8(`budget nar ${i}`))));
    }
    // Each path references up to 4 of the 200 paths before it (a deep, wide DAG whose
    // references point anywhere in the key order); a third are young, a few pinned.
    const refs: number[][] = [];
    const young: boolean[] = [];
    for (let i = 0; i < PATHS; i++) {
      const r = new Set<number>();
      const count = i === 0 ? 0 : Math.floor(next() * 5);
      for (let k = 0; k < count; k++) r.add(Math.max(0, i - 1 - Math.floor(next() * 200)));
      refs.push([...r]);
      young.push(next() < 1 / 3);
    }
    // Refreshed by a push that found them: old objects, young rows (their own generator, so
    // the graph stays the same).
    const again = random(7);
    const refreshed = young.map((y) => !y && again() < 1 / 10);
    const pinned = [PATHS - 1, Math.floor(PATHS / 2)];
    const rows: IndexedPath[] = [];
    await inBatches([...Array(PATHS).keys()], async (i) => {
      const info: NarInfo = {
        storePath: `/nix/store/${hashes[i]}-budget-${i}`,
        url: `nar/${fileHashes[i]}.nar.zst`,
        compression: "zstd",
        fileHash: `sha256:${fileHashes[i]}`,
        fileSize: 1000 + i,
        narHash: formatSha256(new Uint8Array(32).fill(i % 256)),
        narSize: 3000 + i,
        references: refs[i]!.map((j) => `${hashes[j]}-budget-${j}`).sort(),
        sigs: [],
        extra: [],
      };
      const pushedAt = clock.now - (young[i] ? 1 : 60) * DAY_MS;
      await env.CACHE.put(`nar/${fileHashes[i]}.nar.zst`, new Uint8Array(16));
      await putNarInfoObject(env.CACHE, narInfoKey(hashes[i]!), formatNarInfo(info), encodeNarInfoMeta(info, pushedAt));
      rows[i] = rowOf(info, null, refreshed[i] ? clock.now - DAY_MS : pushedAt)!;
    });
    // The rows after their objects, as adoption indexes a bucket.
    for (let i = 0; i < PATHS; i += ROWS_PER_QUERY) {
      await adoptRows(env.DB, rows.slice(i, i + ROWS_PER_QUERY), i + ROWS_PER_QUERY >= PATHS ? "complete" : { cursor: narInfoKey(hashes[i]!) }, clock.now);
    }
    await setPins(
      Object.fromEntries(pinned.map((i) => [`p${i}`, { path: `/nix/store/${hashes[i]}-budget-${i}`, pinnedAt: clock.now }])),
    );

    // The expected live set: closure of young and pinned paths.
    const live = new Set<number>();
    const stack = [...young.flatMap((y, i) => (y || refreshed[i] ? [i] : [])), ...pinned];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (live.has(i)) continue;
      live.add(i);
      stack.push(...refs[i]!);
    }

    const filled = Date.now();
    const perBatch: number[] = [];
    const queriesPerBatch: number[] = [];
    const db = new CountingDb(env.DB);
    const batches = await collect(env.CACHE, gcSettings({ narGraceMs: 0, uploadWindowMs: 60_000 }), clock, {
      db: db.db,
      perBatch: (operations) => {
        perBatch.push(operations);
        queriesPerBatch.push(db.queries.length - queriesPerBatch.reduce((a, b) => a + b, 0));
      },
    });
    const last = batches.at(-1)!;
    console.log(
      `20,000 narinfos: ${batches.length} batches, R2 operations per batch max ${Math.max(...perBatch)}, ` +
        `total ${perBatch.reduce((a, b) => a + b, 0)}; D1 queries per batch max ${Math.max(...queriesPerBatch)}, total ${db.queries.length}; entries per batch max ${Math.max(...batches.map((b) => b.batch.entries))}; ` +
        `${last.totals.lookups} narinfos read one by one; ${PATHS - live.size} garbage paths; collected in ${((Date.now() - filled) / 1000).toFixed(0)} s`,
    );
    for (const [i, ops] of perBatch.entries()) {
      // The collector counts its D1 queries among its operations, the wrapper only R2 calls.
      expect(ops + queriesPerBatch[i]!).toBeLessThanOrEqual(BATCH_OPERATIONS);
      expect(ops + queriesPerBatch[i]!).toBeLessThan(FREE_PLAN_OPERATIONS);
      expect(ops).toBeLessThanOrEqual(MAX_R2_CALLS_PER_BATCH);
      expect(queriesPerBatch[i]).toBeLessThanOrEqual(BATCH_QUERIES);
      expect(queriesPerBatch[i]).toBeLessThan(FREE_PLAN_QUERIES);
    }
    expect(last.status).toBe("done");
    expect(last.result?.deletedPaths).toBe(PATHS - live.size);
    expect(last.result?.deletedNars).toBe(PATHS - live.size);
    expect(last.stats?.paths).toBe(live.size);

    // Spot checks against the bucket: live paths and their NARs are there, garbage is gone.
    for (let i = 0; i < PATHS; i += 97) {
      const present = (await env.CACHE.head(narInfoKey(hashes[i]!))) !== null;
      const nar = (await env.CACHE.head(`nar/${fileHashes[i]}.nar.zst`)) !== null;
      expect(present).toBe(live.has(i));
      expect(nar).toBe(live.has(i));
    }
  }, 900_000);
});
