// The multipart upload API (routes/multipart.ts) inside workerd against the real local R2,
// with a small request limit (6 MiB) so that a 15 MiB NAR takes three parts.
//
// What is checked comes from HTTP and the bucket: a NAR appears under nar/ only once
// completed, with exactly the bytes of its parts and only if they hash to its name; a
// narinfo cannot point at it before; an interrupted upload resumes with the parts already
// received; nothing of an upload is left once it completes, fails verification or is
// aborted; every bad request is a 4xx with a reason and leaves the bucket as it was.
// Attacks by a second write token are in multipart-integrity.test.ts.
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { abortStaleUploads, MULTIPART_MAX_AGE_MS } from "../../src/storage/multipart.ts";
import { MIN_PART_BYTES } from "../../src/ingest/part-layout.ts";
import { bearer, bytesOf, callWith, errorOf, keys, snapshot, testPath, TEST_SECOND_WRITE_TOKEN, type TestPath, resetAll } from "../helpers/worker.ts";

/** The test limit: parts of 6 MiB, like a cache whose request limit is 6 MiB. */
const LIMIT = 6 * 1024 * 1024;
const SMALL = { MAX_NAR_UPLOAD_BYTES: String(LIMIT) };
/**
 * The multipart bookkeeping in D1 (storage/multipart-index.ts): every upload row as
 * `<writer>~<slot> <nar> <upload id>` and every part row as `… part <n> <size>`.
 */
async function bookkeeping(): Promise<string[]> {
  const uploads = await env.DB.prepare("SELECT writer, slot, nar, upload_id FROM multipart_uploads ORDER BY writer, slot").all<{ writer: string; slot: number; nar: string; upload_id: string }>();
  const parts = await env.DB.prepare("SELECT writer, slot, part_number, size FROM multipart_parts ORDER BY writer, slot, part_number").all<{ writer: string; slot: number; part_number: number; size: number }>();
  return [...uploads.results.map((r) => `${r.writer}~${r.slot} ${r.nar} ${r.upload_id}`), ...parts.results.map((r) => `${r.writer}~${r.slot} part ${r.part_number} ${r.size}`)];
}

/** The bucket and the bookkeeping: equal states mean nothing changed. */
async function state(): Promise<{ bucket: string[]; rows: string[] }> {
  return { bucket: await snapshot(), rows: await bookkeeping() };
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 64 KiB per call.
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

/** A path whose uncompressed NAR file (the Worker never reads NAR bytes) has 15 MiB + 123 bytes: parts of 6, 6 and 3 MiB + 123. */
const big = await testPath("multipart-big", { nar: randomBytes(15 * 1024 * 1024 + 123) });
const BASE = `/_api/v1/multipart/nar/${big.fileName}`;
/** A NAR name nobody uploads. */
const unused = await testPath("multipart-unused");

interface Started {
  key: string;
  stored: boolean;
  uploadId: string;
  size: number;
  partSize: number;
  partCount: number;
  parts: Array<{ partNumber: number; size: number }>;
  maxRequestBytes: number;
  verify: string;
}

function api(url: string, init: RequestInit = {}, vars: Record<string, string> = SMALL): Promise<Response> {
  return callWith(vars, url, { ...init, headers: { ...bearer(), ...(init.headers as Record<string, string> | undefined) } });
}

async function start(p: TestPath = big, vars: Record<string, string> = SMALL, body: unknown = { size: p.file.length }): Promise<Response> {
  return api(`/_api/v1/multipart/nar/${p.fileName}`, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }, vars);
}

async function started(p: TestPath = big, vars: Record<string, string> = SMALL): Promise<Started> {
  const res = await start(p, vars);
  expect([200, 201]).toContain(res.status);
  return (await res.json()) as Started;
}

function partBytes(file: Uint8Array, s: Pick<Started, "partSize">, n: number): Uint8Array {
  return file.slice((n - 1) * s.partSize, n * s.partSize);
}

function putPart(s: Started, n: number, body: Uint8Array, vars: Record<string, string> = SMALL, p: TestPath = big): Promise<Response> {
  return api(`/_api/v1/multipart/nar/${p.fileName}/${n}?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "PUT", body }, vars);
}

function complete(s: Started, vars: Record<string, string> = SMALL, p: TestPath = big): Promise<Response> {
  return api(`/_api/v1/multipart/nar/${p.fileName}/complete?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "POST" }, vars);
}

async function uploadAll(s: Started, file: Uint8Array = big.file, vars: Record<string, string> = SMALL, p: TestPath = big): Promise<void> {
  const done = new Set(s.parts.map((x) => x.partNumber));
  for (let n = 1; n <= s.partCount; n++) {
    if (done.has(n)) continue;
    const res = await putPart(s, n, partBytes(file, s, n), vars, p);
    expect(res.status, await res.clone().text()).toBe(200);
  }
}

function putNarInfo(p: TestPath = big): Promise<Response> {
  return api(`/${p.hash}.narinfo`, { method: "PUT", body: formatNarInfo(p.info) });
}

beforeEach(() => resetAll());

describe("limits", () => {
  it("tells writers the request limit and R2's part rules", async () => {
    const res = await api("/_api/v1/limits");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      maxRequestBytes: LIMIT,
      minPartBytes: 5 * 1024 * 1024,
      maxParts: 10_000,
      defaultPartBytes: 64 * 1024 * 1024,
      multipartVerify: "sha256",
    });
  });

  it("reports the default limit of 100 MiB", async () => {
    const res = await api("/_api/v1/limits", {}, {});
    expect(((await res.json()) as { maxRequestBytes: number }).maxRequestBytes).toBe(100 * 1024 * 1024);
  });

  it("needs a write token", async () => {
    const res = await callWith(SMALL, "/_api/v1/limits");
    expect(res.status).toBe(401);
  });
});

describe("a multipart upload", { timeout: 60_000 }, () => {
  it("stores the NAR only at completion, with exactly the bytes of its parts", async () => {
    const s = await started();
    expect(s).toMatchObject({ key: `nar/${big.fileName}`, stored: false, size: big.file.length, partSize: LIMIT, partCount: 3, parts: [], maxRequestBytes: LIMIT, verify: "sha256" });

    // Parts may arrive in any order.
    for (const n of [3, 1, 2]) {
      const res = await putPart(s, n, partBytes(big.file, s, n));
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ partNumber: n, size: n === 3 ? big.file.length - 2 * LIMIT : LIMIT });
    }
    // Before completion nothing is visible as a NAR, and no narinfo may point at it.
    expect((await api(`/nar/${big.fileName}`, { method: "HEAD" })).status).toBe(404);
    const early = await putNarInfo();
    expect(early.status).toBe(422);
    expect(await errorOf(early)).toMatch(/not in the cache/);

    const done = await complete(s);
    expect(done.status).toBe(201);
    expect(await done.json()).toEqual({ key: `nar/${big.fileName}`, size: big.file.length });
    const got = await api(`/nar/${big.fileName}`);
    expect(got.status).toBe(200);
    expect(await bytesOf(got)).toEqual(big.file);
    expect((await putNarInfo()).status).toBe(201);
    // The bookkeeping is gone: only the NAR and its narinfo remain.
    expect(await keys()).toEqual([`${big.hash}.narinfo`, `nar/${big.fileName}`].sort());
    expect(await bookkeeping()).toEqual([]);
  });

  it("resumes: a second start returns the same upload and the parts already received", async () => {
    const first = await started();
    expect((await putPart(first, 1, partBytes(big.file, first, 1))).status).toBe(200);
    expect((await putPart(first, 3, partBytes(big.file, first, 3))).status).toBe(200);

    const res = await start();
    expect(res.status).toBe(200);
    const again = (await res.json()) as Started;
    expect(again.uploadId).toBe(first.uploadId);
    expect(again.parts).toEqual([
      { partNumber: 1, size: LIMIT },
      { partNumber: 3, size: big.file.length - 2 * LIMIT },
    ]);
    await uploadAll(again);
    expect((await complete(again)).status).toBe(201);
    expect(await bytesOf(await api(`/nar/${big.fileName}`))).toEqual(big.file);
  });

  it("a part sent again replaces the first copy", async () => {
    const s = await started();
    const wrong = randomBytes(LIMIT);
    expect((await putPart(s, 1, wrong)).status).toBe(200);
    await uploadAll({ ...s, parts: [] });
    expect((await complete(s)).status).toBe(201);
    expect(await bytesOf(await api(`/nar/${big.fileName}`))).toEqual(big.file);
  });

  it("two starts at the same moment share one upload", async () => {
    const [a, b] = await Promise.all([start(), start()]);
    expect([200, 201]).toContain(a.status);
    expect([200, 201]).toContain(b.status);
    const ids = [((await a.json()) as Started).uploadId, ((await b.json()) as Started).uploadId];
    expect(ids[0]).toBe(ids[1]);
  });

  it("refuses to complete with parts missing (422 naming them), and stores nothing", async () => {
    const s = await started();
    expect((await putPart(s, 1, partBytes(big.file, s, 1))).status).toBe(200);
    const res = await complete(s);
    expect(res.status).toBe(422);
    expect(await errorOf(res)).toMatch(/parts 2, 3 of 3 not received/);
    expect((await keys()).filter((k) => k.startsWith("nar/"))).toEqual([]);
  });

  it("answers a retried completion with the stored NAR", async () => {
    const s = await started();
    await uploadAll(s);
    expect((await complete(s)).status).toBe(201);
    const again = await complete(s);
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ key: `nar/${big.fileName}`, size: big.file.length, stored: true });
  });

  it("says when the NAR is stored already", async () => {
    const s = await started();
    await uploadAll(s);
    expect((await complete(s)).status).toBe(201);
    const res = await start();
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ key: `nar/${big.fileName}`, stored: true, size: big.file.length });
    const other = await start(big, SMALL, { size: big.file.length + 1 });
    expect(other.status).toBe(400);
    expect(await errorOf(other)).toMatch(/stored with \d+ bytes/);
  });

  it("can be aborted: parts are refused afterwards and the next start begins anew", async () => {
    const s = await started();
    expect((await putPart(s, 1, partBytes(big.file, s, 1))).status).toBe(200);
    const del = await api(`${BASE}?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "DELETE" });
    expect(del.status).toBe(204);
    expect(await keys()).toEqual([]);
    expect(await bookkeeping()).toEqual([]);
    // Aborting what is not there (any more) is not an error.
    expect((await api(`${BASE}?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "DELETE" })).status).toBe(204);
    const late = await putPart(s, 2, partBytes(big.file, s, 2));
    expect(late.status).toBe(404);
    expect(await errorOf(late)).toMatch(/start one/);
    const next = await start();
    expect(next.status).toBe(201);
    expect(((await next.json()) as Started).uploadId).not.toBe(s.uploadId);
  });

  it("begins anew when the tracked upload is older than the max age, leaving the old one to the cleanup", async () => {
    const s = await started();
    expect((await putPart(s, 1, partBytes(big.file, s, 1))).status).toBe(200);
    // Age the upload as a day and a bit would.
    await env.DB.prepare("UPDATE multipart_uploads SET started = ?1").bind(Date.now() - MULTIPART_MAX_AGE_MS - 3600_000).run();
    const res = await start();
    expect(res.status).toBe(201);
    const fresh = (await res.json()) as Started;
    expect(fresh.uploadId).not.toBe(s.uploadId);
    expect(fresh.parts).toEqual([]);
    // The next start resumes the fresh one, not the old one.
    const again = (await (await start()).json()) as Started;
    expect(again.uploadId).toBe(fresh.uploadId);
    // The cleanup aborts the old one at R2 and drops its objects; the fresh one stays.
    const pass = await abortStaleUploads({ bucket: env.CACHE, db: env.DB });
    expect(pass.aborted).toEqual([`WRITE_TOKEN nar/${big.fileName}`]);
    const stale = await putPart(s, 2, partBytes(big.file, s, 2));
    expect(stale.status).toBe(404);
    expect(await keys()).toEqual([]);
    expect(await bookkeeping()).toEqual([`WRITE_TOKEN~1 ${big.fileName} ${fresh.uploadId.split(":")[1]}`]);
    await uploadAll(fresh);
    expect((await complete(fresh)).status).toBe(201);
    expect(await keys()).toEqual([`nar/${big.fileName}`]);
    expect(await bookkeeping()).toEqual([]);
  });

  it("begins anew when a start declares another size, discarding the old upload", async () => {
    const s = await started();
    expect((await putPart(s, 1, partBytes(big.file, s, 1))).status).toBe(200);
    const res = await start(big, SMALL, { size: big.file.length - 1 });
    expect(res.status).toBe(201);
    const fresh = (await res.json()) as Started;
    expect(fresh.uploadId).not.toBe(s.uploadId);
    // Only the new upload's row is left: the old one's part row went with it.
    expect(await bookkeeping()).toEqual([`WRITE_TOKEN~0 ${big.fileName} ${fresh.uploadId.split(":")[1]}`]);
    expect(await keys()).toEqual([]);
    expect((await putPart(s, 2, partBytes(big.file, s, 2))).status).toBe(409);
  });

  it("uses the requested part size when it follows the rules", async () => {
    const res = await start(big, SMALL, { size: big.file.length, partSize: MIN_PART_BYTES });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ partSize: MIN_PART_BYTES, partCount: 4 });
  });

  it("stores the NAR only when its bytes hash to its name; a forgery leaves nothing behind", async () => {
    const good = await started();
    expect(good.verify).toBe("sha256");
    await uploadAll(good);
    expect((await complete(good)).status).toBe(201);
    expect(await bytesOf(await api(`/nar/${big.fileName}`))).toEqual(big.file);
    expect(await keys()).toEqual([`nar/${big.fileName}`]);

    const other = await testPath("multipart-other", { nar: randomBytes(11 * 1024 * 1024) });
    const bad = await started(other);
    // Bytes of the right size, in parts of the right sizes: only the hash can tell.
    const forged = randomBytes(other.file.length);
    await uploadAll(bad, forged, SMALL, other);
    const res = await complete(bad, SMALL, other);
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatch(/do not hash to the sha256/);
    // No NAR, no assembled object, no part rows, no upload row.
    expect(await keys()).toEqual([`nar/${big.fileName}`]);
    expect(await bookkeeping()).toEqual([]);
    expect((await complete(bad, SMALL, other)).status).toBe(404);
  });

  it("completing when the NAR got stored meanwhile answers that it is stored, changes nothing and cleans up", async () => {
    const s = await started();
    await uploadAll(s);
    const other = await callWith(SMALL, BASE, {
      method: "POST",
      body: JSON.stringify({ size: big.file.length }),
      headers: { ...bearer(TEST_SECOND_WRITE_TOKEN), "Content-Type": "application/json" },
    });
    const theirs = (await other.json()) as Started;
    for (let n = 1; n <= theirs.partCount; n++) {
      const res = await callWith(SMALL, `${BASE}/${n}?uploadId=${encodeURIComponent(theirs.uploadId)}`, { method: "PUT", body: partBytes(big.file, theirs, n), headers: bearer(TEST_SECOND_WRITE_TOKEN) });
      expect(res.status).toBe(200);
    }
    const first = await callWith(SMALL, `${BASE}/complete?uploadId=${encodeURIComponent(theirs.uploadId)}`, { method: "POST", headers: bearer(TEST_SECOND_WRITE_TOKEN) });
    expect(first.status).toBe(201);
    const before = (await snapshot()).filter((k) => k.startsWith("nar/"));
    expect(before).toHaveLength(1);
    const res = await complete(s);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ key: `nar/${big.fileName}`, size: big.file.length, stored: true });
    // The NAR as it was (same etag), and nothing else: this upload's parts went too.
    expect(await snapshot()).toEqual(before);
    expect(await bookkeeping()).toEqual([]);
  });
});

describe("bad multipart requests: a 4xx with a reason, the bucket unchanged", { timeout: 30_000 }, () => {
  const tooManyParts = LIMIT * 10_001;
  interface Case {
    /** Builds the request once an upload with part 1 received exists. */
    request: (s: Started) => [url: string, init: RequestInit, vars?: Record<string, string>];
    status: number;
    error: RegExp;
  }
  const url = (s: Started, n: number | string) => `${BASE}/${n}?uploadId=${encodeURIComponent(s.uploadId)}`;
  /** The same slot with another R2 upload id: what an upload replaced by a newer one holds. */
  const otherId = (s: Started) => `${s.uploadId.slice(0, s.uploadId.indexOf(":"))}:someOtherR2UploadId`;
  const cases: Record<string, Case> = {
    "start without a token": { request: () => [BASE, { method: "POST", body: "{}", headers: { Authorization: "" } }], status: 401, error: /token/ },
    "start of a bad NAR name": { request: () => ["/_api/v1/multipart/nar/x.nar", { method: "POST", body: '{"size":1}' }], status: 400, error: /nar\/<52-char/ },
    "start with a name hash over 256 bits": { request: () => [`/_api/v1/multipart/nar/z${big.fileName.slice(1)}`, { method: "POST", body: '{"size":1}' }], status: 400, error: /start with 0 or 1/ },
    "start with an encoded slash": { request: () => [`/_api/v1/multipart/nar/..%2f${big.hash}.narinfo`, { method: "POST", body: '{"size":1}' }], status: 400, error: /nar\/<52-char/ },
    "start that is not JSON": { request: () => [BASE, { method: "POST", body: "size=1" }], status: 400, error: /not JSON/ },
    "start without a size": { request: () => [BASE, { method: "POST", body: "{}" }], status: 400, error: /size/ },
    "start with a negative size": { request: () => [BASE, { method: "POST", body: '{"size":-5}' }], status: 400, error: /size/ },
    "start with a fractional size": { request: () => [BASE, { method: "POST", body: '{"size":1.5}' }], status: 400, error: /size/ },
    "start needing more than 10,000 parts": { request: () => [BASE, { method: "POST", body: JSON.stringify({ size: tooManyParts }) }], status: 413, error: /10000 parts/ },
    "start with a part size under 5 MiB": {
      request: () => [BASE, { method: "POST", body: JSON.stringify({ size: big.file.length, partSize: MIN_PART_BYTES - 1 }) }],
      status: 400,
      error: /at least 5242880/,
    },
    "start with a part size over the limit": {
      request: () => [BASE, { method: "POST", body: JSON.stringify({ size: big.file.length, partSize: LIMIT + 1 }) }],
      status: 413,
      error: /limit of 6291456/,
    },
    "start on a cache whose limit is under R2's minimum part": {
      request: () => [BASE, { method: "POST", body: JSON.stringify({ size: big.file.length }) }, { MAX_NAR_UPLOAD_BYTES: "1000000" }],
      status: 413,
      error: /minimum part size/,
    },
    "start over the 5 GiB one verified put takes": {
      request: () => [BASE, { method: "POST", body: JSON.stringify({ size: 6 * 1024 ** 3 }) }, { MAX_NAR_UPLOAD_BYTES: String(100 * 1024 * 1024) }],
      status: 413,
      error: /in one R2 put, which takes at most 5363466240 bytes/,
    },
    "part without an upload id": { request: () => [`${BASE}/2`, { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2) }], status: 400, error: /uploadId/ },
    "part with a malformed upload id": {
      request: () => [`${BASE}/2?uploadId=not-this-one`, { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2) }],
      status: 400,
      error: /uploadId/,
    },
    "part with another upload id of this token's slot": {
      request: (s) => [`${BASE}/2?uploadId=${encodeURIComponent(otherId(s))}`, { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2) }],
      status: 409,
      error: /replaced this one/,
    },
    "part with an upload id of a free slot": {
      request: (s) => [`${BASE}/2?uploadId=${encodeURIComponent(s.uploadId.replace("~0:", "~5:"))}`, { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2) }],
      status: 404,
      error: /no multipart upload/,
    },
    "part with an upload id of a slot that cannot exist": {
      request: (s) => [`${BASE}/2?uploadId=${encodeURIComponent(s.uploadId.replace("~0:", "~64:"))}`, { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2) }],
      status: 400,
      error: /uploadId/,
    },
    "part by another write token": {
      request: (s) => [url(s, 2), { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2), headers: bearer(TEST_SECOND_WRITE_TOKEN) }],
      status: 403,
      error: /started by another token/,
    },
    "part number 0": { request: (s) => [url(s, 0), { method: "PUT", body: new Uint8Array(10) }], status: 400, error: /part numbers/ },
    "part number 10001": { request: (s) => [url(s, 10001), { method: "PUT", body: new Uint8Array(10) }], status: 400, error: /part numbers/ },
    "part beyond the last": { request: (s) => [url(s, 4), { method: "PUT", body: new Uint8Array(10) }], status: 400, error: /has 3 parts/ },
    "part of the wrong size": { request: (s) => [url(s, 2), { method: "PUT", body: new Uint8Array(LIMIT - 1) }], status: 400, error: /must have 6291456 bytes/ },
    "last part of the wrong size": { request: (s) => [url(s, 3), { method: "PUT", body: new Uint8Array(LIMIT) }], status: 400, error: /the last part/ },
    "part over the request limit": { request: (s) => [url(s, 2), { method: "PUT", body: new Uint8Array(LIMIT + 1) }], status: 413, error: /over the limit of 6291456 bytes/ },
    "part without Content-Length": {
      request: (s) => [url(s, 2), { method: "PUT", body: new Blob([new Uint8Array(LIMIT)]).stream() }],
      status: 411,
      error: /Content-Length/,
    },
    "part shorter than its Content-Length": {
      request: (s) => [url(s, 2), { method: "PUT", body: new Uint8Array(100), headers: { "Content-Length": String(LIMIT) } }],
      status: 400,
      error: /exactly its Content-Length/,
    },
    "part with a Content-Encoding": {
      request: (s) => [url(s, 2), { method: "PUT", body: partBytes(big.file, { partSize: LIMIT }, 2), headers: { "Content-Encoding": "gzip" } }],
      status: 415,
      error: /Content-Encoding/,
    },
    "part for a NAR with no upload": {
      request: (s) => [`/_api/v1/multipart/nar/${unused.fileName}/1?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "PUT", body: new Uint8Array(10) }],
      status: 404,
      error: /no multipart upload/,
    },
    "part without a token": { request: (s) => [url(s, 2), { method: "PUT", body: new Uint8Array(10), headers: { Authorization: "Bearer wrong" } }], status: 401, error: /not valid/ },
    "complete with parts missing": { request: (s) => [`${BASE}/complete?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "POST" }], status: 422, error: /parts 2, 3/ },
    "complete with a malformed upload id": { request: () => [`${BASE}/complete?uploadId=nope`, { method: "POST" }], status: 400, error: /uploadId/ },
    "complete with another upload id": { request: (s) => [`${BASE}/complete?uploadId=${encodeURIComponent(otherId(s))}`, { method: "POST" }], status: 409, error: /replaced/ },
    "complete by another write token": {
      request: (s) => [`${BASE}/complete?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "POST", headers: bearer(TEST_SECOND_WRITE_TOKEN) }],
      status: 403,
      error: /started by another token/,
    },
    "abort with another upload id": { request: (s) => [`${BASE}?uploadId=${encodeURIComponent(otherId(s))}`, { method: "DELETE" }], status: 409, error: /replaced/ },
    "abort by another write token": {
      request: (s) => [`${BASE}?uploadId=${encodeURIComponent(s.uploadId)}`, { method: "DELETE", headers: bearer(TEST_SECOND_WRITE_TOKEN) }],
      status: 403,
      error: /started by another token/,
    },
  };

  for (const [name, c] of Object.entries(cases)) {
    it(name, async () => {
      const s = await started();
      expect((await putPart(s, 1, partBytes(big.file, s, 1))).status).toBe(200);
      const before = await state();
      expect(before.rows).toHaveLength(2);
      const [u, init, vars] = c.request(s);
      const res = await api(u, init, vars ?? SMALL);
      expect(res.status).toBe(c.status);
      expect(await errorOf(res)).toMatch(c.error);
      expect(await state()).toEqual(before);
    });
  }
});
