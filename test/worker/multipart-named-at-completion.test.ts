// Multipart uploads named at completion (routes/multipart.ts, POST /_api/v1/multipart/nar
// without a file): the client sends parts while it compresses and names the NAR (its
// sha256) and its size only when it completes. Inside workerd with the real local R2 and
// D1, a 6 MiB request limit (parts of 6 MiB), and two write tokens.
//
// The same guarantees as an upload started with its name: a NAR is stored only with bytes
// that hash to the name given at completion, never over a stored NAR, only by the token that
// started the upload; resuming by the client's name returns the parts received; nothing is
// left of an upload once it completes, fails verification or is aborted.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { parseUnnamedStartAnswer, type UnnamedUploadStarted } from "../../src/api/multipart.ts";
import { abortStaleUploads, MAX_UPLOADS_PER_WRITER, MULTIPART_MAX_AGE_MS } from "../../src/storage/multipart.ts";
import { bearer, bytesOf, callWith, errorOf, keys, resetAll, snapshot, testPath, TEST_SECOND_WRITE_TOKEN, TEST_WRITE_TOKEN, type TestPath } from "../helpers/worker.ts";

const MiB = 1024 * 1024;
const LIMIT = 6 * MiB;
const VARS = { MAX_NAR_UPLOAD_BYTES: String(LIMIT) };
const HONEST = TEST_WRITE_TOKEN;
const OTHER = TEST_SECOND_WRITE_TOKEN;
const BASE = "/_api/v1/multipart/nar";

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

/** Three parts of 6, 6 and 3 MiB + 5 bytes. */
const big = await testPath("named-at-completion-big", { nar: randomBytes(15 * MiB + 5) });
/** One part. */
const small = await testPath("named-at-completion-small", { nar: randomBytes(2 * MiB + 17) });
/** Exactly two parts of 6 MiB: the last part is a whole one. */
const even = await testPath("named-at-completion-even", { nar: randomBytes(12 * MiB) });

function api(token: string, url: string, init: RequestInit = {}): Promise<Response> {
  return callWith(VARS, url, { ...init, headers: { ...bearer(token), ...(init.headers as Record<string, string> | undefined) } });
}

function start(token: string, body: unknown): Promise<Response> {
  return api(token, BASE, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
}

async function started(token: string, name: string, partSize?: number): Promise<UnnamedUploadStarted> {
  const res = await start(token, partSize === undefined ? { name } : { name, partSize });
  expect([200, 201], await res.clone().text()).toContain(res.status);
  const answer = parseUnnamedStartAnswer(await res.json());
  expect(answer).not.toBeNull();
  return answer!;
}

const q = (s: { uploadId: string }) => `uploadId=${encodeURIComponent(s.uploadId)}`;

function putPart(token: string, s: UnnamedUploadStarted, n: number, bytes: Uint8Array): Promise<Response> {
  return api(token, `${BASE}/${n}?${q(s)}`, { method: "PUT", body: bytes });
}

function complete(token: string, s: UnnamedUploadStarted, body: unknown): Promise<Response> {
  return api(token, `${BASE}/complete?${q(s)}`, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
}

function abort(token: string, s: UnnamedUploadStarted): Promise<Response> {
  return api(token, `${BASE}?${q(s)}`, { method: "DELETE" });
}

/** The completion body for `p`'s file. */
function naming(p: TestPath, file: Uint8Array = p.file, partSize = LIMIT) {
  return { nar: p.fileName, size: file.length, parts: Math.ceil(file.length / partSize) };
}

/** Sends every part of `bytes` cut by the upload's part size, in the order given (default: all). */
async function sendAll(token: string, s: UnnamedUploadStarted, bytes: Uint8Array, order?: number[]): Promise<void> {
  const count = Math.ceil(bytes.length / s.partSize);
  for (const n of order ?? Array.from({ length: count }, (_, i) => i + 1)) {
    const res = await putPart(token, s, n, bytes.slice((n - 1) * s.partSize, n * s.partSize));
    expect(res.status, await res.clone().text()).toBe(200);
  }
}

/** D1's multipart rows: uploads and parts. */
async function bookkeeping(): Promise<string[]> {
  const uploads = await env.DB.prepare("SELECT writer, slot, nar, name, upload_id FROM multipart_uploads ORDER BY writer, slot").all<Record<string, unknown>>();
  const parts = await env.DB.prepare("SELECT writer, slot, part_number, size FROM multipart_parts ORDER BY writer, slot, part_number").all<Record<string, unknown>>();
  return [...uploads.results, ...parts.results].map((r) => JSON.stringify(r));
}

async function state(): Promise<string[]> {
  return [...(await snapshot()), ...(await bookkeeping())];
}

async function storedNar(p: TestPath): Promise<{ etag: string; bytes: Uint8Array } | null> {
  const obj = await env.CACHE.get(`nar/${p.fileName}`);
  return obj === null ? null : { etag: obj.etag, bytes: new Uint8Array(await obj.arrayBuffer()) };
}

beforeEach(() => resetAll());

describe("an upload named at completion", { timeout: 60_000 }, () => {
  it("takes parts before the NAR has a name and stores it under the name given at completion, with exactly its bytes", async () => {
    const s = await started(HONEST, `${big.hash}-zstd`);
    expect(s).toMatchObject({ stored: false, name: `${big.hash}-zstd`, partSize: LIMIT, parts: [], maxRequestBytes: LIMIT, verify: "sha256" });
    expect(s.maxParts).toBe(Math.ceil((5 * 1024 ** 3 - 5 * MiB) / LIMIT));
    await sendAll(HONEST, s, big.file, [3, 1, 2]);
    expect((await api(HONEST, `/nar/${big.fileName}`, { method: "HEAD" })).status).toBe(404);
    const res = await complete(HONEST, s, naming(big));
    expect(res.status, await res.clone().text()).toBe(201);
    expect(await res.json()).toEqual({ key: `nar/${big.fileName}`, size: big.file.length });
    expect(await bytesOf(await api(HONEST, `/nar/${big.fileName}`))).toEqual(big.file);
    expect(await keys()).toEqual([`nar/${big.fileName}`]);
    expect(await bookkeeping()).toEqual([]);
    // A retried completion finds it stored.
    const again = await complete(HONEST, s, naming(big));
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ key: `nar/${big.fileName}`, size: big.file.length, stored: true });
  });

  it("whose last part is a whole one, and with parts sent beyond the last (dropped)", async () => {
    const s = await started(HONEST, "even");
    await sendAll(HONEST, s, even.file);
    expect((await putPart(HONEST, s, 3, randomBytes(100))).status).toBe(200);
    const res = await complete(HONEST, s, naming(even));
    expect(res.status, await res.clone().text()).toBe(201);
    expect(await bytesOf(await api(HONEST, `/nar/${even.fileName}`))).toEqual(even.file);
    expect(await bookkeeping()).toEqual([]);
  });

  it("resumes by the client's name with the parts received; another name or another token starts its own", async () => {
    const s = await started(HONEST, "push-1");
    await sendAll(HONEST, s, big.file, [1, 3]);
    const again = await start(HONEST, { name: "push-1" });
    expect(again.status).toBe(200);
    const resumed = parseUnnamedStartAnswer(await again.json())!;
    expect(resumed.uploadId).toBe(s.uploadId);
    expect(resumed.parts).toEqual([
      { partNumber: 1, size: LIMIT },
      { partNumber: 3, size: big.file.length - 2 * LIMIT },
    ]);
    const other = await started(HONEST, "push-2");
    expect(other.uploadId).not.toBe(s.uploadId);
    const theirs = await started(OTHER, "push-1");
    expect(theirs.uploadId).not.toBe(s.uploadId);
    expect(theirs.parts).toEqual([]);
    // A start asking for another part size begins anew (the old parts cannot be reused).
    const smaller = await start(HONEST, { name: "push-1", partSize: 5 * MiB });
    expect(smaller.status).toBe(201);
    const fresh = parseUnnamedStartAnswer(await smaller.json())!;
    expect(fresh).toMatchObject({ partSize: 5 * MiB, parts: [] });
    expect((await putPart(HONEST, s, 2, big.file.slice(LIMIT, 2 * LIMIT))).status).toBe(409);
    await sendAll(HONEST, fresh, small.file);
    expect((await complete(HONEST, fresh, naming(small, small.file, 5 * MiB))).status).toBe(201);
    expect((await storedNar(small))!.bytes).toEqual(small.file);
  });

  it("can be aborted: nothing is left, and parts and completion are refused afterwards", async () => {
    const s = await started(HONEST, "abort-me");
    await sendAll(HONEST, s, big.file, [1]);
    expect((await abort(HONEST, s)).status).toBe(204);
    expect(await bookkeeping()).toEqual([]);
    expect(await keys()).toEqual([]);
    expect((await abort(HONEST, s)).status).toBe(204);
    expect((await putPart(HONEST, s, 2, big.file.slice(LIMIT, 2 * LIMIT))).status).toBe(404);
    const late = await complete(HONEST, s, naming(big));
    expect(late.status).toBe(404);
    expect(await errorOf(late)).toMatch(/start one with POST/);
  });

  it("is aborted by the cleanup once abandoned, like any upload", async () => {
    const s = await started(HONEST, "abandoned");
    await sendAll(HONEST, s, big.file, [1]);
    const pass = await abortStaleUploads({ bucket: env.CACHE, db: env.DB }, { now: Date.now() + MULTIPART_MAX_AGE_MS + 60_000 });
    expect(pass.aborted).toEqual(["WRITE_TOKEN abandoned"]);
    expect(await bookkeeping()).toEqual([]);
    expect((await putPart(HONEST, s, 2, big.file.slice(LIMIT, 2 * LIMIT))).status).toBe(404);
  });

  it(`counts toward the token's ${MAX_UPLOADS_PER_WRITER} uploads in progress`, async () => {
    for (let i = 0; i < MAX_UPLOADS_PER_WRITER; i++) expect((await start(OTHER, { name: `n${i}` })).status).toBe(201);
    const over = await start(OTHER, { name: "one-more" });
    expect(over.status).toBe(429);
    expect(await errorOf(over)).toMatch(/finish or abort/);
    expect((await start(OTHER, { name: "n7" })).status).toBe(200);
    expect((await start(HONEST, { name: "n0" })).status).toBe(201);
  });
});

describe("integrity of uploads named at completion", { timeout: 60_000 }, () => {
  it("a completion naming a file whose sha256 the bytes do not have stores nothing and leaves nothing", async () => {
    const s = await started(OTHER, "forged");
    // Bytes of the size of small's file that are not small's file.
    await sendAll(OTHER, s, randomBytes(small.file.length));
    const res = await complete(OTHER, s, naming(small));
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatch(/do not hash to the sha256 in the NAR's name/);
    expect(await keys()).toEqual([]);
    expect(await bookkeeping()).toEqual([]);
    // Nor does naming another NAR for the real bytes.
    const t = await started(HONEST, "misnamed");
    await sendAll(HONEST, t, small.file);
    const wrong = await complete(HONEST, t, { ...naming(small), nar: even.fileName });
    expect(wrong.status).toBe(400);
    expect(await keys()).toEqual([]);
  });

  it("never replaces a stored NAR: a completion naming it answers stored and changes nothing", async () => {
    const honest = await started(HONEST, "honest");
    await sendAll(HONEST, honest, small.file);
    expect((await complete(HONEST, honest, naming(small))).status).toBe(201);
    const before = await storedNar(small);

    const s = await started(OTHER, "squat");
    await sendAll(OTHER, s, randomBytes(small.file.length));
    const res = await complete(OTHER, s, naming(small));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ stored: true });
    expect(await storedNar(small)).toEqual(before);
    expect(before!.bytes).toEqual(small.file);
    expect(await keys()).toEqual([`nar/${small.fileName}`]);
    expect(await bookkeeping()).toEqual([]);
  });

  it("another token cannot send parts to it, complete it or abort it (403), and changes nothing", async () => {
    const s = await started(HONEST, "mine");
    await sendAll(HONEST, s, small.file);
    const before = await state();
    for (const attempt of [
      () => putPart(OTHER, s, 2, randomBytes(1000)),
      () => putPart(OTHER, s, 1, randomBytes(small.file.length)),
      () => complete(OTHER, s, naming(small)),
      () => abort(OTHER, s),
    ]) {
      const res = await attempt();
      expect(res.status).toBe(403);
      expect(await errorOf(res)).toMatch(/started by another token/);
      expect(await state()).toEqual(before);
    }
    expect((await complete(HONEST, s, naming(small))).status).toBe(201);
    expect((await storedNar(small))!.bytes).toEqual(small.file);
  });

  it("the handles of the two kinds of uploads are not interchangeable", async () => {
    const unnamed = await started(HONEST, "kind");
    const named = await api(HONEST, `${BASE}/${big.fileName}`, { method: "POST", body: JSON.stringify({ size: big.file.length }) });
    expect(named.status).toBe(201);
    const namedId = ((await named.json()) as { uploadId: string }).uploadId;
    const before = await state();
    // The named routes do not know an upload without a name.
    expect((await api(HONEST, `${BASE}/${big.fileName}/1?${q(unnamed)}`, { method: "PUT", body: big.file.slice(0, LIMIT) })).status).toBe(404);
    // The routes without a name say where a named upload continues.
    const wrong = await putPart(HONEST, { ...unnamed, uploadId: namedId }, 1, big.file.slice(0, LIMIT));
    expect(wrong.status).toBe(400);
    expect(await errorOf(wrong)).toMatch(new RegExp(`continue it under ${BASE}/${big.fileName}`));
    expect(await state()).toEqual(before);
  });
});

describe("bad requests: a 4xx with a reason, nothing changed", { timeout: 60_000 }, () => {
  it("starts", async () => {
    const cases: Array<[unknown, number, RegExp]> = [
      [{}, 400, /name must be/],
      [{ name: "" }, 400, /name must be/],
      [{ name: "a/b" }, 400, /name must be/],
      [{ name: "x".repeat(201) }, 400, /name must be/],
      [{ name: "ok", partSize: 1.5 }, 400, /partSize must be/],
      [{ name: "ok", partSize: 5 * MiB - 1 }, 400, /at least/],
      [{ name: "ok", partSize: LIMIT + 1 }, 413, /over this cache's limit/],
      ["not an object", 400, /send \{"name"/],
    ];
    for (const [body, status, error] of cases) {
      const res = await start(HONEST, body);
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(await errorOf(res)).toMatch(error);
    }
    const notJson = await api(HONEST, BASE, { method: "POST", body: "{" });
    expect(notJson.status).toBe(400);
    expect(await state()).toEqual([]);
  });

  it("parts and completions", async () => {
    const s = await started(HONEST, "bad");
    await sendAll(HONEST, s, big.file, [1]);
    // Part 2 one byte short: only the last part may be short, which completion checks.
    expect((await putPart(HONEST, s, 2, big.file.slice(LIMIT, 2 * LIMIT - 1))).status).toBe(200);
    const before = await state();
    const cases: Array<[() => Promise<Response>, number, RegExp]> = [
      [() => putPart(HONEST, s, 4, randomBytes(LIMIT + 1)), 413, /partSize/],
      [() => putPart(HONEST, s, s.maxParts + 1, randomBytes(10)), 400, /takes parts 1 to/],
      [() => putPart(HONEST, s, 0, randomBytes(10)), 400, /part numbers go from 1/],
      [() => complete(HONEST, s, { nar: big.fileName, size: big.file.length }), 400, /parts must be/],
      [() => complete(HONEST, s, { ...naming(big), parts: 4 }), 400, /is 3 parts, not 4/],
      [() => complete(HONEST, s, { ...naming(big), nar: "x.nar" }), 400, /nar\/<52-char/],
      [() => complete(HONEST, s, { ...naming(big), size: 6 * 1024 ** 3 }), 413, /at most/],
      [() => complete(HONEST, s, naming(big)), 422, /part 2 has 6291455 bytes.*send it again/],
      [() => complete(HONEST, { ...s, uploadId: `${s.uploadId.split(":")[0]}:another` }, naming(big)), 409, /replaced/],
    ];
    for (const [request, status, error] of cases) {
      const res = await request();
      expect(res.status, await res.clone().text()).toBe(status);
      expect(await errorOf(res)).toMatch(error);
      expect(await state()).toEqual(before);
    }
    // Part 2 sent again whole: now part 3 is missing.
    await sendAll(HONEST, s, big.file, [2]);
    const missing = await complete(HONEST, s, naming(big));
    expect(missing.status).toBe(422);
    expect(await errorOf(missing)).toMatch(/part 3 of 3 not received/);
    await sendAll(HONEST, s, big.file, [3]);
    expect((await complete(HONEST, s, naming(big))).status).toBe(201);
  });
});

describe("invariants under any interleaving of two writers", { timeout: 300_000 }, () => {
  // Each token has one upload name; most steps act on the token's own upload ("self").
  type Whose = "self" | "other";
  type Step =
    | { op: "start"; who: 0 | 1 }
    | { op: "part"; who: 0 | 1; whose: Whose; nar: 0 | 1; forged: boolean }
    | { op: "complete"; who: 0 | 1; whose: Whose; nar: 0 | 1 }
    | { op: "abort"; who: 0 | 1; whose: Whose }
    | { op: "put"; who: 0 | 1; nar: 0 | 1; forged: boolean };
  const bit = fc.constantFrom<0 | 1>(0, 1);
  const whose = fc.oneof({ arbitrary: fc.constant<Whose>("self"), weight: 3 }, { arbitrary: fc.constant<Whose>("other"), weight: 1 });
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ op: fc.constant("start" as const), who: bit }),
    { arbitrary: fc.record({ op: fc.constant("part" as const), who: bit, whose, nar: bit, forged: fc.boolean() }), weight: 2 },
    { arbitrary: fc.record({ op: fc.constant("complete" as const), who: bit, whose, nar: bit }), weight: 2 },
    fc.record({ op: fc.constant("abort" as const), who: bit, whose }),
    fc.record({ op: fc.constant("put" as const), who: bit, nar: bit, forged: fc.boolean() }),
  );

  it("nar/ only ever holds bytes that hash to their names, a stored NAR never changes, another token's upload is never touched, no 5xx", async () => {
    const nars = [small, await testPath("named-at-completion-small-2", { nar: randomBytes(1024 * 1024 + 3) })];
    const tokens = [HONEST, OTHER];
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
        await resetAll();
        // The upload each token got from its last start.
        const handles = new Map<string, UnnamedUploadStarted>();
        const stored = new Map<string, string>();
        for (const s of steps) {
          const token = tokens[s.who]!;
          let res: Response;
          if (s.op === "start") {
            res = await start(token, { name: "upload" });
            if (res.status === 200 || res.status === 201) handles.set(`${s.who}`, parseUnnamedStartAnswer(await res.clone().json())!);
          } else if (s.op === "put") {
            const p = nars[s.nar]!;
            res = await callWith({}, `/nar/${p.fileName}`, { method: "PUT", body: s.forged ? randomBytes(p.file.length) : p.file, headers: { ...bearer(token), "Content-Type": "application/x-nix-nar" } });
          } else {
            const owner = s.whose === "self" ? s.who : 1 - s.who;
            const h = handles.get(`${owner}`);
            if (h === undefined) continue;
            if (s.op === "part") res = await putPart(token, h, 1, s.forged ? randomBytes(nars[s.nar]!.file.length) : nars[s.nar]!.file);
            else if (s.op === "complete") res = await complete(token, h, naming(nars[s.nar]!));
            else res = await abort(token, h);
            if (owner !== s.who) expect(res.status, "another token's upload").toBe(403);
          }
          expect(res.status, `${JSON.stringify(s)}: ${await res.clone().text()}`).toBeLessThan(500);
          for (const p of nars) {
            const now = await storedNar(p);
            const before = stored.get(p.fileName);
            if (before !== undefined) expect(now?.etag, "a stored NAR changed").toBe(before);
            if (now !== null) {
              expect(now.bytes).toEqual(p.file);
              stored.set(p.fileName, now.etag);
            }
          }
        }
        // Whatever happened, the honest writer can still store both NARs this way.
        for (const [i, p] of nars.entries()) {
          const s = await started(HONEST, `final-${i}`);
          await sendAll(HONEST, s, p.file);
          expect([200, 201]).toContain((await complete(HONEST, s, naming(p))).status);
          expect((await storedNar(p))!.bytes).toEqual(p.file);
        }
      }),
      { numRuns: 8 },
    );
  });
});
