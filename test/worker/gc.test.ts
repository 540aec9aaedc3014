// Garbage collection against the real local R2 bucket: what is kept, what goes, in which
// order, and what a collection reports.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { testPath, type TestPath } from "../helpers/worker.ts";
import { cacheKeys, collect, DAY_MS, gcSettings, setPins, storePath, TestClock } from "../helpers/gc.ts";
import { formatPins } from "../../src/gc/pins.ts";
import { PINS_KEY } from "../../src/storage/gc-store.ts";
import { listPins } from "../../src/storage/pins.ts";

afterEach(() => reset());

function keysOf(p: TestPath): string[] {
  return [`${p.hash}.narinfo`, `nar/${p.fileName}`];
}

describe("garbage collection", () => {
  it("keeps young, pinned and referenced paths and deletes the rest with their NARs", async () => {
    const clock = new TestClock();
    const e = await testPath("e");
    const d = await testPath("d", { references: [e] });
    const b = await testPath("b");
    const a = await testPath("a", { references: [b] });
    const c = await testPath("c");
    await storePath(env.CACHE, e, clock.now - 90 * DAY_MS);
    await storePath(env.CACHE, d, clock.now - 60 * DAY_MS);
    await storePath(env.CACHE, b, clock.now - 90 * DAY_MS);
    await storePath(env.CACHE, a, clock.now - 1 * DAY_MS);
    await storePath(env.CACHE, c, clock.now - 40 * DAY_MS);
    await setPins({ release: { path: d.storePath, pinnedAt: clock.now } });

    const batches = await collect(env.CACHE, gcSettings(), clock);
    const last = batches.at(-1)!;
    expect(last.status).toBe("done");
    expect(last.result?.deletedPaths).toBe(1);
    expect(last.result?.deletedNars).toBe(1);

    const keys = await cacheKeys(env.CACHE);
    for (const p of [a, b, d, e]) for (const k of keysOf(p)) expect(keys).toContain(k);
    for (const k of keysOf(c)) expect(keys).not.toContain(k);
    expect(last.stats?.paths).toBe(4);
  });

  it("keeps the pins of a cache from before the pins table (its R2 document), moved into the table; a dry run moves nothing", async () => {
    const clock = new TestClock();
    const dep = await testPath("legacy-pin-dep");
    const top = await testPath("legacy-pin-top", { references: [dep] });
    const garbage = await testPath("legacy-pin-garbage");
    for (const p of [dep, top, garbage]) await storePath(env.CACHE, p, clock.now - 90 * DAY_MS);
    const doc = formatPins(new Map([["release", { path: top.storePath, pinnedAt: 1 }]]));
    await env.CACHE.put(PINS_KEY, doc);

    const dry = await collect(env.CACHE, gcSettings(), clock, { request: { dryRun: true } });
    expect(dry.flatMap((b) => b.found.paths.map((p) => p.hash))).toEqual([garbage.hash]);
    expect(await (await env.CACHE.get(PINS_KEY))!.text()).toBe(doc);
    expect((await listPins(env.DB)).size).toBe(0);

    const last = (await collect(env.CACHE, gcSettings(), clock)).at(-1)!;
    expect(last.result?.deletedPaths).toBe(1);
    const keys = await cacheKeys(env.CACHE);
    for (const p of [dep, top]) for (const k of keysOf(p)) expect(keys).toContain(k);
    expect(await env.CACHE.head(PINS_KEY)).toBeNull();
    expect([...(await listPins(env.DB)).entries()]).toEqual([["release", { path: top.storePath, pinnedAt: 1 }]]);
  });
});
