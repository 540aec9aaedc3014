// Multipart uploads against a writer who is not honest: a second write token
// (WRITE_TOKEN_CI, the "squatter") tries to replace, pre-empt, hijack or exhaust what the
// first (WRITE_TOKEN, the "honest" pipeline) uploads, inside workerd with the real local R2.
//
// Each attack worked once (regression tests); the invariants checked after every step:
// every object under nar/ hashes to the sha256 in its name, a stored NAR never changes
// (same bytes, same etag), every hostile request is a 4xx, and the honest writer can still
// store its NAR whatever the squatter did before.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import type { WorkerEnv } from "../../src/env.ts";
import worker from "../../src/index.ts";
import { toHex } from "../../src/nix/encoding.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { decodeNix32 } from "../../src/nix/nix32.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { CLEANUP_OPERATIONS_PER_PASS, MAX_UPLOADS_PER_WRITER, MULTIPART_MAX_AGE_MS } from "../../src/storage/multipart.ts";
import { CACHE_INFO_CHECK_OPERATIONS } from "../../src/storage/cache-info-object.ts";
import { MULTIPART_CLEANUP_EVERY_MINUTES } from "../../src/scheduled.ts";
import { bearer, bytesOf, callWith, errorOf, keys, ORIGIN, snapshot, testPath, TEST_SECOND_WRITE_TOKEN, TEST_WRITE_TOKEN, type TestPath, resetAll } from "../helpers/worker.ts";

/** Parts of 6 MiB, as on a cache whose request limit is 6 MiB. */
const LIMIT = 6 * 1024 * 1024;
const VARS = { MAX_NAR_UPLOAD_BYTES: String(LIMIT) };
const HONEST = TEST_WRITE_TOKEN;
const SQUATTER = TEST_SECOND_WRITE_TOKEN;
/** Nothing listens on port 1 (as in upstream-routing.test.ts): the upstream never answers. */
const DEAD_UPSTREAM = "http://127.0.0.1:1";

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

/** One part (a NAR under the request limit may still be sent in parts). */
const small = await testPath("integrity-small", { nar: randomBytes(2 * 1024 * 1024 + 17) });
/** Three parts: 6, 6 and 3 MiB + 5 bytes. */
const big = await testPath("integrity-big", { nar: randomBytes(15 * 1024 * 1024 + 5) });

interface Started {
  stored: boolean;
  uploadId: string;
  partSize: number;
  partCount: number;
  parts: Array<{ partNumber: number; size: number }>;
}

function api(token: string, url: string, init: RequestInit = {}, vars: Record<string, string> = VARS): Promise<Response> {
  return callWith(vars, url, { ...init, headers: { ...bearer(token), ...(init.headers as Record<string, string> | undefined) } });
}

const base = (fileName: string) => `/_api/v1/multipart/nar/${fileName}`;

function start(token: string, fileName: string, size: number, vars?: Record<string, string>): Promise<Response> {
  return api(token, base(fileName), { method: "POST", body: JSON.stringify({ size }), headers: { "Content-Type": "application/json" } }, vars);
}

async function started(token: string, p: { fileName: string; size: number }, vars?: Record<string, string>): Promise<Started> {
  const res = await start(token, p.fileName, p.size, vars);
  expect([200, 201], await res.clone().text()).toContain(res.status);
  return (await res.json()) as Started;
}

const q = (s: Started) => `uploadId=${encodeURIComponent(s.uploadId)}`;

function putPart(token: string, fileName: string, s: Started, n: number, bytes: Uint8Array, vars?: Record<string, string>): Promise<Response> {
  return api(token, `${base(fileName)}/${n}?${q(s)}`, { method: "PUT", body: bytes }, vars);
}

function complete(token: string, fileName: string, s: Started, vars?: Record<string, string>): Promise<Response> {
  return api(token, `${base(fileName)}/complete?${q(s)}`, { method: "POST" }, vars);
}

function abort(token: string, fileName: string, s: Started): Promise<Response> {
  return api(token, `${base(fileName)}?${q(s)}`, { method: "DELETE" });
}

function singlePut(token: string, p: TestPath, body: Uint8Array = p.file): Promise<Response> {
  return api(token, `/nar/${p.fileName}`, { method: "PUT", body, headers: { "Content-Type": "application/x-nix-nar" } }, {});
}

/** Sends every part of `bytes` (cut by the upload's layout). */
async function sendAll(token: string, fileName: string, s: Started, bytes: Uint8Array, vars?: Record<string, string>): Promise<void> {
  for (let n = 1; n <= s.partCount; n++) {
    const res = await putPart(token, fileName, s, n, bytes.slice((n - 1) * s.partSize, n * s.partSize), vars);
    expect(res.status, await res.clone().text()).toBe(200);
  }
}

/** Bytes of the same size as `p`'s file that do not hash to its name. */
function forgery(p: TestPath): Uint8Array {
  return randomBytes(p.file.length);
}

/** Every object under nar/ hashes to the sha256 in its name. */
async function expectNarsHashToTheirNames(): Promise<void> {
  for (const key of await keys()) {
    if (!key.startsWith("nar/")) continue;
    const bytes = new Uint8Array(await (await env.CACHE.get(key))!.arrayBuffer());
    const named = toHex(decodeNix32(key.slice("nar/".length).split(".")[0]!, 32));
    expect(toHex(await sha256(bytes)), key).toBe(named);
  }
}

async function storedNar(p: TestPath): Promise<{ etag: string; bytes: Uint8Array } | null> {
  const obj = await env.CACHE.get(`nar/${p.fileName}`);
  return obj === null ? null : { etag: obj.etag, bytes: new Uint8Array(await obj.arrayBuffer()) };
}

/** The multipart bookkeeping: R2 objects under multipart/ (none but an assembled NAR, briefly) and D1's upload and part rows. */
async function multipartKeys(): Promise<string[]> {
  const uploads = await env.DB.prepare("SELECT writer, slot, nar, upload_id FROM multipart_uploads").all<{ writer: string; slot: number; nar: string; upload_id: string }>();
  const parts = await env.DB.prepare("SELECT writer, slot, part_number FROM multipart_parts").all<{ writer: string; slot: number; part_number: number }>();
  return [
    ...(await keys()).filter((k) => k.startsWith("multipart/")),
    ...uploads.results.map((r) => `D1 upload ${r.writer}~${r.slot} ${r.nar} ${r.upload_id}`),
    ...parts.results.map((r) => `D1 part ${r.writer}~${r.slot} ${r.part_number}`),
  ].sort();
}

/** The bucket and the multipart bookkeeping: equal states mean nothing changed. */
async function state(): Promise<string[]> {
  return [...(await snapshot()), ...(await multipartKeys())];
}

beforeEach(() => resetAll());

describe("a squatter cannot replace or pre-empt a NAR", { timeout: 60_000 }, () => {
  it("an upload started before the honest NAR existed cannot replace it once stored", async () => {
    const s = await started(SQUATTER, { fileName: small.fileName, size: small.file.length });
    await sendAll(SQUATTER, small.fileName, s, forgery(small));
    expect((await singlePut(HONEST, small)).status).toBe(201);
    const before = await storedNar(small);

    const res = await complete(SQUATTER, small.fileName, s);
    // The NAR is stored: the squatter's completion says so and changes nothing.
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toMatchObject({ stored: true });
    expect(await storedNar(small)).toEqual(before);
    expect(before!.bytes).toEqual(small.file);
    expect(await multipartKeys()).toEqual([]);
    await expectNarsHashToTheirNames();
  });

  it("an upload completed before the honest one stores nothing, and the honest PUT then stores the NAR", async () => {
    const s = await started(SQUATTER, { fileName: small.fileName, size: small.file.length });
    await sendAll(SQUATTER, small.fileName, s, forgery(small));
    const res = await complete(SQUATTER, small.fileName, s);
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatch(/do not hash to the sha256 in the NAR's name/);
    expect(await keys()).toEqual([]);

    const honest = await singlePut(HONEST, small);
    expect(honest.status).toBe(201);
    expect((await storedNar(small))!.bytes).toEqual(small.file);
  });

  it("uploads in parts by two tokens do not block each other; the bytes that hash to the name win", async () => {
    const squat = await started(SQUATTER, { fileName: big.fileName, size: big.file.length });
    await sendAll(SQUATTER, big.fileName, squat, forgery(big));
    // The honest writer gets its own upload, not the squatter's parts.
    const mine = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    expect(mine.uploadId).not.toBe(squat.uploadId);
    expect(mine.parts).toEqual([]);
    await sendAll(HONEST, big.fileName, mine, big.file);

    const first = await complete(SQUATTER, big.fileName, squat);
    expect(first.status).toBe(400);
    expect(await keys()).not.toContain(`nar/${big.fileName}`);
    const done = await complete(HONEST, big.fileName, mine);
    expect(done.status, await done.clone().text()).toBe(201);
    expect(await bytesOf(await api(HONEST, `/nar/${big.fileName}`))).toEqual(big.file);
    expect(await keys()).toEqual([`nar/${big.fileName}`]);
  });

  it("an honest upload in parts completed first is not replaced by a squatter completing later", async () => {
    const squat = await started(SQUATTER, { fileName: big.fileName, size: big.file.length });
    await sendAll(SQUATTER, big.fileName, squat, forgery(big));
    const mine = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    await sendAll(HONEST, big.fileName, mine, big.file);
    expect((await complete(HONEST, big.fileName, mine)).status).toBe(201);
    const before = await storedNar(big);

    const late = await complete(SQUATTER, big.fileName, squat);
    expect(late.status).toBe(200);
    expect(await late.json()).toMatchObject({ stored: true });
    expect(await storedNar(big)).toEqual(before);
    expect(before!.bytes).toEqual(big.file);
    // The squatter's upload was cleaned up with its answer.
    expect(await keys()).toEqual([`nar/${big.fileName}`]);
  });

  it("an aggregated upstream's NAR name cannot be squatted: nothing is stored, the upstream stays in charge", async () => {
    // A name whose bytes the squatter does not have (any upstream NAR's).
    const name = `${encodeNix32(await sha256(randomBytes(64)))}.nar.xz`;
    const vars = { ...VARS, AGGREGATE_UPSTREAMS: DEAD_UPSTREAM };
    const s = await started(SQUATTER, { fileName: name, size: 3 * 1024 * 1024 }, vars);
    await sendAll(SQUATTER, name, s, randomBytes(3 * 1024 * 1024), vars);
    const res = await complete(SQUATTER, name, s, vars);
    expect(res.status).toBe(400);
    expect(await keys()).toEqual([]);
    const served = await callWith(vars, `/upstream/127.0.0.1:1/nar/${name}`);
    expect(served.status).toBe(404);
  });
});

describe("an upload belongs to the token that started it", { timeout: 60_000 }, () => {
  it("another token cannot send parts to it, complete it or abort it (403), and changes nothing", async () => {
    const s = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    expect((await putPart(HONEST, big.fileName, s, 1, big.file.slice(0, LIMIT))).status).toBe(200);
    const before = await state();
    const attempts = [
      () => putPart(SQUATTER, big.fileName, s, 2, forgery(big).slice(0, LIMIT)),
      () => putPart(SQUATTER, big.fileName, s, 1, forgery(big).slice(0, LIMIT)),
      () => complete(SQUATTER, big.fileName, s),
      () => abort(SQUATTER, big.fileName, s),
    ];
    for (const attempt of attempts) {
      const res = await attempt();
      expect(res.status).toBe(403);
      expect(await errorOf(res)).toMatch(/this upload was started by another token/);
      expect(await state()).toEqual(before);
    }
    // The owner resumes with its part intact and finishes.
    const again = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    expect(again.uploadId).toBe(s.uploadId);
    expect(again.parts).toEqual([{ partNumber: 1, size: LIMIT }]);
    await sendAll(HONEST, big.fileName, again, big.file);
    expect((await complete(HONEST, big.fileName, again)).status).toBe(201);
    expect((await storedNar(big))!.bytes).toEqual(big.file);
  });

  it("a start by another token never resumes the first token's upload", async () => {
    const s = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    expect((await putPart(HONEST, big.fileName, s, 1, big.file.slice(0, LIMIT))).status).toBe(200);
    const res = await start(SQUATTER, big.fileName, big.file.length);
    expect(res.status).toBe(201);
    const other = (await res.json()) as Started;
    expect(other.uploadId).not.toBe(s.uploadId);
    expect(other.parts).toEqual([]);
    // A changed size from the other token does not discard the first token's upload either.
    expect((await start(SQUATTER, big.fileName, big.file.length - 1)).status).toBe(201);
    const mine = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    expect(mine.uploadId).toBe(s.uploadId);
    expect(mine.parts).toEqual([{ partNumber: 1, size: LIMIT }]);
  });

  it("a forged upload id naming another token's upload is refused before anything is read", async () => {
    const s = await started(HONEST, { fileName: small.fileName, size: small.file.length });
    const before = await state();
    for (const forged of [s.uploadId.replace(/^[^:]*/, "WRITE_TOKEN_CI"), `x${s.uploadId}`, "", "::", "WRITE_TOKEN~99:x"]) {
      const res = await putPart(SQUATTER, small.fileName, { ...s, uploadId: forged }, 1, forgery(small));
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      expect(await state()).toEqual(before);
    }
  });
});

describe("bounded bookkeeping", { timeout: 120_000 }, () => {
  /** A NAR name nobody has the bytes of; the Worker never reads NAR bytes before completion. */
  const nameOf = async (i: number) => `${encodeNix32(await sha256(new TextEncoder().encode(`integrity ${i}`)))}.nar.zst`;

  it(`a token has at most ${MAX_UPLOADS_PER_WRITER} uploads in progress (429), and other tokens are unaffected`, async () => {
    for (let i = 0; i < MAX_UPLOADS_PER_WRITER; i++) expect((await start(SQUATTER, await nameOf(i), 1000)).status).toBe(201);
    const over = await start(SQUATTER, await nameOf(MAX_UPLOADS_PER_WRITER), 1000);
    expect(over.status).toBe(429);
    expect(await errorOf(over)).toMatch(/finish or abort/);
    // Resuming one of its own is still fine, and so is every other token.
    expect((await start(SQUATTER, await nameOf(3), 1000)).status).toBe(200);
    expect((await start(HONEST, small.fileName, small.file.length)).status).toBe(201);
    // The bookkeeping: one row per upload, nothing else yet.
    expect(await multipartKeys()).toHaveLength(MAX_UPLOADS_PER_WRITER + 1);
    // Aborting one frees its place.
    const first = await started(SQUATTER, { fileName: await nameOf(0), size: 1000 });
    expect((await abort(SQUATTER, await nameOf(0), first)).status).toBe(204);
    expect((await start(SQUATTER, await nameOf(MAX_UPLOADS_PER_WRITER), 1000)).status).toBe(201);
  });

  it("the cron clears every abandoned upload of every token in bounded passes, each within the operation budget", async () => {
    // Both tokens at their limit, every upload with a part received.
    const handles: Array<{ token: string; name: string; s: Started }> = [];
    for (const token of [HONEST, SQUATTER]) {
      for (let i = 0; i < MAX_UPLOADS_PER_WRITER; i++) {
        const name = await nameOf(i);
        const s = await started(token, { fileName: name, size: 1000 });
        expect((await putPart(token, name, s, 1, randomBytes(1000))).status).toBe(200);
        handles.push({ token, name, s });
      }
    }
    const total = handles.length;
    expect(await multipartKeys()).toHaveLength(2 * total);

    // A day and a bit later, the cron fires every minute; some ticks are cleanup passes.
    const counting = countingBucket(env.CACHE);
    const d1 = countingDb(env.DB);
    const t0 = Date.now() + MULTIPART_MAX_AGE_MS + 60_000;
    const passes: number[] = [];
    let minute = 0;
    for (; minute < 24 * 60 && (await multipartKeys()).length > 0; minute++) {
      const time = t0 + minute * 60_000;
      counting.count = 0;
      d1.count = 0;
      await tick(time, counting.bucket, d1.db);
      if (new Date(time).getUTCMinutes() % MULTIPART_CLEANUP_EVERY_MINUTES !== 0) continue;
      // The pass's R2 and D1 calls, and the nix-cache-info check an isolate's first tick
      // makes before it: within the free plan's 50 subrequests.
      expect(counting.count + d1.count).toBeLessThanOrEqual(CLEANUP_OPERATIONS_PER_PASS + CACHE_INFO_CHECK_OPERATIONS);
      expect(CLEANUP_OPERATIONS_PER_PASS + CACHE_INFO_CHECK_OPERATIONS).toBeLessThanOrEqual(50);
      passes.push(counting.count + d1.count);
    }
    expect(await multipartKeys()).toEqual([]);
    // Each pass aborts about one upload per operation: everything is gone within this many passes.
    const bound = Math.ceil(total / (CLEANUP_OPERATIONS_PER_PASS - 5));
    expect(passes.length).toBeLessThanOrEqual(bound);
    expect(minute).toBeLessThanOrEqual(bound * MULTIPART_CLEANUP_EVERY_MINUTES);
    // R2 forgot the uploads too.
    for (const h of handles.slice(0, 3)) expect((await putPart(h.token, h.name, h.s, 1, randomBytes(1000))).status).toBe(404);

    // An idle pass is one D1 query and no R2 call.
    counting.count = 0;
    d1.count = 0;
    const every = MULTIPART_CLEANUP_EVERY_MINUTES * 60_000;
    await tick(Math.ceil((t0 + minute * 60_000) / every) * every, counting.bucket, d1.db);
    expect(counting.count).toBe(0);
    expect(d1.count).toBe(1);
  });
});

describe("what verification costs", { timeout: 60_000 }, () => {
  it("a completion is five R2 operations, one of them the put R2 checks, and two D1 calls (bench/multipart-verify.ts counts on this)", async () => {
    const s = await started(HONEST, { fileName: big.fileName, size: big.file.length });
    await sendAll(HONEST, big.fileName, s, big.file);
    const counting = countingBucket(env.CACHE);
    const d1 = countingDb(env.DB);
    const ctx = createExecutionContext();
    const request = new Request(`${ORIGIN}${base(big.fileName)}/complete?${q(s)}`, { method: "POST", headers: bearer(HONEST) });
    const res = await createApp().fetch(request, { ...env, ...VARS, CACHE: counting.bucket, DB: d1.db } as WorkerEnv, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(201);
    // The NAR's absence, R2 assembling, reading the assembled object, the checked put, the
    // assembled object's deletion; in D1 the upload with its parts, then their deletion.
    expect(counting.ops).toEqual(["head", "complete", "get", "put", "delete"]);
    expect(d1.count).toBe(2);
    expect(await multipartKeys()).toEqual([]);
    expect(await keys()).toEqual([`nar/${big.fileName}`]);
  });
});

describe("MULTIPART_VERIFY", () => {
  it("size is refused: it let a writer replace a NAR", async () => {
    const res = await callWith({ MULTIPART_VERIFY: "size" }, "/_api/v1/limits", { headers: bearer() });
    expect(res.status).toBe(500);
    expect(await errorOf(res)).toMatch(/MULTIPART_VERIFY=size was removed.*replace/);
  });

  it("sha256 or unset is the one mode, and the limits say so", async () => {
    for (const vars of [{}, { MULTIPART_VERIFY: "sha256" }]) {
      const res = await callWith(vars, "/_api/v1/limits", { headers: bearer() });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ multipartVerify: "sha256" });
    }
  });
});

describe("invariants under any interleaving of two writers", { timeout: 300_000 }, () => {
  type Step =
    | { op: "start"; who: 0 | 1; nar: 0 | 1 }
    | { op: "part"; who: 0 | 1; nar: 0 | 1; handle: 0 | 1; forged: boolean }
    | { op: "complete" | "abort"; who: 0 | 1; nar: 0 | 1; handle: 0 | 1 }
    | { op: "put"; who: 0 | 1; nar: 0 | 1; forged: boolean };
  const who = fc.constantFrom<0 | 1>(0, 1);
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ op: fc.constant("start" as const), who, nar: who }),
    fc.record({ op: fc.constant("part" as const), who, nar: who, handle: who, forged: fc.boolean() }),
    fc.record({ op: fc.constantFrom("complete" as const, "abort" as const), who, nar: who, handle: who }),
    fc.record({ op: fc.constant("put" as const), who, nar: who, forged: fc.boolean() }),
  );

  it("nar/ only ever holds bytes that hash to their names, a stored NAR never changes, no 5xx", async () => {
    const nars = [small, await testPath("integrity-small-2", { nar: randomBytes(1024 * 1024 + 3) })];
    const tokens = [HONEST, SQUATTER];
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (steps) => {
        await resetAll();
        // The upload handles each token got from its last start of each NAR.
        const handles = new Map<string, Started>();
        const stored = new Map<string, string>();
        for (const s of steps) {
          const p = nars[s.nar]!;
          const token = tokens[s.who]!;
          let res: Response;
          if (s.op === "start") {
            res = await start(token, p.fileName, p.file.length);
            if (res.status === 201 || res.status === 200) {
              const body = (await res.clone().json()) as Started;
              if (!body.stored) handles.set(`${s.who}/${s.nar}`, body);
            }
          } else if (s.op === "put") {
            res = await singlePut(token, p, s.forged ? forgery(p) : p.file);
          } else {
            const h = handles.get(`${s.handle}/${s.nar}`);
            if (h === undefined) continue;
            if (s.op === "part") res = await putPart(token, p.fileName, h, 1, s.forged ? forgery(p) : p.file);
            else if (s.op === "complete") res = await complete(token, p.fileName, h);
            else res = await abort(token, p.fileName, h);
            // Someone else's handle is always refused.
            if (s.handle !== s.who) expect(res.status).toBe(403);
          }
          expect(res.status, `${JSON.stringify(s)}: ${await res.clone().text()}`).toBeLessThan(500);
          for (const q of nars) {
            const now = await storedNar(q);
            const before = stored.get(q.fileName);
            if (before !== undefined) expect(now?.etag, "a stored NAR changed").toBe(before);
            if (now !== null) {
              expect(now.bytes).toEqual(q.file);
              stored.set(q.fileName, now.etag);
            }
          }
        }
        await expectNarsHashToTheirNames();
        // Whatever happened, the honest writer can still store both NARs in parts.
        for (const p of nars) {
          const s = await started(HONEST, { fileName: p.fileName, size: p.file.length });
          if (s.stored) continue;
          await sendAll(HONEST, p.fileName, s, p.file);
          expect([200, 201]).toContain((await complete(HONEST, p.fileName, s)).status);
          expect((await storedNar(p))!.bytes).toEqual(p.file);
        }
      }),
      { numRuns: 25 },
    );
  });
});

/** A view of `bucket` that counts R2 operations (each call that reaches R2), and names them. */
function countingBucket(bucket: R2Bucket): { bucket: R2Bucket; count: number; ops: string[] } {
  const state = { bucket: bucket, count: 0, ops: [] as string[] };
  const countUpload = (upload: R2MultipartUpload): R2MultipartUpload =>
    new Proxy(upload, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          state.count++;
          state.ops.push(String(prop));
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  state.bucket = new Proxy(bucket, {
    get(target, prop) {
      const value = Reflect.get(target, prop) as unknown;
      if (typeof value !== "function") return value;
      if (prop === "resumeMultipartUpload") {
        // Local: only the upload's methods reach R2.
        return (key: string, id: string) => countUpload(target.resumeMultipartUpload(key, id));
      }
      return (...args: unknown[]) => {
        state.count++;
        state.ops.push(String(prop));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return state;
}

/** A view of `db` that counts D1 calls (each query or batch that reaches D1). */
function countingDb(db: D1Database): { db: D1Database; count: number } {
  const state = { db, count: 0 };
  const countStatement = (statement: D1PreparedStatement): D1PreparedStatement =>
    new Proxy(statement, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== "function") return value;
        if (prop === "bind") return (...args: unknown[]) => countStatement(target.bind(...args));
        return (...args: unknown[]) => {
          if (prop === "first" || prop === "all" || prop === "run" || prop === "raw") state.count++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  state.db = new Proxy(db, {
    get(target, prop) {
      const value = Reflect.get(target, prop) as unknown;
      if (typeof value !== "function") return value;
      if (prop === "prepare") return (query: string) => countStatement(target.prepare(query));
      return (...args: unknown[]) => {
        if (prop === "batch" || prop === "exec") state.count++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return state;
}

/** One cron tick at `time`, with `bucket` and `db` as the Worker's R2 and D1 bindings. */
async function tick(time: number, bucket: R2Bucket, db: D1Database = env.DB): Promise<void> {
  const ctx = createExecutionContext();
  const controller = { scheduledTime: time, cron: "* * * * *", noRetry() {} } as ScheduledController;
  await worker.scheduled!(controller, { ...env, CACHE: bucket, DB: db, GC_RETENTION_DAYS: "off" }, ctx);
  await waitOnExecutionContext(ctx);
}
