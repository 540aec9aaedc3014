// /nar/<file>: uploads verified by R2 against the name's sha256, and reads streamed from
// R2 with HEAD, Range, ETag and conditional requests.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { bearer, bytesOf, call, callWith, errorOf, keys, NAR_VECTORS, putNar, snapshot, testPath } from "../helpers/worker.ts";

afterEach(() => reset());

describe("PUT /nar/<file>", () => {
  it("stores a real NAR under its sha256 name and serves the same bytes back", async () => {
    const p = await testPath("nar-roundtrip", { nar: NAR_VECTORS[9]!.bytes });
    const put = await putNar(p);
    expect(put.status).toBe(201);
    expect(await keys()).toContain(`nar/${p.fileName}`);
    const stored = await env.CACHE.head(`nar/${p.fileName}`);
    expect(stored?.size).toBe(NAR_VECTORS[9]!.narSize);
    const res = await call(`/nar/${p.fileName}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("application/x-nix-nar");
    expect(res.headers.get("Content-Encoding")).toBeNull();
    expect(res.headers.get("Content-Length")).toBe(String(p.file.length));
    expect(await bytesOf(res)).toEqual(p.file);
  });

  it("stores a gzip-compressed NAR (named .nar, as Nix names gzip NARs) verbatim, without Content-Encoding", async () => {
    const p = await testPath("nar-gzip", { nar: NAR_VECTORS[6]!.bytes, compression: "gzip" });
    expect((await putNar(p)).status).toBe(201);
    const res = await call(`/nar/${p.fileName}`);
    expect(res.headers.get("Content-Encoding")).toBeNull();
    expect(await bytesOf(res)).toEqual(p.file);
  });

  it("accepts every compression extension Nix uses", async () => {
    const p = await testPath("nar-ext", { nar: NAR_VECTORS[2]!.bytes });
    for (const ext of [".xz", ".bz2", ".zst", ".br", ".lz4", ".lzip"]) {
      const res = await call(`/nar/${p.fileName}${ext}`, { method: "PUT", body: p.file, headers: bearer() });
      expect(res.status).toBe(201);
    }
  });

  it("is a no-op when the NAR is already stored", async () => {
    const p = await testPath("nar-twice", { nar: NAR_VECTORS[3]!.bytes });
    expect((await putNar(p)).status).toBe(201);
    const before = await snapshot();
    const again = await putNar(p);
    expect(again.status).toBe(204);
    expect(await snapshot()).toEqual(before);
  });

  it("refuses a body whose sha256 is not the name's, storing nothing (400)", async () => {
    const p = await testPath("nar-wrong-hash", { nar: NAR_VECTORS[4]!.bytes });
    const other = NAR_VECTORS[5]!.bytes;
    const res = await call(`/nar/${p.fileName}`, { method: "PUT", body: other, headers: bearer() });
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatch(/sha256/);
    expect(await keys()).not.toContain(`nar/${p.fileName}`);
  });

  it("answers 411 to an upload without Content-Length", async () => {
    const p = await testPath("nar-chunked");
    // A JavaScript stream has no known length, so it goes out chunked.
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(p.file);
        controller.close();
      },
    });
    const res = await call(`/nar/${p.fileName}`, { method: "PUT", body, headers: bearer() });
    expect(res.status).toBe(411);
    expect(await keys()).toEqual(expect.not.arrayContaining([`nar/${p.fileName}`]));
  });

  it("answers 413 above the upload limit, pointing at the uploader", async () => {
    const p = await testPath("nar-big");
    const res = await callWith({ MAX_NAR_UPLOAD_BYTES: "100" }, `/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: bearer() });
    expect(p.file.length).toBeGreaterThan(100);
    expect(res.status).toBe(413);
    expect(await errorOf(res)).toMatch(/uploader/);
  });

  it("refuses a body shorter than its Content-Length (400, nothing stored)", async () => {
    const p = await testPath("nar-short", { nar: NAR_VECTORS[7]!.bytes });
    const res = await call(`/nar/${p.fileName}`, {
      method: "PUT",
      body: p.file.slice(0, 50),
      headers: { ...bearer(), "Content-Length": String(p.file.length) },
    });
    expect(res.status).toBe(400);
    expect(await keys()).not.toContain(`nar/${p.fileName}`);
  });

  it("refuses a body longer than its Content-Length (400, nothing stored)", async () => {
    const p = await testPath("nar-long", { nar: NAR_VECTORS[8]!.bytes });
    const res = await call(`/nar/${p.fileName}`, {
      method: "PUT",
      body: p.file,
      headers: { ...bearer(), "Content-Length": String(p.file.length - 8) },
    });
    expect(res.status).toBe(400);
    expect(await keys()).not.toContain(`nar/${p.fileName}`);
  });

  it("refuses a body running past its Content-Length even when its first bytes are the NAR, leaving nothing", async () => {
    // Only an in-process caller can do this (HTTP ends a body at its Content-Length).
    const p = await testPath("nar-overrun", { nar: NAR_VECTORS[8]!.bytes });
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(p.file);
        controller.enqueue(new Uint8Array(64));
        controller.close();
      },
    });
    const res = await callWith({}, `/nar/${p.fileName}`, { method: "PUT", body, headers: { ...bearer(), "Content-Length": String(p.file.length) } });
    expect(res.status).toBe(400);
    expect(await keys()).not.toContain(`nar/${p.fileName}`);
  });

  it("refuses a Content-Encoding on a NAR (415)", async () => {
    const p = await testPath("nar-encoded");
    const res = await call(`/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: { ...bearer(), "Content-Encoding": "gzip" } });
    expect(res.status).toBe(415);
  });
});

describe("GET and HEAD /nar/<file>", () => {
  async function stored(name: string, index: number) {
    const p = await testPath(name, { nar: NAR_VECTORS[index]!.bytes });
    expect((await putNar(p)).status).toBe(201);
    return p;
  }

  it("answers 404 for an absent NAR, with no-store", async () => {
    const p = await testPath("nar-absent");
    for (const method of ["GET", "HEAD"]) {
      const res = await call(`/nar/${p.fileName}`, { method });
      expect(res.status).toBe(404);
      expect(res.headers.get("Cache-Control")).toBe("no-store");
    }
  });

  it("HEAD gives size, type, etag and an immutable Cache-Control without a body", async () => {
    const p = await stored("nar-head", 10);
    const res = await call(`/nar/${p.fileName}`, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Length")).toBe(String(p.file.length));
    expect(res.headers.get("Content-Type")).toBe("application/x-nix-nar");
    expect(res.headers.get("ETag")).toMatch(/^"[0-9a-f]+"$/);
    expect(res.headers.get("Accept-Ranges")).toBe("bytes");
    expect(res.headers.get("Cache-Control")).toContain("immutable");
    expect(await res.text()).toBe("");
  });

  it("answers If-None-Match with 304 when the etag matches, 200 otherwise", async () => {
    const p = await stored("nar-etag", 11);
    const etag = (await call(`/nar/${p.fileName}`, { method: "HEAD" })).headers.get("ETag")!;
    for (const header of [etag, `W/${etag}`, `"other", ${etag}`, "*"]) {
      const res = await call(`/nar/${p.fileName}`, { headers: { "If-None-Match": header } });
      expect(res.status).toBe(304);
      expect(res.headers.get("ETag")).toBe(etag);
      const head = await call(`/nar/${p.fileName}`, { method: "HEAD", headers: { "If-None-Match": header } });
      expect(head.status).toBe(304);
    }
    const res = await call(`/nar/${p.fileName}`, { headers: { "If-None-Match": '"other"' } });
    expect(res.status).toBe(200);
    expect(await bytesOf(res)).toEqual(p.file);
  });

  it("serves single byte ranges with 206 and Content-Range", async () => {
    const p = await stored("nar-range", 9);
    const size = p.file.length;
    const cases: Array<[string, number, number]> = [
      ["bytes=0-99", 0, 99],
      ["bytes=100-", 100, size - 1],
      ["bytes=-8", size - 8, size - 1],
      ["bytes=600-100000", 600, size - 1],
      ["bytes=-100000", 0, size - 1],
    ];
    for (const [header, start, end] of cases) {
      const res = await call(`/nar/${p.fileName}`, { headers: { Range: header } });
      expect(res.status, header).toBe(206);
      expect(res.headers.get("Content-Range")).toBe(`bytes ${start}-${end}/${size}`);
      expect(res.headers.get("Content-Length")).toBe(String(end - start + 1));
      expect(await bytesOf(res)).toEqual(p.file.slice(start, end + 1));
    }
  });

  it("answers 416 with the size for a range past the end", async () => {
    const p = await stored("nar-416", 9);
    for (const header of [`bytes=${p.file.length}-`, "bytes=100000-100001", "bytes=-0"]) {
      const res = await call(`/nar/${p.fileName}`, { headers: { Range: header } });
      expect(res.status, header).toBe(416);
      expect(res.headers.get("Content-Range")).toBe(`bytes */${p.file.length}`);
    }
  });

  it("ignores multi-range, garbage and other units, serving the whole NAR", async () => {
    const p = await stored("nar-ignored-range", 9);
    for (const header of ["bytes=0-1,5-6", "bytes=abc", "items=0-5", "bytes=9-3", "bytes="]) {
      const res = await call(`/nar/${p.fileName}`, { headers: { Range: header } });
      expect(res.status, header).toBe(200);
      expect(await bytesOf(res)).toEqual(p.file);
    }
  });

  it("applies a range only when If-Range still names the stored object", async () => {
    const p = await stored("nar-if-range", 9);
    const etag = (await call(`/nar/${p.fileName}`, { method: "HEAD" })).headers.get("ETag")!;
    const matching = await call(`/nar/${p.fileName}`, { headers: { Range: "bytes=0-9", "If-Range": etag } });
    expect(matching.status).toBe(206);
    await matching.arrayBuffer();
    const stale = await call(`/nar/${p.fileName}`, { headers: { Range: "bytes=0-9", "If-Range": '"old"' } });
    expect(stale.status).toBe(200);
    expect(await bytesOf(stale)).toEqual(p.file);
  });
});
