// Reads without the Worker (README "Reads without the Worker"), inside workerd against the
// real local R2: with NAR_BASE_URL the Worker serves narinfos whose URL points at the
// bucket's public domain, still verifiable by the cache's key; and the bucket by itself is
// a complete binary cache for a reader that fetches objects by key: a `nix-cache-info`
// object kept in line with the settings, and every object stored with the Content-Type and
// Cache-Control the Worker would send for it.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo, parseNarInfo } from "../../src/nix/narinfo.ts";
import { verifyNarInfo } from "../../src/nix/signature.ts";
import { NARINFO_MAX_AGE_SECONDS } from "../../src/http/representation.ts";
import { withNarBaseUrl } from "../../src/http/nar-base-url.ts";
import { runScheduled } from "../../src/scheduled.ts";
import { CACHE_INFO_KEY, syncCacheInfoObject } from "../../src/storage/cache-info-object.ts";
import type { WorkerEnv } from "../../src/env.ts";
import { bearer, callWith, putNar, putNarInfo, signed, snapshot, TEST_PUBLIC_KEY, testPath, type TestPath } from "../helpers/worker.ts";

afterEach(() => reset());

const BASE = "https://nars.example.org";

async function pushed(name: string): Promise<TestPath> {
  const p = await testPath(name);
  expect((await putNar(p)).status).toBe(201);
  expect((await putNarInfo(p.hash, formatNarInfo(await signed(p.info)))).status).toBe(201);
  return p;
}

/** The largest max-age or s-maxage in a Cache-Control value. */
function longestAge(cacheControl: string): number {
  return Math.max(...[...cacheControl.matchAll(/(?:s-)?max-age=(\d+)/g)].map((m) => Number(m[1])));
}

describe("NAR_BASE_URL: narinfos point at the bucket's public domain", () => {
  it("serves the stored narinfo with only its URL made absolute; the signature still verifies", async () => {
    const p = await pushed("hello-base-url");
    const stored = await (await env.CACHE.get(`${p.hash}.narinfo`))!.text();
    const res = await callWith({ NAR_BASE_URL: `${BASE}/` }, `/${p.hash}.narinfo`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(res.headers.get("Content-Length")).toBe(String(new TextEncoder().encode(text).length));
    const info = parseNarInfo(text);
    expect(info.url).toBe(`${BASE}/nar/${p.fileName}`);
    // Everything else is the stored document, line for line.
    expect(text.split("\n").filter((l) => !l.startsWith("URL: "))).toEqual(stored.split("\n").filter((l) => !l.startsWith("URL: ")));
    expect(await verifyNarInfo(info, [TEST_PUBLIC_KEY])).toBe(true);
    // Without the setting, the same narinfo keeps its URL relative to the Worker.
    expect(parseNarInfo(await (await callWith({}, `/${p.hash}.narinfo`)).text()).url).toBe(`nar/${p.fileName}`);
  });

  it("gives the rewritten document an ETag of its own, honoured by If-None-Match and on HEAD", async () => {
    const p = await pushed("etag-base-url");
    const plain = (await callWith({}, `/${p.hash}.narinfo`, { method: "HEAD" })).headers.get("ETag");
    const head = await callWith({ NAR_BASE_URL: BASE }, `/${p.hash}.narinfo`, { method: "HEAD" });
    expect(head.status).toBe(200);
    const etag = head.headers.get("ETag")!;
    expect(etag).not.toBe(plain);
    expect(etag).not.toBe((await callWith({ NAR_BASE_URL: "https://other.example.org" }, `/${p.hash}.narinfo`, { method: "HEAD" })).headers.get("ETag"));
    const again = await callWith({ NAR_BASE_URL: BASE }, `/${p.hash}.narinfo`, { headers: { "If-None-Match": etag } });
    expect(again.status).toBe(304);
    const get = await callWith({ NAR_BASE_URL: BASE }, `/${p.hash}.narinfo`);
    expect(get.headers.get("ETag")).toBe(etag);
    // Plain ETag of the stored bytes no longer matches what is served.
    expect((await callWith({ NAR_BASE_URL: BASE }, `/${p.hash}.narinfo`, { headers: { "If-None-Match": plain! } })).status).toBe(200);
  });

  it("answers 404 for an absent narinfo, and keeps checking uploads against nar/ URLs", async () => {
    const p = await testPath("absent-base-url");
    expect((await callWith({ NAR_BASE_URL: BASE }, `/${p.hash}.narinfo`)).status).toBe(404);
    expect((await putNar(p)).status).toBe(201);
    // An upload naming the public domain is refused like any URL outside nar/.
    const absolute = formatNarInfo({ ...p.info, url: `${BASE}/nar/${p.fileName}` });
    const put = await callWith({ NAR_BASE_URL: BASE }, `/${p.hash}.narinfo`, { method: "PUT", body: absolute, headers: bearer() });
    expect(put.status).toBe(400);
  });

  it("refuses a NAR_BASE_URL that is not a plain http(s) URL, naming the setting", async () => {
    for (const bad of ["nars.example.org", "ftp://nars.example.org", "https://nars.example.org/?x=1", "https://user:pw@nars.example.org"]) {
      const res = await callWith({ NAR_BASE_URL: bad }, "/nix-cache-info");
      expect(res.status, bad).toBe(500);
      expect(await res.text(), bad).toContain("NAR_BASE_URL");
    }
  });

  it("rewrites only a URL relative to the cache", () => {
    const text = "StorePath: /nix/store/x\nURL: nar/abc.nar.zst\nCompression: zstd\n";
    expect(withNarBaseUrl(text, BASE)).toBe(`StorePath: /nix/store/x\nURL: ${BASE}/nar/abc.nar.zst\nCompression: zstd\n`);
    for (const url of ["https://elsewhere.example/nar/a.nar", "/nar/a.nar", "s3://b/nar/a.nar"]) {
      const other = `StorePath: /nix/store/x\nURL: ${url}\n`;
      expect(withNarBaseUrl(other, BASE)).toBe(other);
    }
  });
});

describe("the bucket by itself: headers stored on every object", () => {
  it("stores each NAR, narinfo, listing and log with the Content-Type and Cache-Control the Worker serves publicly", async () => {
    const p = await pushed("stored-headers");
    const ls = '{"version":1,"root":{"type":"regular","size":1}}';
    expect((await callWith({}, `/${p.hash}.ls`, { method: "PUT", body: ls, headers: bearer() })).status).toBe(201);
    const log = `log/${p.baseName}.drv`;
    expect((await callWith({}, `/${log}`, { method: "PUT", body: "building…\n", headers: bearer() })).status).toBe(201);
    for (const key of [`nar/${p.fileName}`, `${p.hash}.narinfo`, `${p.hash}.ls`, log]) {
      const served = await callWith({}, `/${key}`);
      expect(served.status, key).toBe(200);
      const meta = (await env.CACHE.head(key))!.httpMetadata!;
      expect(meta.contentType, key).toBe(served.headers.get("Content-Type"));
      expect(meta.cacheControl, key).toBe(served.headers.get("Cache-Control"));
    }
    // NARs are cached long and as immutable, narinfos no longer than the collector waits.
    expect((await env.CACHE.head(`nar/${p.fileName}`))!.httpMetadata!.cacheControl).toMatch(/immutable/);
    expect(longestAge((await env.CACHE.head(`${p.hash}.narinfo`))!.httpMetadata!.cacheControl!)).toBeLessThanOrEqual(NARINFO_MAX_AGE_SECONDS);
  });

  it("stores the public headers even when READ_TOKEN makes the Worker's answers private", async () => {
    const p = await testPath("stored-headers-private");
    const vars = { READ_TOKEN: "read-secret" };
    expect((await callWith(vars, `/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: bearer() })).status).toBe(201);
    expect((await callWith(vars, `/${p.hash}.narinfo`, { method: "PUT", body: formatNarInfo(p.info), headers: bearer() })).status).toBe(201);
    const served = await callWith(vars, `/${p.hash}.narinfo`, { headers: { Authorization: "Bearer read-secret" } });
    expect(served.headers.get("Cache-Control")).toMatch(/^private/);
    expect((await env.CACHE.head(`${p.hash}.narinfo`))!.httpMetadata!.cacheControl).toMatch(/^public/);
  });
});

describe("the bucket by itself: nix-cache-info as an object", () => {
  it("is written when the Worker answers /nix-cache-info, with what the Worker serves (no Upstreams)", async () => {
    const vars = { PRIORITY: "41" };
    const served = await callWith(vars, "/nix-cache-info");
    const obj = await env.CACHE.get(CACHE_INFO_KEY);
    expect(obj).not.toBeNull();
    expect(await obj!.text()).toBe(await served.text());
    expect(obj!.httpMetadata?.contentType).toBe(served.headers.get("Content-Type"));
    expect(obj!.httpMetadata?.cacheControl).toBe(served.headers.get("Cache-Control"));

    const aggregating = { PRIORITY: "42", AGGREGATE_UPSTREAMS: "https://upstream.example.org" };
    expect(await (await callWith(aggregating, "/nix-cache-info")).text()).toContain("Upstreams: ");
    const text = await (await env.CACHE.get(CACHE_INFO_KEY))!.text();
    expect(text).toContain("Priority: 42\n");
    expect(text).not.toContain("Upstreams");
  });

  it("follows the settings: the cron trigger rewrites it when PRIORITY changed, and leaves it when not", async () => {
    await callWith({ PRIORITY: "43" }, "/nix-cache-info");
    const before = await snapshot();
    await runScheduled({ ...env, PRIORITY: "43" } as WorkerEnv, Date.UTC(2026, 0, 1, 0, 1));
    expect((await snapshot()).filter((l) => l.startsWith(CACHE_INFO_KEY))).toEqual(before.filter((l) => l.startsWith(CACHE_INFO_KEY)));
    await runScheduled({ ...env, PRIORITY: "44" } as WorkerEnv, Date.UTC(2026, 0, 1, 0, 2));
    expect(await (await env.CACHE.get(CACHE_INFO_KEY))!.text()).toContain("Priority: 44\n");
  });

  it("is checked again after a while even when this isolate wrote it (an object deleted by hand comes back)", async () => {
    const now = Date.now();
    expect(await syncCacheInfoObject(env.CACHE, "StoreDir: /nix/store\nPriority: 45\n", now)).toBe(true);
    await env.CACHE.delete(CACHE_INFO_KEY);
    expect(await syncCacheInfoObject(env.CACHE, "StoreDir: /nix/store\nPriority: 45\n", now + 1000)).toBe(false);
    expect(await env.CACHE.head(CACHE_INFO_KEY)).toBeNull();
    expect(await syncCacheInfoObject(env.CACHE, "StoreDir: /nix/store\nPriority: 45\n", now + 3600_000)).toBe(true);
    expect(await env.CACHE.head(CACHE_INFO_KEY)).not.toBeNull();
  });
});
