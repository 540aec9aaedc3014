// The daily write-through budget: anonymous reads of upstream narinfos may make the Worker
// copy paths into the bucket, but never more than AGGREGATE_WRITE_THROUGH_DAILY_BYTES and
// _OBJECTS a UTC day. Against the real local R2 bucket and D1: the counters on their own
// (sequential and concurrent reservations, a new day), then whole
// reads through the Worker with a fake upstream (global fetch answered in-process from a
// map of files; the exchange with real upstream servers is in test/e2e/upstream-*.test.ts).
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { WorkerEnv } from "../../src/env.ts";
import { utf8 } from "../../src/nix/encoding.ts";
import { formatNarInfo, parseNarInfo } from "../../src/nix/narinfo.ts";
import { dayOf, reserve, usageOn, type Amount } from "../../src/storage/write-through-budget.ts";
import { SubrequestBudget } from "../../src/upstream/budget.ts";
import { judgeNarInfo, type LookupContext, type UpstreamHit } from "../../src/upstream/lookup.ts";
import { parseAggregation } from "../../src/upstream/settings.ts";
import { writeThrough } from "../../src/upstream/write-through.ts";
import { bearer, callWith, keys, signed, snapshot, testPath, TEST_PUBLIC_KEY_TEXT, type TestPath, resetAll } from "../helpers/worker.ts";

afterEach(async () => {
  vi.restoreAllMocks();
  await resetAll();
});

const DAY_MS = 24 * 3600 * 1000;
/** Noon UTC of a fixed day: the next day is one DAY_MS on. */
const NOON = Date.UTC(2030, 0, 15, 12);

/** Today's counters as the table holds them (the day of the last reservation the test made). */
async function stored(): Promise<Amount & { day: string }> {
  return (await env.DB.prepare("SELECT day, bytes, objects FROM usage WHERE counter = 'write-through' ORDER BY day DESC LIMIT 1").first<Amount & { day: string }>())!;
}

/** The bucket's objects, the usage table and the audit log: what a refused reservation must leave alone. */
async function everything(): Promise<unknown> {
  const usage = await env.DB.prepare("SELECT * FROM usage ORDER BY counter, day").all();
  return { objects: await snapshot(), usage: usage.results };
}

describe("the budget counters", () => {
  it("reserves until a limit would be passed, then refuses without changing anything", async () => {
    const limits = { bytes: 100, objects: 5 };
    expect(await reserve(env.DB, { bytes: 10, objects: 2 }, limits, NOON)).toMatchObject({ kind: "reserved", usage: { bytes: 10, objects: 2 } });
    expect(await reserve(env.DB, { bytes: 10, objects: 2 }, limits, NOON)).toMatchObject({ kind: "reserved", usage: { bytes: 20, objects: 4 } });
    // 6 objects would pass 5; 1 more still fits.
    const before = await everything();
    expect(await reserve(env.DB, { bytes: 10, objects: 2 }, limits, NOON)).toEqual({ kind: "spent", usage: { day: "2030-01-15", bytes: 20, objects: 4 } });
    expect(await everything()).toEqual(before);
    expect((await reserve(env.DB, { bytes: 80, objects: 1 }, limits, NOON)).kind).toBe("reserved");
    // Both limits reached exactly: nothing more, not even an empty-handed byte.
    expect((await reserve(env.DB, { bytes: 1, objects: 0 }, limits, NOON)).kind).toBe("spent");
    expect((await reserve(env.DB, { bytes: 0, objects: 1 }, limits, NOON)).kind).toBe("spent");
    expect(await stored()).toEqual({ day: "2030-01-15", bytes: 100, objects: 5 });
    // A reservation larger than a limit on its own never fits, on a day with nothing used either.
    expect(await reserve(env.DB, { bytes: 101, objects: 1 }, limits, NOON + DAY_MS)).toEqual({ kind: "spent", usage: { day: "2030-01-16", bytes: 0, objects: 0 } });
  });

  it("starts from zero on the next UTC day, and not a moment before", async () => {
    const limits = { bytes: 1000, objects: 2 };
    expect((await reserve(env.DB, { bytes: 1, objects: 2 }, limits, NOON)).kind).toBe("reserved");
    const endOfDay = Date.UTC(2030, 0, 15, 23, 59, 59, 999);
    expect((await reserve(env.DB, { bytes: 1, objects: 1 }, limits, endOfDay)).kind).toBe("spent");
    expect((await usageOn(env.DB, endOfDay)).objects).toBe(2);
    const nextDay = endOfDay + 1;
    expect(await usageOn(env.DB, nextDay)).toEqual({ day: "2030-01-16", bytes: 0, objects: 0 });
    expect(await reserve(env.DB, { bytes: 1, objects: 2 }, limits, nextDay)).toEqual({
      kind: "reserved",
      usage: { day: "2030-01-16", bytes: 1, objects: 2 },
    });
    expect(await stored()).toEqual({ day: "2030-01-16", bytes: 1, objects: 2 });
  });

  it("never lets concurrent reservations add up to more than the limits, and loses none that fit (property)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ bytes: fc.integer({ min: 0, max: 60 }), objects: fc.integer({ min: 0, max: 8 }) }),
        fc.array(fc.record({ bytes: fc.integer({ min: 0, max: 20 }), objects: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 12 }),
        async (limits, wants) => {
          await env.DB.prepare("DELETE FROM usage").run();
          const results = await Promise.all(wants.map((want) => reserve(env.DB, want, limits, NOON)));
          const granted = wants.filter((_, i) => results[i]!.kind === "reserved");
          const sum = granted.reduce((a, w) => ({ bytes: a.bytes + w.bytes, objects: a.objects + w.objects }), { bytes: 0, objects: 0 });
          expect(sum.bytes).toBeLessThanOrEqual(limits.bytes);
          expect(sum.objects).toBeLessThanOrEqual(limits.objects);
          // Every refusal was one that did not fit then: no race makes one fail.
          for (const r of results) expect(r.kind).not.toBe("contended");
          // The counters hold exactly what was granted: no lost update, no phantom.
          const usage = await usageOn(env.DB, NOON);
          expect({ bytes: usage.bytes, objects: usage.objects }).toEqual(sum);
        },
      ),
      { numRuns: 25 },
    );
  });

  it("grants every reservation that fits when many race", async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => reserve(env.DB, { bytes: 1, objects: 1 }, { bytes: 100, objects: 8 }, NOON)));
    expect(results.filter((r) => r.kind === "reserved").length).toBe(8);
    expect((await stored()).objects).toBe(8);
  });

  it("asks the caller's operation budget first", async () => {
    const ops = new SubrequestBudget(0);
    expect(await reserve(env.DB, { bytes: 1, objects: 1 }, { bytes: 10, objects: 10 }, NOON, (n) => ops.take(n))).toEqual({ kind: "contended" });
    expect(await usageOn(env.DB, NOON)).toEqual({ day: dayOf(NOON), bytes: 0, objects: 0 });
  });
});

// --- Whole reads, with a fake upstream ---------------------------------------------------

const UPSTREAM = "https://budget-upstream.test";

/** Answers global fetch from `files` (paths under UPSTREAM); records every URL asked. */
function fakeUpstream(files: Map<string, Uint8Array>): string[] {
  const asked: string[] = [];
  vi.spyOn(globalThis, "fetch").mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    asked.push(url);
    const body = url.startsWith(`${UPSTREAM}/`) ? files.get(url.slice(UPSTREAM.length + 1)) : undefined;
    if (body === undefined) return new Response("not found\n", { status: 404 });
    return new Response(init?.method === "HEAD" ? null : body, { status: 200, headers: { "Content-Length": String(body.length) } });
  });
  return asked;
}

/** Paths served by the fake upstream, signed with the key trusted for write-through. */
async function upstreamPaths(paths: TestPath[]): Promise<{ files: Map<string, Uint8Array>; narinfos: Map<string, string> }> {
  const files = new Map<string, Uint8Array>();
  const narinfos = new Map<string, string>();
  for (const p of paths) {
    const text = formatNarInfo(await signed(p.info));
    narinfos.set(p.hash, text);
    files.set(`${p.hash}.narinfo`, utf8(text));
    files.set(`nar/${p.fileName}`, p.file);
  }
  return { files, narinfos };
}

function settings(limits: { bytes?: number; objects?: number }): Record<string, string> {
  return {
    AGGREGATE_UPSTREAMS: UPSTREAM,
    AGGREGATE_WRITE_THROUGH_KEYS: TEST_PUBLIC_KEY_TEXT,
    ...(limits.bytes === undefined ? {} : { AGGREGATE_WRITE_THROUGH_DAILY_BYTES: String(limits.bytes) }),
    ...(limits.objects === undefined ? {} : { AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS: String(limits.objects) }),
  };
}

/** Bucket keys of copied paths (everything but the budget document). */
async function copiedKeys(): Promise<string[]> {
  return keys();
}

function pathKeys(p: TestPath): string[] {
  return [`${p.hash}.narinfo`, `nar/${p.fileName}`];
}

/** What a narinfo of `p` costs the budget when its NAR is copied too. */
async function cost(p: TestPath): Promise<number> {
  return p.file.length + utf8(formatNarInfo(await signed(p.info))).length;
}

async function read(vars: Record<string, string>, p: TestPath): Promise<Response> {
  const res = await callWith(vars, `/${p.hash}.narinfo`);
  expect(res.status).toBe(200);
  await res.arrayBuffer();
  return res;
}

describe("reads with write-through and a daily budget", () => {
  it("copy until the object budget is spent; later reads are still served but store nothing", async () => {
    const paths = await Promise.all(["b-one", "b-two", "b-three", "b-four"].map((n) => testPath(`budget-${n}`)));
    const { files } = await upstreamPaths(paths);
    fakeUpstream(files);
    const vars = settings({ objects: 4 });

    await read(vars, paths[0]!);
    await read(vars, paths[1]!);
    expect((await copiedKeys()).sort()).toEqual([...pathKeys(paths[0]!), ...pathKeys(paths[1]!)].sort());
    expect(await stored()).toMatchObject({ objects: 4, bytes: (await cost(paths[0]!)) + (await cost(paths[1]!)) });

    const warn = vi.spyOn(console, "warn");
    const spentAt = await snapshot();
    for (const p of [paths[2]!, paths[3]!, paths[2]!]) {
      const res = await read(vars, p);
      // Served through the upstream, as before the budget was spent.
      expect(res.headers.get("X-Upstream-Cache")).toBe(UPSTREAM);
    }
    // Not a key, not even the counters, changed.
    expect(await snapshot()).toEqual(spentAt);
    expect(warn.mock.calls.map((c) => String(c[0])).some((m) => /write-through budget is spent/.test(m))).toBe(true);
  });

  it("copy until the byte budget is spent (a path that does not fit is not copied, a smaller one still is)", async () => {
    const big = await testPath("budget-big", { nar: new Uint8Array(4096).fill(7) });
    const small = await testPath("budget-small");
    const { files } = await upstreamPaths([big, small]);
    fakeUpstream(files);
    const vars = settings({ bytes: (await cost(small)) + 100 });

    await read(vars, big);
    expect(await copiedKeys()).toEqual([]);
    await read(vars, small);
    expect((await copiedKeys()).sort()).toEqual(pathKeys(small).sort());
  });

  it("never store a referrer whose reference did not fit (closure integrity within the budget)", async () => {
    const dep = await testPath("budget-dep");
    const top = await testPath("budget-top", { references: [dep] });
    const { files } = await upstreamPaths([dep, top]);
    fakeUpstream(files);
    // Room for dep (2 objects) and one more object: top reserves its NAR and narinfo
    // together, so neither of them is stored.
    await read(settings({ objects: 3 }), top);
    expect((await copiedKeys()).sort()).toEqual(pathKeys(dep).sort());
  });

  it("copy nothing with a budget of 0", async () => {
    const p = await testPath("budget-zero");
    const { files } = await upstreamPaths([p]);
    fakeUpstream(files);
    await read(settings({ objects: 0 }), p);
    expect(await keys()).toEqual([]);
  });

  it("resume on the next UTC day (injected clock)", async () => {
    const paths = await Promise.all(["d-one", "d-two"].map((n) => testPath(`budget-${n}`)));
    const { files, narinfos } = await upstreamPaths(paths);
    fakeUpstream(files);
    const aggregation = parseAggregation({ ...env, ...settings({ objects: 2 }) } as WorkerEnv);
    const hitOf = (p: TestPath): UpstreamHit => {
      const answer = judgeNarInfo(aggregation.upstreams[0]!, p.hash, narinfos.get(p.hash)!);
      if (answer.kind !== "hit") throw new Error("fake upstream narinfo is no hit");
      return answer.hit;
    };
    const context = (): LookupContext => {
      const budget = new SubrequestBudget();
      return { aggregation, budget, memo: { origin: "http://localhost", fingerprint: aggregation.fingerprint, budget } };
    };

    await writeThrough(hitOf(paths[0]!), env.CACHE, env.DB, context(), () => NOON);
    await writeThrough(hitOf(paths[1]!), env.CACHE, env.DB, context(), () => NOON + 3600 * 1000);
    expect((await copiedKeys()).sort()).toEqual(pathKeys(paths[0]!).sort());

    await writeThrough(hitOf(paths[1]!), env.CACHE, env.DB, context(), () => NOON + DAY_MS);
    expect((await copiedKeys()).sort()).toEqual([...pathKeys(paths[0]!), ...pathKeys(paths[1]!)].sort());
    expect(await stored()).toMatchObject({ day: dayOf(NOON + DAY_MS), objects: 2 });
  });

  it("never exceed the budget when many reads start copies at once", async () => {
    const paths = await Promise.all(Array.from({ length: 8 }, (_, i) => testPath(`budget-race-${i}`)));
    const { files } = await upstreamPaths(paths);
    fakeUpstream(files);
    const vars = settings({ objects: 7 });
    await Promise.all(paths.map((p) => read(vars, p)));
    const copied = await copiedKeys();
    expect(copied.length).toBeLessThanOrEqual(7);
    // Whole paths only: every stored narinfo has its NAR.
    for (const p of paths) {
      if (copied.includes(`${p.hash}.narinfo`)) expect(copied).toContain(`nar/${p.fileName}`);
    }
    expect((await stored()).objects).toBeLessThanOrEqual(7);
  });
});

describe("write-through and references matched by full store path", () => {
  it("never copies a referrer whose reference's hash part is stored here under another name", async () => {
    const dep = await testPath("wt-dep");
    const top = await testPath("wt-top", { references: [dep] });
    const { files } = await upstreamPaths([dep, top]);
    // A write token published another path under the dependency's hash part first.
    const squat = await testPath("wt-squat");
    const squatInfo = { ...squat.info, storePath: `/nix/store/${dep.hash}-wt-squat` };
    expect((await callWith({}, `/nar/${squat.fileName}`, { method: "PUT", body: squat.file, headers: bearer() })).status).toBe(201);
    expect((await callWith({}, `/${dep.hash}.narinfo`, { method: "PUT", body: formatNarInfo(squatInfo), headers: bearer() })).status).toBe(201);
    fakeUpstream(files);
    await read(settings({}), top);
    expect(await env.CACHE.head(`${top.hash}.narinfo`), "a referrer was stored with a hole").toBeNull();
    expect(formatNarInfo(parseNarInfo(await (await env.CACHE.get(`${dep.hash}.narinfo`))!.text()))).toContain("-wt-squat");
  });
});
