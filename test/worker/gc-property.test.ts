// Property: for random DAGs of store paths with random ages, pins, shared NARs, narinfos
// stored without GC metadata, paths refreshed in the index only, orphaned NARs and listings, a garbage collection leaves
// exactly the closure of the young and pinned paths, and every remaining narinfo has its
// NAR and its references. Run once in one go (after a dry run that must change nothing and
// report exactly what then goes), and once interrupted after every small batch, with paths
// pushed and pinned through the Worker's own routes between batches. Paths are indexed (a
// row in D1, as a push records it) except the legacy ones; after every collection every
// row of the index has its narinfo object, for the same store path. Throughout, a CDN (or
// any client cache) may serve every narinfo for its max-age after it was deleted: each NAR
// such a copy names must still be in the bucket after every batch.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatNarInfo, parseNarInfo } from "../../src/nix/narinfo.ts";
import { FENCE_KEY } from "../../src/storage/gc-store.ts";
import { callWith, putNar, putNarInfo, testPath, type TestPath } from "../helpers/worker.ts";
import { cacheKeys, clearIndex, collect, DAY_MS, gcSettings, indexProblems, setPins, storePath, TestClock } from "../helpers/gc.ts";
import type { GcProgress } from "../../src/gc/collector.ts";
import { NARINFO_MAX_AGE_SECONDS } from "../../src/http/representation.ts";

const RETENTION_DAYS = 30;
const ADMIN = "test-admin-token";

interface PathSpec {
  refs: number[];
  ageDays: number;
  pinned: boolean;
  /** Stored without GC metadata (as before the Worker recorded it): R2's upload time counts. */
  legacy: boolean;
  /** Pushed again a day ago by a push that found it: only its row's push time moved. */
  refreshed: boolean;
  /** Same NAR bytes as this earlier path (two store paths, one NAR file). */
  shareNar: number | null;
  listing: boolean;
}

interface Scenario {
  salt: number;
  paths: PathSpec[];
  orphanNars: number;
  orphanListings: number;
}

/** A push or pin through the Worker while the collection runs. */
interface Action {
  afterBatch: number;
  kind: "push" | "pin";
  /** Indices into all paths known when the action runs (initial, then pushed). */
  targets: number[];
}

function pathSpec(i: number): fc.Arbitrary<PathSpec> {
  const earlier = Array.from({ length: i }, (_, j) => j);
  return fc.record({
    refs: i === 0 ? fc.constant([]) : fc.subarray(earlier, { maxLength: Math.min(4, i) }),
    ageDays: fc.oneof(fc.integer({ min: 0, max: RETENTION_DAYS - 1 }), fc.integer({ min: RETENTION_DAYS + 1, max: 400 })),
    pinned: fc.integer({ min: 0, max: 9 }).map((x) => x === 0),
    legacy: fc.integer({ min: 0, max: 14 }).map((x) => x === 0),
    refreshed: fc.integer({ min: 0, max: 7 }).map((x) => x === 0),
    shareNar: i === 0 ? fc.constant(null) : fc.option(fc.integer({ min: 0, max: i - 1 }), { freq: 6 }),
    listing: fc.boolean(),
  });
}

const scenario: fc.Arbitrary<Scenario> = fc.integer({ min: 1, max: 22 }).chain((n) =>
  fc.record({
    salt: fc.nat(),
    paths: fc.tuple(...Array.from({ length: n }, (_, i) => pathSpec(i))),
    orphanNars: fc.integer({ min: 0, max: 3 }),
    orphanListings: fc.integer({ min: 0, max: 2 }),
  }),
);

const actions: fc.Arbitrary<Action[]> = fc.array(
  fc.record({
    afterBatch: fc.integer({ min: 0, max: 40 }),
    kind: fc.constantFrom<"push" | "pin">("push", "push", "pin"),
    targets: fc.array(fc.nat(), { maxLength: 3 }),
  }),
  { maxLength: 6 },
);

async function clearBucket(bucket: R2Bucket): Promise<void> {
  await clearIndex();
  for (;;) {
    const page = await bucket.list({ limit: 1000 });
    if (page.objects.length === 0) return;
    await bucket.delete(page.objects.map((o) => o.key));
  }
}

interface Built {
  paths: TestPath[];
  specs: PathSpec[];
  orphanKeys: string[];
}

async function build(s: Scenario, clock: TestClock): Promise<Built> {
  const bucket = env.CACHE;
  const paths: TestPath[] = [];
  for (const [i, spec] of s.paths.entries()) {
    const nar = spec.shareNar === null ? undefined : paths[spec.shareNar]!.nar;
    const p = await testPath(`p-${s.salt}-${i}`, { references: spec.refs.map((j) => paths[j]!), ...(nar === undefined ? {} : { nar }) });
    paths.push(p);
    if (spec.legacy) {
      await bucket.put(`nar/${p.fileName}`, p.file);
      await bucket.put(`${p.hash}.narinfo`, formatNarInfo(p.info));
    } else {
      await storePath(bucket, p, clock.now - spec.ageDays * DAY_MS);
      if (spec.refreshed) await env.DB.prepare("UPDATE paths SET pushed_at = ?2 WHERE hash = ?1").bind(p.hash, clock.now - DAY_MS).run();
    }
    if (spec.listing) await bucket.put(`${p.hash}.ls`, '{"version":1,"root":{"type":"regular"}}');
  }
  const pins = Object.fromEntries(
    s.paths.flatMap((spec, i) => (spec.pinned ? [[`pin-${i}`, { path: paths[i]!.storePath, pinnedAt: clock.now }]] : [])),
  );
  await setPins(pins);
  const orphanKeys: string[] = [];
  for (let i = 0; i < s.orphanNars; i++) {
    const p = await testPath(`orphan-${s.salt}-${i}`);
    await bucket.put(`nar/${p.fileName}`, p.file);
    orphanKeys.push(`nar/${p.fileName}`);
  }
  for (let i = 0; i < s.orphanListings; i++) {
    const p = await testPath(`orphan-ls-${s.salt}-${i}`);
    await bucket.put(`${p.hash}.ls`, "{}");
    orphanKeys.push(`${p.hash}.ls`);
  }
  return { paths, specs: s.paths, orphanKeys };
}

/** Indices of `roots` and everything they reference, transitively. */
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

function initialRoots(specs: readonly PathSpec[]): number[] {
  return specs.flatMap((spec, i) => (spec.legacy || spec.refreshed || spec.ageDays < RETENTION_DAYS || spec.pinned ? [i] : []));
}

/** The bucket holds exactly `live` (narinfos, NARs, listings), each narinfo complete. */
async function expectExactly(paths: readonly TestPath[], live: Set<number>, listings: Set<number>, ignoredNars: Set<string> = new Set()): Promise<void> {
  const keys = await cacheKeys(env.CACHE);
  const narinfos = keys.filter((k) => k.endsWith(".narinfo")).sort();
  const nars = keys.filter((k) => k.startsWith("nar/") && !ignoredNars.has(k)).sort();
  const ls = keys.filter((k) => k.endsWith(".ls")).sort();
  const liveList = [...live].map((i) => paths[i]!);
  expect(narinfos).toEqual([...new Set(liveList.map((p) => `${p.hash}.narinfo`))].sort());
  expect(nars).toEqual([...new Set(liveList.map((p) => `nar/${p.fileName}`))].filter((k) => !ignoredNars.has(k)).sort());
  expect(ls).toEqual([...live].filter((i) => listings.has(i)).map((i) => `${paths[i]!.hash}.ls`).sort());
  // Every remaining narinfo is complete: its NAR and every reference are there.
  const present = new Set(keys);
  for (const key of narinfos) {
    const info = parseNarInfo(await (await env.CACHE.get(key))!.text());
    expect(present.has(info.url), `${key}: NAR ${info.url}`).toBe(true);
    for (const ref of info.references) expect(present.has(`${ref.slice(0, 32)}.narinfo`), `${key} → ${ref}`).toBe(true);
  }
  expect(await env.CACHE.head(FENCE_KEY)).toBeNull();
  // The index: every row has its narinfo object, for the same store path.
  expect(await indexProblems()).toEqual([]);
}

/**
 * A CDN in front of the bucket: it may go on serving a narinfo for NARINFO_MAX_AGE_SECONDS
 * after the narinfo was deleted (a copy fetched just before). `observe` is called after
 * every batch with the time that batch ran at: it sees which narinfos the batch deleted
 * (from the listing, not from what the collector reports) and checks that the NAR of every
 * copy that can still be served is in the bucket.
 */
class ServedCopies {
  /** narinfo key → when it was seen deleted, and the NAR its copies name. */
  readonly #deleted = new Map<string, { at: number; nar: string }>();
  #present = new Set<string>();
  deletions = 0;

  readonly #narOf: (hash: string) => string;

  constructor(narOf: (hash: string) => string) {
    this.#narOf = narOf;
  }

  async observe(at: number): Promise<void> {
    const keys = new Set(await cacheKeys(env.CACHE));
    for (const key of this.#present) {
      if (keys.has(key) || this.#deleted.has(key)) continue;
      this.#deleted.set(key, { at, nar: this.#narOf(key.slice(0, 32)) });
      this.deletions++;
    }
    this.#present = new Set([...keys].filter((k) => k.endsWith(".narinfo")));
    for (const [key, copy] of this.#deleted) {
      if (at >= copy.at + NARINFO_MAX_AGE_SECONDS * 1000) continue;
      expect(keys.has(copy.nar), `${key}, deleted ${(at - copy.at) / 1000} s ago, may still be served; its ${copy.nar} must be there`).toBe(true);
    }
  }
}

describe("garbage collection of random store path graphs", () => {
  it("keeps exactly the closure of young and pinned paths; a dry run first reports exactly what goes", async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        await clearBucket(env.CACHE);
        const clock = new TestClock();
        const { paths, specs, orphanKeys } = await build(s, clock);
        const live = closure(initialRoots(specs), (i) => specs[i]!.refs);
        const listings = new Set(specs.flatMap((spec, i) => (spec.listing ? [i] : [])));
        const settings = gcSettings({ narGraceMs: 30 * 60 * 1000 });

        const before = await cacheKeys(env.CACHE);
        const rowsBefore = await env.DB.prepare("SELECT count(*) AS n FROM paths").first<{ n: number }>();
        const dry = await collect(env.CACHE, settings, clock, { request: { dryRun: true } });
        expect(await cacheKeys(env.CACHE)).toEqual(before);
        expect(await env.DB.prepare("SELECT count(*) AS n FROM paths").first<{ n: number }>()).toEqual(rowsBefore);
        const garbage = paths.filter((_, i) => !live.has(i));
        const reported = dry.flatMap((b) => b.found.paths.map((p) => p.hash)).sort();
        expect(reported).toEqual([...new Set(garbage.map((p) => p.hash))].sort());
        const liveNars = new Set([...live].map((i) => `nar/${paths[i]!.fileName}`));
        const garbageFiles = [
          ...new Set(garbage.map((p) => `nar/${p.fileName}`).filter((k) => !liveNars.has(k))),
          ...orphanKeys,
        ].sort();
        expect(dry.flatMap((b) => b.found.files.map((f) => f.key)).sort()).toEqual(garbageFiles);

        const narOf = (hash: string): string => `nar/${paths.find((p) => p.hash === hash)!.fileName}`;
        const cdn = new ServedCopies(narOf);
        await cdn.observe(clock.now);
        let batchAt = clock.now;
        const run = await collect(env.CACHE, settings, clock, {
          perBatch: () => {
            batchAt = clock.now;
          },
          between: () => cdn.observe(batchAt),
        });
        await cdn.observe(batchAt);
        expect(cdn.deletions).toBe(new Set(garbage.map((p) => p.hash)).size);
        const last = run.at(-1)!;
        expect(last.status).toBe("done");
        await expectExactly(paths, live, listings);
        expect(last.stats?.paths).toBe(new Set([...live].map((i) => paths[i]!.hash)).size);
        expect(last.result?.deletedPaths).toBe(new Set(garbage.map((p) => p.hash)).size);
      }),
      { numRuns: 30 },
    );
  }, 600_000);

  it("stays correct when interrupted after every small batch while paths are pushed and pinned", async () => {
    const LIMITS = { operations: 40, entries: 5 };
    await fc.assert(
      fc.asyncProperty(scenario, actions, async (s, acts) => {
        await clearBucket(env.CACHE);
        const clock = new TestClock();
        const { paths, specs } = await build(s, clock);
        const refsOf: number[][] = specs.map((spec) => spec.refs);
        const roots = new Set(initialRoots(specs));
        const listings = new Set(specs.flatMap((spec, i) => (spec.listing ? [i] : [])));
        const refusedNars = new Set<string>();
        let pushed = 0;
        let pinCount = 0;
        const cdn = new ServedCopies((hash) => `nar/${paths.find((p) => p.hash === hash)!.fileName}`);
        await cdn.observe(clock.now);
        let batchAt = clock.now;

        const between = async (batch: number, _progress: GcProgress): Promise<void> => {
          await cdn.observe(batchAt);
          for (const act of acts.filter((a) => a.afterBatch === batch)) {
            const targets = [...new Set(act.targets.map((t) => t % paths.length))];
            if (act.kind === "pin") {
              if (targets.length === 0) continue;
              const target = paths[targets[0]!]!;
              const res = await callWith({ ADMIN_TOKEN: ADMIN }, `/_api/v1/pins/mid-${pinCount++}`, {
                method: "PUT",
                body: JSON.stringify({ path: target.storePath }),
                headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
              });
              expect([200, 201, 422]).toContain(res.status);
              if (res.status !== 422) roots.add(targets[0]!);
              continue;
            }
            const p = await testPath(`new-${s.salt}-${pushed++}`, { references: targets.map((t) => paths[t]!) });
            const nar = await putNar(p);
            expect([201, 204]).toContain(nar.status);
            const res = await putNarInfo(p.hash, formatNarInfo(p.info));
            expect([201, 422]).toContain(res.status);
            if (res.status === 201) {
              paths.push(p);
              refsOf.push(targets);
              roots.add(paths.length - 1);
            } else {
              refusedNars.add(`nar/${p.fileName}`);
            }
          }
        };

        const batches = await collect(env.CACHE, gcSettings({ narGraceMs: 30 * 60 * 1000, uploadWindowMs: 60_000 }), clock, {
          between,
          perBatch: (operations) => {
            batchAt = clock.now;
            expect(operations).toBeLessThanOrEqual(LIMITS.operations);
          },
          limits: LIMITS,
        });
        await cdn.observe(batchAt);
        if (paths.length >= 10) expect(batches.length).toBeGreaterThan(5);
        const live = closure(roots, (i) => refsOf[i]!);
        // A refused push may leave its NAR (uploaded first): it is an orphan, collected
        // by a later run once older than the grace period.
        await expectExactly(paths, live, listings, refusedNars);
      }),
      { numRuns: 25 },
    );
  }, 600_000);
});
