// Hostile and malformed requests: each gets a 4xx with a clean JSON reason, and the
// bucket is exactly as before (every key and etag). Nix disables a cache after a 5xx and
// Nix 2.8 hangs on a 5xx answer to a PUT, so bad input must never produce one.
import { beforeEach, describe, expect, it } from "vitest";
import { toBase64, utf8 } from "../../src/nix/encoding.ts";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { MAX_NARINFO_LENGTH } from "../../src/nix/narinfo.ts";
import { bearer, call, push, putNar, snapshot, testPath, TEST_WRITE_TOKEN, resetAll } from "../helpers/worker.ts";

const dep = await testPath("hostile-dep");
const victim = await testPath("hostile-victim", { references: [dep] });
/** A path whose NAR is never stored: uploads of it fail only for the reason under test. */
const fresh = await testPath("hostile-fresh");
const FRESH = `/nar/${fresh.fileName}`;
const good = formatNarInfo(victim.info);
const H = victim.hash;
const NAR = `/nar/${victim.fileName}`;
const NI = `/${H}.narinfo`;
const DRV = `${dep.hash}-hello.drv`;

beforeEach(async () => {
  await resetAll();
  await push(dep);
  expect((await putNar(victim)).status).toBe(201);
  // The victim's narinfo would be accepted as is: every refusal below is due to the change.
  expect(good.startsWith("StorePath: ")).toBe(true);
});

interface Hostile {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array | "stream";
  /** Expected status when one is specific; any 4xx otherwise. */
  status?: number;
  /** What the error message must say, when the reason matters. */
  error?: RegExp;
}

/** Replaces the first `key: value` line of the good narinfo. */
function withLine(key: string, value: string | null): string {
  const lines = good.split("\n");
  const i = lines.findIndex((l) => l.startsWith(`${key}: `));
  if (value === null) lines.splice(i, 1);
  else lines[i] = `${key}: ${value}`;
  return lines.join("\n");
}

const longName = "a".repeat(212);
const cases: Record<string, Hostile> = {
  // Traversal-looking and malformed keys
  "GET /nar/../x": { path: "/nar/../x", status: 404 },
  "GET /%2e%2e/%2e%2e/etc/passwd": { path: "/%2e%2e/%2e%2e/etc/passwd", status: 404 },
  "PUT /nar/..%2fNARINFO": { method: "PUT", path: `/nar/..%2f${H}.narinfo`, body: good, status: 400 },
  "PUT /nar/%2e%2e%2f<hash>.narinfo": { method: "PUT", path: `/nar/%2e%2e%2f${H}.narinfo`, body: good, status: 400 },
  "PUT nar file with %2f inside": { method: "PUT", path: `${NAR}%2f..%2fx`, body: victim.file, status: 400 },
  "GET nar with encoded slash": { path: `${NAR}%2fextra`, status: 404 },
  "PUT narinfo with NUL": { method: "PUT", path: `/${H}.narinfo%00`, body: good },
  "PUT narinfo key with e/o/t/u": { method: "PUT", path: `/${"eotu".repeat(8)}.narinfo`, body: good, status: 400 },
  "PUT narinfo key of 31 chars": { method: "PUT", path: `/${H.slice(1)}.narinfo`, body: good, status: 400 },
  "PUT narinfo key in upper case": { method: "PUT", path: `/${H.toUpperCase()}.narinfo`, body: good, status: 400 },
  "PUT narinfo key with a name": { method: "PUT", path: `/${victim.baseName}.narinfo`, body: good, status: 400 },
  "PUT .narinfo alone": { method: "PUT", path: "/.narinfo", body: good },
  "PUT NAR name of 51 chars": { method: "PUT", path: `/nar/${victim.fileName.slice(1)}`, body: victim.file, status: 400 },
  "PUT NAR name with high bits (starts with 2)": { method: "PUT", path: `/nar/2${victim.fileName.slice(1)}`, body: victim.file, status: 400 },
  "PUT NAR name with an e": { method: "PUT", path: `/nar/0${"e".repeat(51)}.nar`, body: victim.file, status: 400 },
  "PUT NAR with unknown extension": { method: "PUT", path: `${NAR}.gz`, body: victim.file, status: 400 },
  "PUT NAR in upper case": { method: "PUT", path: NAR.toUpperCase(), body: victim.file },
  "PUT NAR under a nested path": { method: "PUT", path: `/nar/x${NAR}`, body: victim.file, status: 400 },
  "PUT log with a space": { method: "PUT", path: `/log/${dep.hash}-a%20b.drv`, body: "x", status: 400 },
  "PUT log name ..-x": { method: "PUT", path: `/log/${dep.hash}-..-x.drv`, body: "x", status: 400 },
  "PUT log without .drv": { method: "PUT", path: `/log/${dep.baseName}`, body: "x", status: 400 },
  "PUT log with a bad hash": { method: "PUT", path: `/log/${"u".repeat(32)}-x.drv`, body: "x", status: 400 },
  "PUT log with encoded traversal": { method: "PUT", path: `/log/..%2f${H}.narinfo`, body: good, status: 400 },
  "PUT realisation with a bad id": { method: "PUT", path: "/realisations/sha256:zz!out.doi", body: "{}", status: 400 },
  "PUT build trace with an extra level": { method: "PUT", path: `/build-trace-v2/${DRV}/x/out.doi`, body: "{}", status: 400 },
  "PUT debuginfo of 39 hex": { method: "PUT", path: `/debuginfo/${"a".repeat(39)}`, body: "{}", status: 400 },
  "PUT unknown top-level file": { method: "PUT", path: "/index.html", body: "x", status: 404 },
  "DELETE a narinfo": { method: "DELETE", path: NI, status: 404 },
  "POST a narinfo": { method: "POST", path: NI, body: good, status: 404 },
  "GET the batch endpoint": { path: "/_api/v1/missing", status: 404 },

  // Bad store paths inside the narinfo
  "StorePath with é": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/${H}-h\u00e9llo`), status: 400 },
  "StorePath with a space": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/${H}-a b`), status: 400 },
  "StorePath with a 212-char name": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/${H}-${longName}`), status: 400 },
  "StorePath named ..": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/${H}-..`), status: 400 },
  "StorePath named .-x": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/${H}-.-x`), status: 400 },
  "StorePath without the dash": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/${H}xhello`), status: 400 },
  "StorePath in another store dir": { method: "PUT", path: NI, body: withLine("StorePath", `/gnu/store/${victim.baseName}`), status: 400 },
  "StorePath with traversal": { method: "PUT", path: NI, body: withLine("StorePath", `/nix/store/../etc/${victim.baseName}`), status: 400 },
  "a reference with traversal": { method: "PUT", path: NI, body: withLine("References", `../${dep.baseName}`), status: 400 },
  "a reference that is a full path": { method: "PUT", path: NI, body: withLine("References", dep.storePath), status: 400 },
  "a Deriver that is not a base name": { method: "PUT", path: NI, body: `${good}Deriver: /nix/store/${DRV}\n`, status: 400 },

  // Malformed narinfos
  "an empty narinfo": { method: "PUT", path: NI, body: "", status: 400 },
  "no final newline": { method: "PUT", path: NI, body: good.slice(0, -1), status: 400 },
  "CRLF line endings": { method: "PUT", path: NI, body: good.replaceAll("\n", "\r\n"), status: 400 },
  "no StorePath": { method: "PUT", path: NI, body: withLine("StorePath", null), status: 400 },
  "no URL": { method: "PUT", path: NI, body: withLine("URL", null), status: 400 },
  "no NarHash": { method: "PUT", path: NI, body: withLine("NarHash", null), status: 400 },
  "no NarSize": { method: "PUT", path: NI, body: withLine("NarSize", null), status: 400 },
  "NarSize 0": { method: "PUT", path: NI, body: withLine("NarSize", "0"), status: 400 },
  "NarSize -1": { method: "PUT", path: NI, body: withLine("NarSize", "-1"), status: 400 },
  "NarSize 12a": { method: "PUT", path: NI, body: withLine("NarSize", "12a"), status: 400 },
  "NarSize beyond 2^53": { method: "PUT", path: NI, body: withLine("NarSize", "99999999999999999999"), status: 400 },
  "NarHash md5": { method: "PUT", path: NI, body: withLine("NarHash", "md5:d41d8cd98f00b204e9800998ecf8427e"), status: 400 },
  "NarHash with an e": { method: "PUT", path: NI, body: withLine("NarHash", `sha256:${"e".repeat(52)}`), status: 400 },
  "StorePath twice": { method: "PUT", path: NI, body: `${good}StorePath: ${victim.storePath}\n`, status: 400 },
  "a garbage Sig": { method: "PUT", path: NI, body: `${good}Sig: garbage\n`, status: 400 },
  "a Sig with a short signature": { method: "PUT", path: NI, body: `${good}Sig: k:${toBase64(new Uint8Array(32))}\n`, status: 400 },
  "Compression foo": { method: "PUT", path: NI, body: withLine("Compression", "foo"), status: 400 },
  "no space after the colon": { method: "PUT", path: NI, body: good.replace("NarSize: ", "NarSize:"), status: 400 },
  "a leading space in a key": { method: "PUT", path: NI, body: good.replace("URL: ", " URL: "), status: 400 },
  "a line without colon": { method: "PUT", path: NI, body: `${good}garbage\n`, status: 400 },
  "invalid UTF-8": { method: "PUT", path: NI, body: new Uint8Array([0x53, 0x74, 0xff, 0xfe, 0x0a]), status: 400 },
  "binary garbage": { method: "PUT", path: NI, body: new Uint8Array(64).fill(0), status: 400 },
  "a JSON body": { method: "PUT", path: NI, body: JSON.stringify(victim.info), status: 400 },
  "an oversized narinfo": { method: "PUT", path: NI, body: good + `X-Pad: ${"p".repeat(MAX_NARINFO_LENGTH)}\n`, status: 413 },
  "a narinfo said to be gzip that is not": { method: "PUT", path: NI, body: good, headers: { "Content-Encoding": "gzip" }, status: 400, error: /gzip/ },
  "an xz-encoded narinfo (the Worker cannot decode xz)": { method: "PUT", path: NI, body: good, headers: { "Content-Encoding": "xz" }, status: 415 },
  "a narinfo with a stray CR": { method: "PUT", path: NI, body: withLine("References", `${dep.baseName}\r`), status: 400 },

  // Bodies that do not match their headers
  "NAR truncated vs Content-Length": { method: "PUT", path: FRESH, body: fresh.file.slice(0, 10), headers: { "Content-Length": String(fresh.file.length) }, status: 400, error: /Content-Length/ },
  "NAR longer than Content-Length": { method: "PUT", path: FRESH, body: fresh.file, headers: { "Content-Length": "16" }, status: 400, error: /Content-Length/ },
  "NAR without Content-Length (chunked)": { method: "PUT", path: FRESH, body: "stream", status: 411 },
  "NAR with a malformed Content-Length": { method: "PUT", path: FRESH, body: fresh.file, headers: { "Content-Length": "12abc" } },
  "NAR with the wrong sha256": { method: "PUT", path: FRESH, body: victim.file, status: 400, error: /sha256/ },
  "NAR with a different length than the stored one": { method: "PUT", path: NAR, body: victim.file.slice(1), status: 400 },
  "narinfo truncated vs Content-Length": { method: "PUT", path: NI, body: good.slice(0, 40), headers: { "Content-Length": String(good.length) }, status: 400 },
  "log without Content-Length (chunked)": { method: "PUT", path: `/log/${DRV}`, body: "stream", status: 411 },
  "batch query truncated": { method: "POST", path: "/_api/v1/missing", body: '{"hashes":[]}', headers: { "Content-Length": "200" }, status: 400 },
};

const credentials: Record<string, Record<string, string>> = {
  "no Authorization": {},
  "Basic !!!": { Authorization: "Basic !!!" },
  "Basic without a value": { Authorization: "Basic" },
  "Bearer empty": { Authorization: "Bearer " },
  "Bearer alone": { Authorization: "Bearer" },
  "an unknown scheme": { Authorization: `Token ${TEST_WRITE_TOKEN}` },
  "Digest": { Authorization: `Digest username="nix", response="${TEST_WRITE_TOKEN}"` },
  "Basic without a colon": { Authorization: `Basic ${toBase64(utf8(TEST_WRITE_TOKEN))}` },
  "Basic with the token as user name": { Authorization: `Basic ${toBase64(utf8(`${TEST_WRITE_TOKEN}:`))}` },
  "Basic with a wrong password": { Authorization: `Basic ${toBase64(utf8("nix:wrong"))}` },
  "Bearer with a wrong token": bearer("wrong"),
  "Bearer with a prefix of the token": bearer(TEST_WRITE_TOKEN.slice(0, -1)),
  "Bearer with the token and more": bearer(`${TEST_WRITE_TOKEN}x`),
  "Bearer with a 10 kB token": bearer("x".repeat(10_000)),
  "the token as a bare header": { Authorization: TEST_WRITE_TOKEN },
};

async function send(c: Hostile, auth: Record<string, string> = bearer()): Promise<Response> {
  const body =
    c.body === "stream"
      ? new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(victim.file);
            controller.close();
          },
        })
      : c.body;
  return call(c.path, { method: c.method ?? "GET", headers: { ...auth, ...c.headers }, ...(body === undefined ? {} : { body }) });
}

async function expectCleanRefusal(res: Response, expected: number | undefined, error?: RegExp): Promise<void> {
  if (expected !== undefined) expect(res.status).toBe(expected);
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
  const text = await res.text();
  const body = JSON.parse(text) as { error: string };
  expect(typeof body.error).toBe("string");
  if (error !== undefined) expect(body.error).toMatch(error);
  expect(text).not.toMatch(/\n\s+at |Error:|TypeError|R2|internal/);
}

describe("hostile requests get a 4xx and leave the bucket unchanged", () => {
  it.each(Object.entries(cases))("%s", async (_label, c) => {
    const before = await snapshot();
    await expectCleanRefusal(await send(c), c.status, c.error);
    expect(await snapshot()).toEqual(before);
  });
});

describe("bad credentials on every upload route get a 401 and leave the bucket unchanged", () => {
  const uploads: Record<string, Hostile> = {
    NAR: { method: "PUT", path: NAR.replace(victim.fileName, dep.fileName), body: dep.file },
    narinfo: { method: "PUT", path: NI, body: good },
    log: { method: "PUT", path: `/log/${DRV}`, body: "log\n" },
    "nix-cache-info": { method: "PUT", path: "/nix-cache-info", body: "StoreDir: /nix/store\n" },
    missing: { method: "POST", path: "/_api/v1/missing", body: '{"hashes":[]}' },
  };
  const table = Object.entries(credentials).flatMap(([cred, headers]) =>
    Object.entries(uploads).map(([route, c]) => [`${cred} on ${route}`, headers, c] as const),
  );
  it.each(table)("%s", async (_label, headers, c) => {
    const before = await snapshot();
    const res = await send(c, headers);
    await expectCleanRefusal(res, 401);
    expect(res.headers.get("WWW-Authenticate")).toBe('Basic realm="nix-edge-cache", charset="UTF-8"');
    expect(await snapshot()).toEqual(before);
  });
});

describe("the same uploads with the right token succeed (the table's baseline)", () => {
  it("the victim narinfo and a dependency NAR are accepted", async () => {
    expect((await call(NI, { method: "PUT", body: good, headers: bearer() })).status).toBe(201);
    expect((await call(`/log/${DRV}`, { method: "PUT", body: "log\n", headers: bearer() })).status).toBe(201);
  });
});
