// Encoded uploads (Nix 2.32+: narinfo-compression, ls-compression, log-compression) against
// the Worker as `npm start` runs it, i.e. workerd with wrangler.toml's settings (the
// nodejs_compat flag that gives the Worker its native brotli and zstd decoders).
//
// A narinfo sent with br, zstd, gzip or deflate is decoded, checked and stored plain; one
// that decodes past the narinfo limit (a compression bomb) is refused with 413 without
// being decoded further; invalid bytes are a 400; an encoding the Worker cannot decode is a
// 415 that says what it can. Listings and logs are stored as sent, with any encoding Nix
// names, and served back byte for byte with that Content-Encoding. The real Nix clients
// doing the same are in nix-matrix.matrix.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { brotliCompressSync, deflateSync, gzipSync, zstdCompressSync } from "node:zlib";
import { LocalCache } from "./harness.ts";
import { formatNarInfo, MAX_NARINFO_LENGTH, type NarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNar } from "../../src/nix/nar-writer.ts";

let cache: LocalCache;

beforeAll(async () => {
  cache = await LocalCache.start();
});

afterAll(async () => {
  await cache?.stop();
});

const ENCODERS: Record<string, (b: Uint8Array) => Uint8Array> = {
  br: (b) => brotliCompressSync(b),
  zstd: (b) => zstdCompressSync(b),
  gzip: (b) => gzipSync(b),
  deflate: (b) => deflateSync(b),
};

function put(path: string, body: Uint8Array | string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${cache.url}${path}`, { method: "PUT", body, headers: { Authorization: `Bearer ${cache.token}`, ...headers } });
}

/** A fresh path whose NAR is already in the cache; returns its hash part and narinfo. */
async function freshPath(name: string): Promise<{ hash: string; info: NarInfo }> {
  const nar = await serializeNar({ type: "regular", contents: new TextEncoder().encode(`${name} ${randomBytes(8).toString("hex")}\n`) });
  const narHash = encodeNix32(createHash("sha256").update(nar).digest());
  expect((await put(`/nar/${narHash}.nar`, nar)).status).toBeLessThan(300);
  const hash = encodeNix32(randomBytes(20));
  const info: NarInfo = {
    storePath: `/nix/store/${hash}-${name}`,
    url: `nar/${narHash}.nar`,
    compression: "none",
    fileHash: `sha256:${narHash}`,
    fileSize: nar.length,
    narHash: `sha256:${narHash}`,
    narSize: nar.length,
    references: [],
    sigs: [],
    extra: [],
  };
  return { hash, info };
}

describe("narinfo uploads with a Content-Encoding", () => {
  for (const [encoding, encode] of Object.entries(ENCODERS)) {
    it(`decodes a ${encoding} narinfo, stores it plain and signs it`, async () => {
      const { hash, info } = await freshPath(`encoded-${encoding}`);
      const res = await put(`/${hash}.narinfo`, encode(new TextEncoder().encode(formatNarInfo(info))), { "Content-Encoding": encoding });
      expect(res.status, await res.clone().text()).toBe(201);
      const got = await fetch(`${cache.url}/${hash}.narinfo`);
      expect(got.headers.get("Content-Encoding")).toBeNull();
      const text = await got.text();
      expect(text).toContain(`StorePath: ${info.storePath}\n`);
      expect(text).toContain(`Sig: ${cache.publicKey.split(":")[0]}:`);
    });
  }

  it("treats Content-Encoding none (what Nix sends for narinfo-compression=none) as plain", async () => {
    const { hash, info } = await freshPath("encoded-none");
    expect((await put(`/${hash}.narinfo`, formatNarInfo(info), { "Content-Encoding": "none" })).status).toBe(201);
  });

  it("stops decoding a compression bomb at the narinfo limit (413) and stores nothing", async () => {
    const { hash, info } = await freshPath("bomb");
    const huge = new TextEncoder().encode(`${formatNarInfo(info)}X-Pad: ${"p".repeat(MAX_NARINFO_LENGTH * 8)}\n`);
    const before = await cache.bucketSnapshot();
    for (const encoding of ["zstd", "br", "gzip"]) {
      const body = ENCODERS[encoding]!(huge);
      expect(body.length).toBeLessThan(64 * 1024);
      const res = await put(`/${hash}.narinfo`, body, { "Content-Encoding": encoding });
      expect(res.status, `${encoding}: ${await res.clone().text()}`).toBe(413);
    }
    expect(await cache.bucketSnapshot()).toBe(before);
    expect((await fetch(`${cache.url}/${hash}.narinfo`)).status).toBe(404);
  });

  it("answers 400 for bytes that are not what the header says", async () => {
    const { hash, info } = await freshPath("garbled");
    for (const encoding of Object.keys(ENCODERS)) {
      const res = await put(`/${hash}.narinfo`, formatNarInfo(info), { "Content-Encoding": encoding });
      expect(res.status, encoding).toBe(400);
      expect(await res.text()).toContain(`not valid ${encoding}`);
    }
  });

  it("refuses encodings it cannot decode with a 415 naming those it can", async () => {
    const { hash, info } = await freshPath("xz-narinfo");
    const res = await put(`/${hash}.narinfo`, formatNarInfo(info), { "Content-Encoding": "xz" });
    expect(res.status).toBe(415);
    const text = await res.text();
    expect(text).toContain("br, deflate, gzip, zstd");
    expect(text).toContain("narinfo-compression");
  });
});

describe("listings and logs with a Content-Encoding", () => {
  for (const encoding of ["xz", "bzip2", "lzip", "zstd", "br"]) {
    it(`stores a ${encoding} listing as sent and serves it back with its encoding`, async () => {
      const hash = encodeNix32(randomBytes(20));
      const body = randomBytes(200);
      expect((await put(`/${hash}.ls`, body, { "Content-Encoding": encoding, "Content-Type": "application/json" })).status).toBe(201);
      const got = await fetch(`${cache.url}/${hash}.ls`, { headers: { "Accept-Encoding": encoding } });
      expect(got.status).toBe(200);
      expect(got.headers.get("Content-Encoding")).toBe(encoding);
    });
  }

  it("stores a log sent with Content-Encoding none as a plain log", async () => {
    const drv = `${encodeNix32(randomBytes(20))}-x.drv`;
    expect((await put(`/log/${drv}`, "plain log\n", { "Content-Encoding": "none" })).status).toBe(201);
    // (A client that accepts gzip may get the plain log compressed on the way, as the
    // edge does for text/plain; asking for identity shows what is stored.)
    const got = await fetch(`${cache.url}/log/${drv}`, { headers: { "Accept-Encoding": "identity" } });
    expect(got.headers.get("Content-Encoding")).toBeNull();
    expect(await got.text()).toBe("plain log\n");
  });
});
