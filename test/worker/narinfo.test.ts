// /<hash>.narinfo: validated uploads (StorePath, URL, Compression, stored NAR, references,
// signatures), immutability with signature merging, and reads.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo, parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { verifyNarInfo } from "../../src/nix/signature.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { utf8 } from "../../src/nix/encoding.ts";
import { extensionFor } from "../../src/ingest/narinfo-acceptance.ts";
import { MAX_REFERENCES } from "../../src/ingest/references.ts";
import {
  bearer,
  call,
  callWith,
  errorOf,
  OTHER_KEY,
  push,
  putNar,
  putNarInfo,
  signed,
  snapshot,
  TEST_KEY,
  TEST_KEY_TEXT,
  TEST_PUBLIC_KEY,
  TEST_PUBLIC_KEY_TEXT,
  testPath,
  type TestPath,
} from "../helpers/worker.ts";

afterEach(() => reset());

/** A path whose NAR is already uploaded. */
async function withNar(name: string, opts: Parameters<typeof testPath>[1] = {}): Promise<TestPath> {
  const p = await testPath(name, opts);
  expect((await putNar(p)).status).toBe(201);
  return p;
}

function putWith(overrides: Record<string, string>, p: TestPath, info: NarInfo): Promise<Response> {
  return callWith(overrides, `/${p.hash}.narinfo`, { method: "PUT", body: formatNarInfo(info), headers: bearer() });
}

describe("PUT /<hash>.narinfo: accepted uploads", () => {
  it("stores a narinfo after its NAR and serves it byte for byte", async () => {
    const p = await withNar("hello-2.12");
    const text = formatNarInfo(p.info);
    const res = await putNarInfo(p.hash, text);
    expect(res.status).toBe(201);
    const get = await call(`/${p.hash}.narinfo`);
    expect(get.status).toBe(200);
    expect(get.headers.get("Content-Type")).toBe("text/x-nix-narinfo");
    expect(get.headers.get("Cache-Control")).toBe("public, max-age=300, s-maxage=60");
    expect(await get.text()).toBe(text);
    const head = await call(`/${p.hash}.narinfo`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Length")).toBe(String(utf8(text).length));
    const etag = head.headers.get("ETag")!;
    expect((await call(`/${p.hash}.narinfo`, { headers: { "If-None-Match": etag } })).status).toBe(304);
  });

  it("accepts a gzip NAR named .nar (as Nix names it) and Basic credentials", async () => {
    const p = await withNar("gzipped", { compression: "gzip" });
    expect(p.info.compression).toBe("gzip");
    const res = await putNarInfo(p.hash, formatNarInfo(p.info), { Authorization: `Basic ${btoa("nix:test-write-token")}` });
    expect(res.status).toBe(201);
  });

  it("accepts a narinfo whose references are already in the cache, and a self-reference", async () => {
    const dep = await testPath("dep-lib");
    await push(dep);
    const app = await withNar("app", { references: [dep], selfReference: true });
    expect(app.info.references).toContain(app.baseName);
    expect((await putNarInfo(app.hash, formatNarInfo(app.info))).status).toBe(201);
  });

  it("keeps unknown fields, Deriver and CA as uploaded", async () => {
    const p = await withNar("with-extras");
    const info: NarInfo = {
      ...p.info,
      deriver: `${p.hash.replace(/^./, "0")}-with-extras.drv`,
      ca: "fixed:r:sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h",
      extra: [["Foo", "bar"]],
    };
    expect((await putNarInfo(p.hash, formatNarInfo(info))).status).toBe(201);
    expect(await (await call(`/${p.hash}.narinfo`)).text()).toBe(formatNarInfo(info));
  });
});

describe("PUT /<hash>.narinfo: refused uploads say why and store nothing", () => {
  async function refused(res: Response, status: number, pattern: RegExp, before: string[]): Promise<void> {
    expect(res.status).toBe(status);
    expect(await errorOf(res)).toMatch(pattern);
    expect(await snapshot()).toEqual(before);
  }

  it("StorePath of another hash than the URL's", async () => {
    const p = await withNar("mismatch");
    const other = await testPath("other");
    const before = await snapshot();
    await refused(await putNarInfo(other.hash, formatNarInfo(p.info)), 400, /StorePath/, before);
  });

  it("NAR not uploaded yet (422)", async () => {
    const p = await testPath("no-nar");
    await refused(await putNarInfo(p.hash, formatNarInfo(p.info)), 422, /upload it before/, await snapshot());
  });

  it("FileSize different from the stored NAR (422)", async () => {
    const p = await withNar("wrong-size", { compression: "gzip" });
    const before = await snapshot();
    await refused(await putNarInfo(p.hash, formatNarInfo({ ...p.info, fileSize: p.file.length + 1 })), 422, /FileSize/, before);
  });

  it("a reference that is not in the cache (422), accepted once it is", async () => {
    const dep = await testPath("late-dep");
    const app = await withNar("early-app", { references: [dep] });
    const before = await snapshot();
    await refused(await putNarInfo(app.hash, formatNarInfo(app.info)), 422, new RegExp(dep.baseName), before);
    await push(dep);
    expect((await putNarInfo(app.hash, formatNarInfo(app.info))).status).toBe(201);
  });

  it("a reference whose NAR is stored but whose narinfo is not", async () => {
    const dep = await withNar("half-dep");
    const app = await withNar("half-app", { references: [dep] });
    await refused(await putNarInfo(app.hash, formatNarInfo(app.info)), 422, /references not in this cache/, await snapshot());
  });

  it("an unreachable upstream cache counts as not serving the reference (no 5xx)", async () => {
    const dep = await testPath("upstream-dep");
    const app = await withNar("upstream-app", { references: [dep] });
    const before = await snapshot();
    const res = await putWith({ UPSTREAM_CACHES: "http://127.0.0.1:9" }, app, app.info);
    await refused(res, 422, /upstream caches/, before);
  });

  it(`more than ${MAX_REFERENCES} references (413)`, async () => {
    const p = await withNar("many-refs");
    const refs: string[] = [];
    for (let i = 0; i <= MAX_REFERENCES; i++) refs.push(`${encodeNix32((await sha256(utf8(`r${i}`))).slice(0, 20))}-r${i}`);
    refs.sort();
    const before = await snapshot();
    await refused(await putNarInfo(p.hash, formatNarInfo({ ...p.info, references: refs })), 413, /references/, before);
  });

  it.each([
    ["no Compression line (bzip2 to Nix) for a .nar", (i: NarInfo) => { const { compression: _, ...rest } = i; return rest as NarInfo; }, /bzip2/],
    ["Compression xz for a .nar", (i: NarInfo) => ({ ...i, compression: "xz" }), /\.nar\.xz/],
    ["Compression zstd for a .nar", (i: NarInfo) => ({ ...i, compression: "zstd" }), /\.nar\.zst/],
    ["empty Compression (bzip2) for a .nar", (i: NarInfo) => ({ ...i, compression: "" }), /bzip2|\.bz2/],
    ["an absolute URL", (i: NarInfo) => ({ ...i, url: `https://elsewhere.example/${i.url}` }), /URL/],
    ["a URL outside nar/", (i: NarInfo) => ({ ...i, url: i.url.replace("nar/", "nars/") }), /URL/],
    ["a URL with ..", (i: NarInfo) => ({ ...i, url: `nar/../${i.url}` }), /URL/],
    ["a URL with a query", (i: NarInfo) => ({ ...i, url: `${i.url}?hash=x` }), /URL/],
    ["no FileSize", (i: NarInfo) => { const { fileSize: _, ...rest } = i; return rest as NarInfo; }, /FileSize/],
    ["a FileHash that is not the file name's", (i: NarInfo) => ({ ...i, fileHash: i.narHash.replace(/.$/, (c) => (c === "0" ? "1" : "0")) }), /FileHash/],
    ["Compression none with FileSize ≠ NarSize", (i: NarInfo) => ({ ...i, narSize: i.narSize + 8 }), /NarSize/],
  ])("%s (400)", async (_label, change, pattern) => {
    const p = await withNar("doc-rule");
    const before = await snapshot();
    await refused(await putNarInfo(p.hash, formatNarInfo(change(p.info))), 400, pattern, before);
  });
});

describe("extensionFor: Compression → NAR file extension, as Nix names files", () => {
  it.each([
    ["zstd", ".zst"], ["xz", ".xz"], ["bzip2", ".bz2"], ["br", ".br"], ["lz4", ".lz4"], ["lzip", ".lzip"],
    ["none", ""], ["gzip", ""], ["lzma", ""], ["compress", ""], ["lzop", ""], ["grzip", ""], ["lrzip", ""],
    [undefined, ".bz2"], ["", ".bz2"],
  ])("%o → %o", (compression, ext) => {
    expect(extensionFor(compression)).toBe(ext);
  });
});

describe("TRUSTED_PUBLIC_KEYS", () => {
  const trusted = { TRUSTED_PUBLIC_KEYS: `cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= ${TEST_PUBLIC_KEY_TEXT}` };

  it("accepts a narinfo signed by a trusted key", async () => {
    const p = await withNar("signed-ok");
    expect((await putWith(trusted, p, await signed(p.info))).status).toBe(201);
  });

  it("refuses unsigned, untrusted-key and tampered narinfos", async () => {
    const p = await withNar("signed-bad");
    const before = await snapshot();
    const good = await signed(p.info);
    const tampered: NarInfo = { ...good, references: [p.baseName] }; // signature no longer covers it
    for (const info of [p.info, await signed(p.info, OTHER_KEY), tampered]) {
      const res = await putWith(trusted, p, info);
      expect(res.status).toBe(400);
      expect(await errorOf(res)).toMatch(/signature/);
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe("SIGNING_KEY", () => {
  it("makes the Worker add its own valid signature, keeping the uploader's", async () => {
    const p = await withNar("worker-signed");
    const uploaded = await signed(p.info, OTHER_KEY);
    expect((await putWith({ SIGNING_KEY: TEST_KEY_TEXT }, p, uploaded)).status).toBe(201);
    const stored = parseNarInfo(await (await call(`/${p.hash}.narinfo`)).text());
    expect(stored.sigs).toHaveLength(2);
    expect(stored.sigs).toContain(uploaded.sigs[0]);
    expect(await verifyNarInfo(stored, [TEST_PUBLIC_KEY])).toBe(true);
    // The same upload again is a no-op: after signing it equals what is stored.
    const before = await snapshot();
    expect((await putWith({ SIGNING_KEY: TEST_KEY_TEXT }, p, uploaded)).status).toBe(204);
    expect(await snapshot()).toEqual(before);
  });

  it("signs unsigned uploads, so they pass a Worker that trusts its own key", async () => {
    const p = await withNar("worker-signed-trusted");
    const res = await putWith({ SIGNING_KEY: TEST_KEY_TEXT }, p, p.info);
    expect(res.status).toBe(201);
    const stored = parseNarInfo(await env.CACHE.get(`${p.hash}.narinfo`).then((o) => o!.text()));
    expect(await verifyNarInfo(stored, [TEST_PUBLIC_KEY])).toBe(true);
    expect(stored.sigs[0]!.startsWith(`${TEST_KEY.name}:`)).toBe(true);
  });
});

describe("immutability", () => {
  it("the same narinfo again is a no-op", async () => {
    const p = await testPath("again");
    await push(p);
    const before = await snapshot();
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(204);
    expect(await snapshot()).toEqual(before);
  });

  it("a different narinfo for a stored path is a 409 naming the field", async () => {
    const p = await testPath("immutable");
    await push(p);
    const before = await snapshot();
    const changed: NarInfo = { ...p.info, deriver: `${p.hash}-immutable.drv` };
    const res = await putNarInfo(p.hash, formatNarInfo(changed));
    expect(res.status).toBe(409);
    expect(await errorOf(res)).toMatch(/Deriver/);
    expect(await snapshot()).toEqual(before);
  });

  it("new signatures are merged into the stored narinfo (nix store sign)", async () => {
    const p = await testPath("resign");
    const first = await signed(p.info, TEST_KEY);
    await push(p, first);
    const second = await signed(p.info, OTHER_KEY);
    expect((await putNarInfo(p.hash, formatNarInfo(second))).status).toBe(204);
    const stored = parseNarInfo(await (await call(`/${p.hash}.narinfo`)).text());
    expect([...stored.sigs].sort()).toEqual([...first.sigs, ...second.sigs].sort());
    expect(formatNarInfo(stored)).toBe(formatNarInfo({ ...p.info, sigs: stored.sigs }));
    // Uploading a subset of the stored signatures changes nothing.
    const before = await snapshot();
    expect((await putNarInfo(p.hash, formatNarInfo(first))).status).toBe(204);
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(204);
    expect(await snapshot()).toEqual(before);
  });
});
