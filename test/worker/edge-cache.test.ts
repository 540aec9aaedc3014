// The Workers Cache API in front of R2: used for public narinfo and NAR GETs on a real
// host name, invalidated by the Worker's own writes, skipped for private caches and on
// loopback. Deleting an object straight from R2 shows whether a response came from the cache.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { EDGE_CACHE_MAX_BYTES, edgeStore } from "../../src/storage/edge-cache.ts";
import { bearer, bytesOf, callWith, OTHER_KEY, push, signed, testPath } from "../helpers/worker.ts";

afterEach(() => reset());

const EDGE = "https://cache.example.com";

describe("edge cache", () => {
  it("serves a public narinfo from the edge, and the Worker's own write replaces it", async () => {
    const p = await testPath("edge-narinfo");
    await push(p);
    const first = await callWith({}, `${EDGE}/${p.hash}.narinfo`);
    expect(first.status).toBe(200);
    expect(first.headers.get("Cache-Control")).toContain("s-maxage=60");
    const text = await first.text();

    await env.CACHE.delete(`${p.hash}.narinfo`);
    const cached = await callWith({}, `${EDGE}/${p.hash}.narinfo`);
    expect(cached.status).toBe(200);
    expect(await cached.text()).toBe(text);

    const resigned = formatNarInfo(await signed(p.info, OTHER_KEY));
    const put = await callWith({}, `${EDGE}/${p.hash}.narinfo`, { method: "PUT", body: resigned, headers: bearer() });
    expect(put.status).toBe(201);
    const fresh = await callWith({}, `${EDGE}/${p.hash}.narinfo`);
    expect(await fresh.text()).toBe(resigned);
  });

  it("serves NARs from the edge, ranges included", async () => {
    const p = await testPath("edge-nar");
    await push(p);
    expect(await bytesOf(await callWith({}, `${EDGE}/nar/${p.fileName}`))).toEqual(p.file);
    await env.CACHE.delete(`nar/${p.fileName}`);
    const cached = await callWith({}, `${EDGE}/nar/${p.fileName}`);
    expect(cached.status).toBe(200);
    expect(await bytesOf(cached)).toEqual(p.file);
    const ranged = await callWith({}, `${EDGE}/nar/${p.fileName}`, { headers: { Range: "bytes=8-15" } });
    expect(ranged.status).toBe(206);
    expect(await bytesOf(ranged)).toEqual(p.file.slice(8, 16));
  });

  it("is not used when READ_TOKEN makes the cache private", async () => {
    const p = await testPath("edge-private");
    await push(p);
    const auth = { headers: bearer("reader") };
    expect((await callWith({ READ_TOKEN: "reader" }, `${EDGE}/${p.hash}.narinfo`, auth)).status).toBe(200);
    await env.CACHE.delete(`${p.hash}.narinfo`);
    expect((await callWith({ READ_TOKEN: "reader" }, `${EDGE}/${p.hash}.narinfo`, auth)).status).toBe(404);
  });

  it("is not used on loopback (wrangler dev, tests)", async () => {
    const p = await testPath("edge-loopback");
    await push(p);
    for (const origin of ["http://localhost", "http://127.0.0.1:8787"]) {
      expect((await callWith({}, `${origin}/${p.hash}.narinfo`)).status).toBe(200);
    }
    await env.CACHE.delete(`${p.hash}.narinfo`);
    for (const origin of ["http://localhost", "http://127.0.0.1:8787"]) {
      expect((await callWith({}, `${origin}/${p.hash}.narinfo`)).status).toBe(404);
    }
  });

  it("never caches absences", async () => {
    const p = await testPath("edge-absent");
    expect((await callWith({}, `${EDGE}/${p.hash}.narinfo`)).status).toBe(404);
    await push(p);
    expect((await callWith({}, `${EDGE}/${p.hash}.narinfo`)).status).toBe(200);
  });

  it(`does not copy objects over ${EDGE_CACHE_MAX_BYTES} bytes into the cache`, async () => {
    const key = `${EDGE}/nar/too-big-for-the-edge`;
    const waits: Promise<unknown>[] = [];
    const res = edgeStore({ waitUntil: (p) => waits.push(p) }, key, new Response("x", { headers: { "Cache-Control": "public, max-age=60" } }), EDGE_CACHE_MAX_BYTES + 1);
    await Promise.all(waits);
    expect(await res.text()).toBe("x");
    expect(await caches.default.match(key)).toBeUndefined();
  });
});
