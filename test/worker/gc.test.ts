// Garbage collection against the real local R2 bucket: what is kept, what goes, in which
// order, and what a collection reports.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { testPath, type TestPath } from "../helpers/worker.ts";
import { cacheKeys, collect, DAY_MS, gcSettings, setPins, storePath, TestClock } from "../helpers/gc.ts";

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
    await setPins(env.CACHE, { release: { path: d.storePath, pinnedAt: clock.now } });

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
});
