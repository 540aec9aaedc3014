// Retention fails safe, whatever the stored documents contain: a collection that cannot read
// a narinfo it keeps (or the pins) deletes no narinfo and no NAR, finishes, and names the
// document; damaged or partial metadata makes it read the body, never skip a reference or a
// NAR; objects outside the key layout are never deleted. Against the real local R2 bucket,
// with documents written straight into it (as another writer with bucket access could).
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo, MAX_NARINFO_LENGTH } from "../../src/nix/narinfo.ts";
import { MAX_REPORTED_UNREADABLE, type GcProgress } from "../../src/gc/collector.ts";
import { FENCE_KEY, PINS_KEY } from "../../src/storage/gc-store.ts";
import { narInfoKey } from "../../src/storage/keys.ts";
import { decodeNarInfoMeta, encodeNarInfoMeta } from "../../src/storage/narinfo-meta.ts";
import { callWith, testPath, type TestPath } from "../helpers/worker.ts";
import { cacheKeys, clearIndex, collect, DAY_MS, gcSettings, indexProblems, setPins, storePath, TestClock } from "../helpers/gc.ts";

afterEach(() => reset());

const RETENTION_DAYS = 30;
const OLD = 90 * DAY_MS;

/** The metadata the Worker writes for `p` pushed at `pushedAt`, with `r` left out. */
function metaWithoutRefs(p: TestPath, pushedAt: number): Record<string, string> {
  const meta = encodeNarInfoMeta(p.info, pushedAt);
  delete meta.r;
  return meta;
}

/** The ways a stored narinfo body can be unreadable to the collector. */
type Damage = "oversized" | "unparseable" | "truncated" | "foreign-url" | "dot-dot-url";

function damagedBody(p: TestPath, damage: Damage): string {
  const text = formatNarInfo(p.info);
  switch (damage) {
    case "oversized":
      // A huge Sig line: past the 1 MiB the Worker's parser accepts.
      return `${text}Sig: cache.example.org-1:${"A".repeat(MAX_NARINFO_LENGTH)}\n`;
    case "unparseable":
      return text.replace(/^NarSize: .*$/m, "NarSize: lots");
    case "truncated":
      return text.slice(0, Math.floor(text.length / 2));
    case "foreign-url":
      return text.replace(/^URL: .*$/m, `URL: https://elsewhere.example/${p.info.url}`);
    case "dot-dot-url":
      // Resolves to this cache's NAR, but is not a NAR file name.
      return text.replace(/^URL: nar\//m, "URL: nar/../nar/");
  }
}

/** Stores `p`'s NAR and a damaged narinfo with the Worker's metadata minus `r`. */
async function storeDamaged(p: TestPath, pushedAt: number, damage: Damage): Promise<void> {
  await env.CACHE.put(`nar/${p.fileName}`, p.file);
  await env.CACHE.put(narInfoKey(p.hash), damagedBody(p, damage), { customMetadata: metaWithoutRefs(p, pushedAt) });
}

function keysOf(p: TestPath): string[] {
  return [narInfoKey(p.hash), `nar/${p.fileName}`];
}

function lastOf(batches: GcProgress[]): GcProgress {
  const last = batches.at(-1)!;
  expect(last.status).toBe("done");
  return last;
}

describe("a kept narinfo that cannot be read blocks the sweep", () => {
  it("keeps the 250 references and the NAR of a pinned path whose oversized narinfo has no references in its metadata", async () => {
    const clock = new TestClock();
    const refs = await Promise.all(Array.from({ length: 250 }, (_, i) => testPath(`wide-ref-${i}`)));
    for (const r of refs) await storePath(env.CACHE, r, clock.now - OLD);
    const top = await testPath("wide-top", { references: refs });
    // The metadata the Worker writes has no `r` for 250 references (they do not fit).
    expect(encodeNarInfoMeta(top.info, 0).r).toBeUndefined();
    await storeDamaged(top, clock.now - OLD, "oversized");
    await setPins({ release: { path: top.storePath, pinnedAt: clock.now } });
    const garbage = await testPath("wide-garbage");
    await storePath(env.CACHE, garbage, clock.now - OLD);
    const before = (await cacheKeys(env.CACHE)).sort();

    const dry = await collect(env.CACHE, gcSettings(), clock, { request: { dryRun: true } });
    expect(dry.flatMap((b) => [...b.found.paths, ...b.found.files])).toEqual([]);
    expect(lastOf(dry).result?.unreadable?.map((d) => d.key)).toEqual([narInfoKey(top.hash)]);

    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    expect((await cacheKeys(env.CACHE)).sort()).toEqual(before);
    expect(last.result).toMatchObject({ deletedPaths: 0, deletedNars: 0, unreadableCount: 1 });
    const [doc] = last.result!.unreadable!;
    expect(doc).toMatchObject({ key: narInfoKey(top.hash), path: top.storePath });
    expect(doc!.reason).toMatch(/more than the 1048576/);
    expect(last.totals.unreadable).toBe(1);
    expect(await env.CACHE.head(FENCE_KEY)).toBeNull();
    // The statistics keep the report too (the landing page and `GET /_api/v1/stats` read them).
    expect(last.stats?.lastGc?.unreadableCount).toBe(1);
  }, 60_000); // 251 paths written to R2 and the index one by one

  it.each<Damage>(["unparseable", "truncated", "foreign-url", "dot-dot-url"])("so does a kept narinfo whose body is %s", async (damage) => {
    const clock = new TestClock();
    const dep = await testPath(`dmg-dep-${damage}`);
    const top = await testPath(`dmg-top-${damage}`, { references: [dep] });
    const garbage = await testPath(`dmg-garbage-${damage}`);
    await storePath(env.CACHE, dep, clock.now - OLD);
    await storeDamaged(top, clock.now - DAY_MS, damage); // young: a root
    await storePath(env.CACHE, garbage, clock.now - OLD);
    const orphan = await testPath(`dmg-orphan-${damage}`);
    await env.CACHE.put(`nar/${orphan.fileName}`, orphan.file);
    const before = (await cacheKeys(env.CACHE)).sort();

    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    expect((await cacheKeys(env.CACHE)).sort()).toEqual(before);
    expect(last.result?.unreadable?.map((d) => d.key)).toEqual([narInfoKey(top.hash)]);
    expect(last.result?.unreadable?.[0]?.reason).toMatch(damage.endsWith("url") ? /URL/ : /does not parse/);
  });

  it.each([
    ["not JSON", () => "{not json"],
    ["without a pins object", () => JSON.stringify({ pin: {} })],
    ["with an entry that is not a pin", (p: TestPath) => JSON.stringify({ pins: { ok: { path: p.storePath, pinnedAt: 1 }, bad: { path: "/nix/store/x", pinnedAt: 1 } } })],
  ])("blocks when the pins document is %s, since a pin lost is a root lost", async (_label, pins) => {
    const clock = new TestClock();
    const pinned = await testPath("pin-damaged");
    await storePath(env.CACHE, pinned, clock.now - OLD);
    await env.CACHE.put(PINS_KEY, pins(pinned));
    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    for (const k of keysOf(pinned)) expect(await cacheKeys(env.CACHE)).toContain(k);
    expect(last.result?.unreadable?.map((d) => d.key)).toEqual([PINS_KEY]);
    expect(last.result?.unreadable?.[0]?.reason).toMatch(/pins document/);
  });

  it("blocks the deletions of a run whose second look finds an unreadable narinfo, fence or not", async () => {
    const clock = new TestClock();
    const garbage = await testPath("late-garbage");
    await storePath(env.CACHE, garbage, clock.now - OLD);
    const late = await testPath("late-damaged", { references: [garbage] });
    let written = false;
    const batches = await collect(env.CACHE, gcSettings({ uploadWindowMs: 60_000 }), clock, {
      between: async (_batch, progress) => {
        if (written || progress.run?.phase !== "wait") return;
        // Another writer, while the fence is up, stores a narinfo that needs the fenced path.
        expect(await env.CACHE.head(FENCE_KEY)).not.toBeNull();
        await storeDamaged(late, clock.now, "unparseable");
        written = true;
      },
    });
    expect(written).toBe(true);
    const last = lastOf(batches);
    for (const k of [...keysOf(garbage), ...keysOf(late)]) expect(await cacheKeys(env.CACHE)).toContain(k);
    expect(last.result).toMatchObject({ deletedPaths: 0, deletedNars: 0, unreadableCount: 1 });
    expect(last.result?.unreadable?.[0]?.key).toBe(narInfoKey(late.hash));
    expect(await env.CACHE.head(FENCE_KEY)).toBeNull();
  });

  it("names at most MAX_REPORTED_UNREADABLE documents and counts them all", async () => {
    const clock = new TestClock();
    const count = MAX_REPORTED_UNREADABLE + 5;
    for (let i = 0; i < count; i++) await storeDamaged(await testPath(`many-${i}`), clock.now, "truncated");
    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    expect(last.result?.unreadableCount).toBe(count);
    expect(last.result?.unreadable).toHaveLength(MAX_REPORTED_UNREADABLE);
  });

  it("is reported by POST /_api/v1/gc with the store path, the key and the reason", async () => {
    const now = Date.now();
    const top = await testPath("api-damaged");
    await storeDamaged(top, now, "unparseable");
    const ADMIN = "test-admin-token";
    const gc = (body: unknown) =>
      callWith({ ADMIN_TOKEN: ADMIN, GC_UPLOAD_WINDOW_SECONDS: "1" }, "/_api/v1/gc", {
        method: "POST",
        body: JSON.stringify(body),
        headers: { Authorization: `Bearer ${ADMIN}` },
      });
    let answer = (await (await gc({ olderThanSeconds: 86400 })).json()) as { status: string; run: { id: string }; result?: unknown };
    for (let i = 0; answer.status !== "done" && i < 20; i++) {
      answer = (await (await gc({ runId: answer.run.id })).json()) as typeof answer;
    }
    expect(answer.result).toMatchObject({
      deletedPaths: 0,
      unreadableCount: 1,
      unreadable: [{ key: narInfoKey(top.hash), path: top.storePath, reason: expect.stringMatching(/NarSize/) }],
    });
  });
});

describe("what is not kept, or not the collector's, fails safe too", () => {
  it("deletes an unreadable narinfo nothing keeps, and its NAR when no kept narinfo names it", async () => {
    const clock = new TestClock();
    const kept = await testPath("kept-fine");
    await storePath(env.CACHE, kept, clock.now - DAY_MS);
    const sharing = await testPath("dead-sharing", { nar: kept.nar }); // same NAR file as `kept`
    const dead = await testPath("dead-damaged");
    await storeDamaged(sharing, clock.now - OLD, "oversized");
    await storeDamaged(dead, clock.now - OLD, "unparseable");

    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    expect((await cacheKeys(env.CACHE)).sort()).toEqual(keysOf(kept).sort());
    expect(last.result).toMatchObject({ deletedPaths: 2, deletedNars: 1, unreadableCount: 0 });
  });

  it.each<[string, (meta: Record<string, string>) => void]>([
    ["a reference that is not a hash part", (m) => void (m.r = `${m.r} ../../evil`)],
    ["an empty reference between two spaces", (m) => void (m.r = `${m.r}  `)],
    ["no NAR file name", (m) => void delete m.u],
    ["a NAR file name that is not one", (m) => void (m.u = `../nar/${m.u}`)],
    ["a NAR file name with a stray suffix", (m) => void (m.u = `${m.u}.evil`)],
    ["another layout version", (m) => void (m.v = "2")],
  ])("reads the body of a kept narinfo whose metadata has %s, and keeps what it names", async (_label, damage) => {
    const clock = new TestClock();
    const dep = await testPath("meta-dep");
    const top = await testPath("meta-top", { references: [dep] });
    const garbage = await testPath("meta-garbage");
    await storePath(env.CACHE, dep, clock.now - OLD);
    await storePath(env.CACHE, garbage, clock.now - OLD);
    await env.CACHE.put(`nar/${top.fileName}`, top.file);
    const meta = encodeNarInfoMeta(top.info, clock.now - OLD);
    damage(meta);
    await env.CACHE.put(narInfoKey(top.hash), formatNarInfo(top.info), { customMetadata: meta });
    await setPins({ top: { path: top.storePath, pinnedAt: clock.now } });

    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    expect((await cacheKeys(env.CACHE)).sort()).toEqual([...keysOf(top), ...keysOf(dep)].sort());
    expect(last.result).toMatchObject({ deletedPaths: 1, deletedNars: 1, unreadableCount: 0 });
    // The collector wrote the metadata the body implies, so the next run lists it.
    const fixed = decodeNarInfoMeta((await env.CACHE.head(narInfoKey(top.hash)))!.customMetadata);
    expect(fixed).toMatchObject({ refs: [dep.hash], narFile: top.fileName });
  });

  it("keeps a path the index does not know whose metadata push time does not parse as pushed when R2 stored it", async () => {
    const clock = new TestClock();
    const p = await testPath("bad-push-time");
    await storePath(env.CACHE, p, clock.now - OLD, { indexed: false });
    const stored = (await env.CACHE.get(narInfoKey(p.hash)))!;
    await env.CACHE.put(narInfoKey(p.hash), await stored.text(), { customMetadata: { ...stored.customMetadata, p: "-1" } });
    lastOf(await collect(env.CACHE, gcSettings(), clock));
    for (const k of keysOf(p)) expect(await cacheKeys(env.CACHE)).toContain(k);
  });

  it("never deletes objects whose keys are not exactly the layout's", async () => {
    const clock = new TestClock();
    const p = await testPath("layout");
    const fileHash = p.fileName.slice(0, 52);
    const strays = [`nar/${fileHash}.nar.evil`, `nar/${fileHash}.narx`, `nar/${fileHash}.nar/x`, `${"e".repeat(32)}.ls`, `${"E".repeat(32)}.narinfo`];
    for (const key of strays) await env.CACHE.put(key, "x");
    const last = lastOf(await collect(env.CACHE, gcSettings(), clock));
    expect((await cacheKeys(env.CACHE)).sort()).toEqual([...strays].sort());
    expect(last.result).toMatchObject({ deletedPaths: 0, deletedNars: 0 });
  });

  it("refuses to build a fence from a draft that has gone missing", async () => {
    // Announce in two batches: the first writes a draft; delete it before the second reads it.
    const clock = new TestClock();
    for (let i = 0; i < 20; i++) await storePath(env.CACHE, await testPath(`draft-${i}`), clock.now - OLD);
    let removed = false;
    await expect(
      collect(env.CACHE, gcSettings({ uploadWindowMs: 60_000 }), clock, {
        // Small batches: the fence is built over several, through a draft.
        limits: { operations: 20, entries: 5 },
        between: async (_batch, progress) => {
          if (removed || progress.run?.phase !== "announce") return;
          const drafts = (await env.CACHE.list({ prefix: "_gc/runs/" })).objects.filter((o) => o.key.includes("/draft-"));
          if (drafts.length === 0) return;
          await env.CACHE.delete(drafts.map((o) => o.key));
          removed = true;
        },
      }),
    ).rejects.toThrow(/fence draft/);
    expect(removed).toBe(true);
    expect(await env.CACHE.head(FENCE_KEY)).toBeNull();
    expect((await cacheKeys(env.CACHE)).filter((k) => k.endsWith(".narinfo"))).toHaveLength(20);
  });
});

// ---- the property ------------------------------------------------------------------------

interface PathSpec {
  refs: number[];
  ageDays: number;
  pinned: boolean;
  /** Stored unreadable (its metadata without `r`), and how. */
  damage: Damage | null;
  /** Stored without any metadata (another writer): R2's upload time counts, so it is young. */
  legacy: boolean;
}

function pathSpec(i: number): fc.Arbitrary<PathSpec> {
  const earlier = Array.from({ length: i }, (_, j) => j);
  return fc.record({
    refs: i === 0 ? fc.constant([]) : fc.subarray(earlier, { maxLength: Math.min(3, i) }),
    ageDays: fc.oneof(fc.integer({ min: 0, max: RETENTION_DAYS - 1 }), fc.integer({ min: RETENTION_DAYS + 1, max: 400 })),
    pinned: fc.integer({ min: 0, max: 7 }).map((x) => x === 0),
    // Oversized bodies are a megabyte each: rarer, to keep the run short.
    damage: fc.option(fc.constantFrom<Damage>("unparseable", "unparseable", "truncated", "foreign-url", "dot-dot-url", "oversized"), { freq: 4 }),
    legacy: fc.integer({ min: 0, max: 9 }).map((x) => x === 0),
  });
}

const scenario = fc.integer({ min: 1, max: 14 }).chain((n) =>
  fc.record({ salt: fc.nat(), paths: fc.tuple(...Array.from({ length: n }, (_, i) => pathSpec(i))), interrupted: fc.boolean() }),
);

async function clearBucket(): Promise<void> {
  await clearIndex();
  for (;;) {
    const page = await env.CACHE.list({ limit: 1000 });
    if (page.objects.length === 0) return;
    await env.CACHE.delete(page.objects.map((o) => o.key));
  }
}

function closure(roots: Iterable<number>, refsOf: (i: number) => readonly number[]): Set<number> {
  const live = new Set<number>();
  const stack = [...roots];
  while (stack.length > 0) {
    const i = stack.pop()!;
    if (live.has(i)) continue;
    live.add(i);
    stack.push(...refsOf(i));
  }
  return live;
}

describe("garbage collection of random graphs with unreadable narinfos", () => {
  it("keeps every narinfo and NAR reachable from a kept root and names the unreadable kept narinfos it can reach", async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        await clearBucket();
        const clock = new TestClock();
        const paths: TestPath[] = [];
        for (const [i, spec] of s.paths.entries()) {
          const p = await testPath(`fs-${s.salt}-${i}`, { references: spec.refs.map((j) => paths[j]!) });
          paths.push(p);
          const pushedAt = clock.now - spec.ageDays * DAY_MS;
          if (spec.damage !== null) await storeDamaged(p, pushedAt, spec.damage);
          else if (spec.legacy) {
            await env.CACHE.put(`nar/${p.fileName}`, p.file);
            await env.CACHE.put(narInfoKey(p.hash), formatNarInfo(p.info));
          } else await storePath(env.CACHE, p, pushedAt);
        }
        const pins = Object.fromEntries(s.paths.flatMap((spec, i) => (spec.pinned ? [[`pin-${i}`, { path: paths[i]!.storePath, pinnedAt: clock.now }]] : [])));
        await setPins(pins);
        const roots = s.paths.flatMap((spec, i) => (spec.legacy && spec.damage === null) || spec.ageDays < RETENTION_DAYS || spec.pinned ? [i] : []);
        // In the ORIGINAL graph: the references of an unreadable narinfo count.
        const live = closure(roots, (i) => s.paths[i]!.refs);
        // What the collector can know is kept: it cannot follow an unreadable narinfo. Each
        // unreadable one in there is reported; those only an unreadable one reaches may not be.
        const seen = closure(roots, (i) => (s.paths[i]!.damage === null ? s.paths[i]!.refs : []));
        const unreadableKept = [...seen].filter((i) => s.paths[i]!.damage !== null).map((i) => narInfoKey(paths[i]!.hash));
        const before = (await cacheKeys(env.CACHE)).sort();

        const batches = await collect(env.CACHE, gcSettings({ uploadWindowMs: 60_000 }), clock, s.interrupted ? { limits: { operations: 40, entries: 5 } } : {});
        const last = lastOf(batches);
        const after = new Set(await cacheKeys(env.CACHE));
        for (const i of live) for (const k of keysOf(paths[i]!)) expect(after.has(k), `${k} of kept path ${i}`).toBe(true);
        const reported = (last.result?.unreadable ?? []).map((d) => d.key).sort();
        expect(reported).toEqual([...new Set(unreadableKept)].sort());
        expect(last.result?.unreadableCount).toBe(reported.length);
        // Every unreadable kept narinfo is in `seen` or reached through one that is.
        expect(unreadableKept.length > 0).toBe([...live].some((i) => s.paths[i]!.damage !== null));
        if (unreadableKept.length > 0) {
          expect([...after].sort()).toEqual(before);
        } else {
          // Nothing kept is unreadable: exactly the closure stays (unreadable garbage goes).
          const expected = new Set([...live].flatMap((i) => keysOf(paths[i]!)));
          expect([...after].sort()).toEqual([...expected].sort());
        }
        expect(await env.CACHE.head(FENCE_KEY)).toBeNull();
        // The index: every row has its narinfo object, for the same store path; a blocked
        // run removed no row.
        expect(await indexProblems()).toEqual([]);
        if (unreadableKept.length > 0) {
          const indexed = s.paths.flatMap((spec, i) => (spec.damage === null && !spec.legacy ? [paths[i]!.hash] : []));
          const rows = (await env.DB.prepare("SELECT hash FROM paths").all<{ hash: string }>()).results.map((r) => r.hash);
          expect(rows.sort()).toEqual([...new Set(indexed)].sort());
        }
      }),
      { numRuns: 25 },
    );
  }, 300_000);
});
