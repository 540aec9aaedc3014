// The statistics' index side (gc/stats.ts), against the real local R2 and D1: paths and
// sizes counted in the index, a count reused only as long as STATS_ROWS_PER_DAY allows
// (counting reads every row), dropped by a collection that deleted paths, and nothing (but
// no failure) when D1 cannot be read.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { adoptObjects } from "../../src/path-index/adoption.ts";
import { indexCountLifetime, loadStatsView, STATS_ROWS_PER_DAY } from "../../src/gc/stats.ts";
import { call, push, testPath } from "../helpers/worker.ts";
import { collect, CountingDb, DAY_MS, gcSettings, storePath, TestClock } from "../helpers/gc.ts";

afterEach(() => reset());

describe("statistics from the index", () => {
  it("reuse a count of N paths for N × 86.4 ms (a fifth of the free plan's rows read a day), then count again", async () => {
    expect(STATS_ROWS_PER_DAY).toBe(1_000_000);
    expect(indexCountLifetime(0)).toBe(0);
    expect(indexCountLifetime(1000)).toBeCloseTo(86_400);
    const db = new CountingDb(env.DB);
    const t0 = Date.now();
    expect((await loadStatsView(db.db, t0)).index).toEqual({ countedAt: t0, paths: 0, fileBytes: 0, narBytes: 0, complete: false });
    const a = await testPath("stats-reuse-a");
    const b = await testPath("stats-reuse-b");
    await push(a);
    // A count of nothing is never reused (it cost nothing).
    expect((await loadStatsView(db.db, t0))?.index?.paths).toBe(1);
    await push(b);
    const counted = db.queries.length;
    const reused = await loadStatsView(db.db, t0 + 50);
    expect(reused.index).toMatchObject({ countedAt: t0, paths: 1 });
    // Reusing the count costs the one query that reads the documents.
    expect(db.queries.length).toBe(counted + 1);
    const recounted = await loadStatsView(db.db, t0 + indexCountLifetime(1) + 1);
    expect(recounted.index).toMatchObject({ paths: 2, fileBytes: a.file.length + b.file.length, narBytes: a.nar.length + b.nar.length });
    // Counting again: the documents, the two counting queries, keeping the count.
    expect(db.queries.length).toBe(counted + 1 + 4);
    // A clock that went backwards does not make an old count look fresh.
    expect((await loadStatsView(db.db, t0 - 1000)).index?.countedAt).toBe(t0 - 1000);
  });

  it("say whether the index is complete", async () => {
    await push(await testPath("stats-complete"));
    expect((await loadStatsView(env.DB)).index?.complete).toBe(false);
    expect((await adoptObjects(env.CACHE, env.DB)).complete).toBe(true);
    await env.DB.prepare("DELETE FROM gc_documents WHERE name = 'index-stats'").run();
    expect((await loadStatsView(env.DB)).index?.complete).toBe(true);
  });

  it("are counted again right after a collection that deleted paths", async () => {
    const clock = new TestClock();
    const paths = await Promise.all(Array.from({ length: 5 }, (_, i) => testPath(`stats-gc-${i}`)));
    for (const [i, p] of paths.entries()) await storePath(env.CACHE, p, clock.now - (i < 3 ? 90 : 1) * DAY_MS);
    const before = (await (await call("/_api/v1/stats")).json()) as { paths: number };
    expect(before.paths).toBe(5);
    // Five paths: the count would be reused for 432 ms; the collection drops it.
    await collect(env.CACHE, gcSettings(), clock);
    const after = (await (await call("/_api/v1/stats")).json()) as { paths: number; fileBytes: number; lastGc: { deletedPaths: number } };
    expect(after.paths).toBe(2);
    expect(after.fileBytes).toBe(paths[3]!.file.length + paths[4]!.file.length);
    expect(after.lastGc.deletedPaths).toBe(3);
  });

  it("show nothing, without failing, when D1 cannot be read", async () => {
    const db = new CountingDb(env.DB);
    await push(await testPath("stats-down"));
    const t0 = Date.now();
    expect((await loadStatsView(db.db, t0)).index).toMatchObject({ countedAt: t0, paths: 1 });
    db.failing = true;
    expect(await loadStatsView(db.db, t0 + DAY_MS)).toEqual({ stats: null, index: null, running: null });
  });

  it("keep the last count when counting fails after the documents were read", async () => {
    const db = new CountingDb(env.DB);
    await push(await testPath("stats-count-fails"));
    const t0 = Date.now();
    await loadStatsView(db.db, t0);
    // The documents' read succeeds, the count (next query) fails.
    db.failFrom = db.queries.length + 1;
    const stale = await loadStatsView(db.db, t0 + DAY_MS);
    expect(stale.index).toMatchObject({ countedAt: t0, paths: 1 });
  });
});
