// Listings, logs, realisations, build traces and debuginfo links: stored verbatim.
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarListing } from "../../src/nix/nar-listing.ts";
import { readNar } from "../../src/nix/nar-reader.ts";
import { serializeNar } from "../../src/nix/nar-writer.ts";
import { utf8 } from "../../src/nix/encoding.ts";
import { basic, bearer, bytesOf, call, callWith, keys, snapshot, testPath, TEST_WRITE_TOKEN } from "../helpers/worker.ts";

afterEach(() => reset());

const DRV = "8ahf7kvw9r70hn5zr97c870cshs5ns7y-hello-2.12.drv";
const DRV_HEX = "a".repeat(64);

function put(path: string, body: string | Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  return call(path, { method: "PUT", body, headers: { ...bearer(), ...headers } });
}

describe("documents", () => {
  it("stores a real .ls listing and serves it as JSON", async () => {
    const nar = await serializeNar({
      type: "directory",
      entries: { bin: { type: "directory", entries: { hello: { type: "regular", executable: true, contents: utf8("#!/bin/sh\n") } } } },
    });
    const { listing } = await readNar(new Blob([nar as Uint8Array<ArrayBuffer>]).stream(), { listing: true });
    const text = formatNarListing(listing!);
    const p = await testPath("listed", { nar });
    const res = await put(`/${p.hash}.ls`, text, { "Content-Type": "application/json" });
    expect(res.status).toBe(201);
    const get = await call(`/${p.hash}.ls`);
    expect(get.status).toBe(200);
    expect(get.headers.get("Content-Type")).toBe("application/json");
    expect(await get.text()).toBe(text);
  });

  it("stores a log under log/<drv> and serves it as text", async () => {
    const log = "building '/nix/store/…-hello.drv'...\nok\n";
    expect((await put(`/log/${DRV}`, log, basic(TEST_WRITE_TOKEN))).status).toBe(201);
    const get = await call(`/log/${DRV}`);
    expect(get.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
    expect(await get.text()).toBe(log);
  });

  it("keeps ? and = of a derivation name in the log key (Nix does not encode them)", async () => {
    const name = "0c5b8vw40dy178xlpddw65q9gf1h2186-a?b=c.drv";
    expect((await put(`/log/${name}`, "log with query\n")).status).toBe(201);
    expect(await keys()).toEqual([`log/${name}`]);
    expect(await (await call(`/log/${name}`)).text()).toBe("log with query\n");
    // The same name percent-encoded names the same object.
    expect(await (await call("/log/0c5b8vw40dy178xlpddw65q9gf1h2186-a%3Fb%3Dc.drv")).text()).toBe("log with query\n");
    expect((await call("/log/0c5b8vw40dy178xlpddw65q9gf1h2186-a.drv")).status).toBe(404);
  });

  it("stores realisations under both prefixes, and debuginfo links", async () => {
    const doc = JSON.stringify({ id: `sha256:${DRV_HEX}!out`, outPath: "x", signatures: [] });
    const paths = [`/realisations/sha256:${DRV_HEX}!out.doi`, `/build-trace-v2/${DRV}/out.doi`, `/debuginfo/${"0123456789abcdef".repeat(2)}01234567`];
    for (const path of paths) {
      expect((await put(path, doc, { "Content-Type": "application/json" })).status, path).toBe(201);
      const get = await call(path);
      expect(get.status).toBe(200);
      expect(get.headers.get("Content-Type")).toBe("application/json");
      expect(await get.text()).toBe(doc);
    }
  });

  it("replaces a document on a later upload (a rebuild's log)", async () => {
    await put(`/log/${DRV}`, "first\n");
    await put(`/log/${DRV}`, "second\n");
    expect(await (await call(`/log/${DRV}`)).text()).toBe("second\n");
  });

  it("stores a compressed upload with its Content-Encoding and serves the same bytes back", async () => {
    const plain = utf8("a compressed log\n".repeat(100));
    const gz = new Uint8Array(await new Response(new Blob([plain as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer());
    expect((await put(`/log/${DRV}`, gz, { "Content-Encoding": "gzip" })).status).toBe(201);
    const get = await call(`/log/${DRV}`, { headers: { "Accept-Encoding": "gzip" } });
    expect(get.headers.get("Content-Encoding")).toBe("gzip");
    // The client decodes the body it received.
    expect(await bytesOf(get)).toEqual(plain);
  });

  it("refuses encodings Nix never sends (415), and oversized documents (413)", async () => {
    const before = await snapshot();
    expect((await put(`/log/${DRV}`, "x", { "Content-Encoding": "x-unknown" })).status).toBe(415);
    expect((await put(`/debuginfo/${"a".repeat(40)}`, "x".repeat(5000))).status).toBe(413);
    expect(await snapshot()).toEqual(before);
  });

  it("needs a write token to upload and is public to read", async () => {
    expect((await call(`/log/${DRV}`, { method: "PUT", body: "x" })).status).toBe(401);
    await put(`/log/${DRV}`, "x");
    expect((await call(`/log/${DRV}`)).status).toBe(200);
    expect((await callWith({ READ_TOKEN: "r" }, `/log/${DRV}`)).status).toBe(401);
    expect((await callWith({ READ_TOKEN: "r" }, `/log/${DRV}`, { headers: bearer("r") })).status).toBe(200);
  });

  it("answers 404 for absent documents", async () => {
    for (const path of [`/log/${DRV}`, `/${"0".repeat(32)}.ls`, `/realisations/sha256:${DRV_HEX}!out.doi`]) {
      expect((await call(path)).status).toBe(404);
    }
  });
});
