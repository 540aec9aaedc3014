// The pieces of garbage collection on their own: the mark set that survives between
// batches as bytes, the fence's bisection, the narinfo metadata layout, and how batches
// exclude each other and recover from a batch that never finished.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { NIX32_ALPHABET } from "../../src/nix/nix32.ts";
import { KEY_ABSENT, KEY_EXPANDED, KEY_MEMBER, KeySet } from "../../src/gc/key-set.ts";
import { formatMarkSets, parseMarkSets } from "../../src/gc/mark-sets.ts";
import { packedContains } from "../../src/gc/packed-keys.ts";
import { LEASE_MS, runGcBatch } from "../../src/gc/collector.ts";
import { parseState } from "../../src/gc/run-state.ts";
import { loadStatsView } from "../../src/gc/stats.ts";
import { parseGcSettings } from "../../src/gc/settings.ts";
import { readGcDocument, writeGcDocument } from "../../src/storage/gc-documents.ts";
import { decodeNarInfoMeta, encodeNarInfoMeta, MAX_METADATA_BYTES } from "../../src/storage/narinfo-meta.ts";
import { testPath } from "../helpers/worker.ts";
import { cacheKeys, collect, DAY_MS, gcSettings, storePath, TestClock } from "../helpers/gc.ts";

afterEach(() => reset());

const key32 = fc.string({ unit: fc.constantFrom(...NIX32_ALPHABET), minLength: 32, maxLength: 32 });

describe("KeySet", () => {
  it("holds exactly what was added, with flags, across growth and a round trip through bytes", () => {
    fc.assert(
      fc.property(fc.uniqueArray(key32, { maxLength: 3000 }), fc.array(key32, { maxLength: 200 }), fc.nat(), (keys, others, seed) => {
        const set = KeySet.create(32, 0, seed);
        keys.forEach((k, i) => {
          expect(set.add(k)).toBe(true);
          if (i % 3 === 0) set.setExpanded(k);
        });
        for (const k of keys) expect(set.add(k)).toBe(false);
        const copy = KeySet.fromBuffer(set.words.slice().buffer, 32)!;
        expect(copy.size).toBe(keys.length);
        keys.forEach((k, i) => {
          expect(copy.has(k)).toBe(true);
          expect(copy.isExpanded(k)).toBe(i % 3 === 0);
        });
        const known = new Set(keys);
        for (const k of others) expect(copy.has(k)).toBe(known.has(k));
      }),
      { numRuns: 40 },
    );
  });

  it("says of each key whether it is absent, a member, or a member flagged expanded", () => {
    const set = KeySet.create(32);
    const a = "0".repeat(32);
    expect(set.state(a)).toBe(KEY_ABSENT);
    set.add(a);
    expect(set.state(a)).toBe(KEY_MEMBER);
    expect(set.isExpanded(a)).toBe(false);
    set.setExpanded(a);
    expect(set.state(a)).toBe(KEY_EXPANDED);
    expect(set.add(a)).toBe(false);
    expect(set.state(a)).toBe(KEY_EXPANDED);
    // setExpanded adds a key that was absent.
    const b = "1".repeat(32);
    set.setExpanded(b);
    expect(set.state(b)).toBe(KEY_EXPANDED);
    expect(set.state("e".repeat(32))).toBe(KEY_ABSENT);
  });

  it("rejects strings that are not keys, and bytes that are not a set", () => {
    const set = KeySet.create(32);
    expect(set.has("e".repeat(32))).toBe(false); // e is not in the nix32 alphabet
    expect(set.has("0".repeat(31))).toBe(false);
    expect(() => set.add("E".repeat(32))).toThrow(RangeError);
    expect(KeySet.fromBuffer(new ArrayBuffer(64), 32)).toBeNull();
    expect(KeySet.fromBuffer(set.words.slice().buffer, 52)).toBeNull();
  });

  it("adds keys from a packed string as add does them one by one, and refuses a short or foreign tail", () => {
    fc.assert(
      fc.property(fc.array(key32, { maxLength: 300 }), fc.nat(), (keys, seed) => {
        const one = KeySet.create(32, 0, seed);
        const packed = KeySet.create(32, 0, seed);
        const text = keys.join("");
        for (let i = 0; i < keys.length; i++) expect(packed.addAt(text, i * 32)).toBe(one.add(keys[i]!));
        expect(packed.size).toBe(one.size);
        for (const k of keys) expect(packed.has(k)).toBe(true);
      }),
      { numRuns: 40 },
    );
    // Both sets and the queues in one object read back as they were (gc/mark-sets.ts).
    const live = KeySet.create(32);
    const nars = KeySet.create(52);
    live.addAt(`${"0".repeat(32)}${"1".repeat(32)}`, 32);
    nars.add("2".repeat(52));
    const queues = { queue: "3".repeat(64), unindexed: "", unlisted: "4".repeat(32) };
    const both = parseMarkSets(formatMarkSets({ live, nars, queues }))!;
    expect([both.live.has("1".repeat(32)), both.live.has("0".repeat(32)), both.nars.has("2".repeat(52))]).toEqual([true, false, true]);
    expect(both.queues).toEqual(queues);
    expect(parseMarkSets(live.words.slice().buffer)).toBeNull();
    expect(parseMarkSets(formatMarkSets({ live, nars, queues }).slice(0, -4))).toBeNull();
    const set = KeySet.create(32);
    expect(() => set.addAt("0".repeat(40), 32)).toThrow(RangeError);
    expect(() => set.addAt(`${"0".repeat(31)}E`, 0)).toThrow(RangeError);
  });
});

describe("the fence's bisection", () => {
  it("finds exactly the keys of a sorted concatenation", () => {
    fc.assert(
      fc.property(fc.uniqueArray(key32, { maxLength: 200 }), fc.array(key32, { maxLength: 20 }), (keys, probes) => {
        const packed = [...keys].sort().join("");
        for (const k of keys) expect(packedContains(packed, 32, k)).toBe(true);
        for (const k of probes) expect(packedContains(packed, 32, k)).toBe(keys.includes(k));
        expect(packedContains(packed, 32, "0".repeat(31))).toBe(false);
      }),
    );
  });
});

describe("narinfo metadata", () => {
  it("records push time, references (not the path itself), NAR and sizes", async () => {
    const dep = await testPath("meta-dep");
    const p = await testPath("meta", { references: [dep], selfReference: true });
    const meta = decodeNarInfoMeta(encodeNarInfoMeta(p.info, 1234))!;
    expect(meta).toEqual({ pushed: 1234, refs: [dep.hash], narFile: p.fileName, fileSize: p.file.length, narSize: p.nar.length, name: "meta" });
  });

  it("leaves out references that do not fit R2's metadata limit rather than a part of them", async () => {
    const refs = await Promise.all(Array.from({ length: 300 }, (_, i) => testPath(`meta-ref-${i}`)));
    const p = await testPath("meta-many", { references: refs });
    const raw = encodeNarInfoMeta(p.info, 1);
    expect(Object.entries(raw).reduce((n, [k, v]) => n + k.length + v.length, 0)).toBeLessThanOrEqual(MAX_METADATA_BYTES);
    expect(decodeNarInfoMeta(raw)!.refs).toBeNull();
  });

  it("is null for objects stored without it", () => {
    expect(decodeNarInfoMeta(undefined)).toBeNull();
    expect(decodeNarInfoMeta({})).toBeNull();
    expect(decodeNarInfoMeta({ v: "1", p: "x" })).toBeNull();
  });
});

describe("retention settings", () => {
  it("take defaults, decimals, zero and off, and refuse nonsense naming the setting", () => {
    expect(parseGcSettings({}).retentionMs).toBe(30 * DAY_MS);
    expect(parseGcSettings({ GC_RETENTION_DAYS: "0.5" }).retentionMs).toBe(DAY_MS / 2);
    expect(parseGcSettings({ GC_RETENTION_DAYS: "0" }).retentionMs).toBe(0);
    expect(parseGcSettings({ GC_RETENTION_DAYS: "off" }).retentionMs).toBeNull();
    expect(() => parseGcSettings({ GC_RETENTION_DAYS: "-1" })).toThrow(/GC_RETENTION_DAYS/);
    expect(() => parseGcSettings({ GC_UPLOAD_WINDOW_SECONDS: "0" })).toThrow(/GC_UPLOAD_WINDOW_SECONDS/);
    expect(() => parseGcSettings({ GC_NAR_GRACE_HOURS: "a day" })).toThrow(/GC_NAR_GRACE_HOURS/);
  });
});

describe("batches", () => {
  it("a batch finding the state leased by another answers busy and changes nothing", async () => {
    const clock = new TestClock();
    await writeGcDocument(env.DB, "state", JSON.stringify({ run: null, leaseUntil: clock.now + LEASE_MS, lastStartedAt: null, lastPaths: 0, last: null }));
    const before = await cacheKeys(env.CACHE);
    const stateBefore = await readGcDocument(env.DB, "state");
    const progress = await runGcBatch({ bucket: env.CACHE, db: env.DB, settings: gcSettings(), clock: clock.read }, { dryRun: false, trigger: "manual" });
    expect(progress.status).toBe("busy");
    expect(await cacheKeys(env.CACHE)).toEqual(before);
    expect(await readGcDocument(env.DB, "state")).toEqual(stateBefore);
  });

  it("after a batch that never finished, the run goes on with smaller batches and ends correctly", async () => {
    const clock = new TestClock();
    const kept = await testPath("shrink-kept");
    const gone = await testPath("shrink-gone");
    await storePath(env.CACHE, kept, clock.now - DAY_MS);
    await storePath(env.CACHE, gone, clock.now - 90 * DAY_MS);
    // A bucket that fails every call after the lease was taken: the batch dies mid-way, as
    // one stopped by the platform would.
    let calls = 0;
    const dying = new Proxy(env.CACHE, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          if (++calls > 3) throw new Error("stopped");
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    await expect(runGcBatch({ bucket: dying, db: env.DB, settings: gcSettings(), clock: clock.read }, { dryRun: false, trigger: "manual" })).rejects.toThrow();
    // Within the lease the state is busy; after it, the next batch takes over, smaller.
    expect((await runGcBatch({ bucket: env.CACHE, db: env.DB, settings: gcSettings(), clock: clock.read }, { dryRun: false, trigger: "manual" })).status).toBe("busy");
    clock.advance(LEASE_MS);
    const batches = await collect(env.CACHE, gcSettings(), clock);
    expect(batches.at(-1)!.status).toBe("done");
    const keys = await cacheKeys(env.CACHE);
    expect(keys).toContain(`${kept.hash}.narinfo`);
    expect(keys).not.toContain(`${gone.hash}.narinfo`);
    expect(parseState((await readGcDocument(env.DB, "state"))!.text).last?.deletedPaths).toBe(1);
  });

  it("the cron rule starts a run only when the interval has passed, and never with retention off", async () => {
    const clock = new TestClock();
    const ctx = { bucket: env.CACHE, db: env.DB, clock: clock.read };
    const cron = { dryRun: false, trigger: "cron" as const, onlyIfDue: true };
    expect((await runGcBatch({ ...ctx, settings: gcSettings({ retentionMs: null }) }, cron)).status).toBe("idle");
    // A run's first batch starts it; over an empty bucket the next one finishes it.
    expect((await runGcBatch({ ...ctx, settings: gcSettings() }, cron)).status).toBe("running");
    expect((await runGcBatch({ ...ctx, settings: gcSettings() }, cron)).status).toBe("done");
    clock.advance(DAY_MS / 2);
    expect((await runGcBatch({ ...ctx, settings: gcSettings() }, cron)).status).toBe("idle");
    clock.advance(DAY_MS / 2);
    expect((await runGcBatch({ ...ctx, settings: gcSettings() }, cron)).status).toBe("running");
    expect((await runGcBatch({ ...ctx, settings: gcSettings() }, cron)).status).toBe("done");
  });

  it("a cache from before the D1 state has its R2 state and statistics moved into D1, once", async () => {
    const clock = new TestClock();
    const ctx = { bucket: env.CACHE, db: env.DB, clock: clock.read, settings: gcSettings() };
    const cron = { dryRun: false, trigger: "cron" as const, onlyIfDue: true };
    const last = { runId: "old-run", trigger: "cron", startedAt: clock.now - 3_600_000, finishedAt: clock.now - 3_000_000, cutoff: 0, deletedPaths: 4, deletedNars: 4, freedBytes: 4096 };
    // An hour ago: with a daily interval, the cron is not due, which only the moved state says.
    const legacyState = { run: null, leaseUntil: null, lastStartedAt: clock.now - 3_600_000, lastPaths: 9, last };
    const legacyStats = { countedAt: last.finishedAt, paths: 9, narFiles: 9, narBytes: 90_000, savedBytes: 10, pathsWithoutSizes: 0, lastGc: last };
    await env.CACHE.put("_gc/state.json", JSON.stringify(legacyState));
    await env.CACHE.put("_gc/stats.json", JSON.stringify(legacyStats));
    await env.CACHE.put("_gc/dry-run.json", JSON.stringify({ ...legacyState, last: null }));
    await env.CACHE.put("_gc/index-stats.json", "{}");
    expect((await runGcBatch(ctx, cron)).status).toBe("idle");
    expect(parseState((await readGcDocument(env.DB, "state"))!.text)).toEqual(legacyState);
    expect((await loadStatsView(env.DB)).stats).toEqual(legacyStats);
    expect((await cacheKeys(env.CACHE)).filter((k) => k.startsWith("_gc/"))).toEqual([]);
    // Once: an R2 state appearing later is not read again.
    await env.CACHE.put("_gc/state.json", JSON.stringify({ ...legacyState, lastStartedAt: 0 }));
    expect((await runGcBatch(ctx, cron)).status).toBe("idle");
    expect(parseState((await readGcDocument(env.DB, "state"))!.text).lastStartedAt).toBe(legacyState.lastStartedAt);
  });

  it("a cache that never collected gets its state row from the first batch, so nothing is looked for in R2 again", async () => {
    const clock = new TestClock();
    const ctx = { bucket: env.CACHE, db: env.DB, clock: clock.read, settings: gcSettings({ retentionMs: null }) };
    expect((await runGcBatch(ctx, { dryRun: false, trigger: "cron", onlyIfDue: true })).status).toBe("idle");
    expect(parseState((await readGcDocument(env.DB, "state"))!.text)).toEqual(parseState(null));
  });
});
