// Encoded uploads from a real Nix: `narinfo-compression`, `ls-compression` and
// `log-compression` on an http(s) store, which Nix 2.32+ sends as the body's
// Content-Encoding. Every value the version knows is pushed by every matrix version that
// knows the settings (2.34 here; 2.8 and 2.26 do not have them), and what was stored is
// read back by every version of the matrix.
//
// What each party can do, observed with Debian's packages and checked here value by value:
// - Nix compresses grzip, lrzip and lzop with external programs Debian's nix-bin does not
//   bring: the copy fails in Nix, before anything is sent.
// - The Worker decodes a narinfo (to check it) when it is br, gzip or zstd (or none), and
//   answers any other encoding with a 415 that names those; every version then substitutes
//   the path, trusting only the cache's key.
// - Listings and logs are stored as sent, any encoding, and served with it.
// - `nix log` decodes a log's Content-Encoding itself before 2.34 (libarchive: everything,
//   except that bookworm's libarchive does not recognise Nix's lzma stream); from 2.34 on
//   libcurl decodes, which knows only br, gzip and zstd (and deflate): an xz or bzip2 log
//   is unreadable to it ("Unrecognized or bad HTTP Content or Transfer-Encoding").
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { brotliDecompressSync, gunzipSync, zstdDecompressSync } from "node:zlib";
import { ChrootNix, hashPart, matrixChroots } from "./chroot-nix.ts";
import { LocalCache } from "./harness.ts";
import type { MountedChroot } from "./nix-versions.ts";

const chroots = await matrixChroots();

/** Every compression method Nix 2.34 knows (NIX_FOR_EACH_COMPRESSION_ALGO). */
const NIX_METHODS = ["none", "br", "bzip2", "compress", "grzip", "gzip", "lrzip", "lz4", "lzip", "lzma", "lzop", "xz", "zstd"] as const;
type Method = (typeof NIX_METHODS)[number];

/** libarchive runs an external program for these; none is installed with Debian's nix-bin. */
const EXTERNAL: ReadonlySet<Method> = new Set(["grzip", "lrzip", "lzop"]);
/** What the Worker decodes in a narinfo upload. */
const WORKER_DECODES: ReadonlySet<Method> = new Set(["none", "br", "gzip", "zstd"]);

function minor(c: MountedChroot): number {
  const [major, min] = c.nixVersion.split(".").map(Number) as [number, number];
  return major > 2 ? 1000 : min;
}

/** Whether `nix log` of this version reads a log stored with `method` (see the header). */
function logReadable(reader: MountedChroot, method: Method): boolean {
  if (method === "none") return true;
  if (minor(reader) >= 34) return method === "br" || method === "gzip" || method === "zstd";
  if (reader.suite === "bookworm" && method === "lzma") return false;
  return true;
}

/** A listing's bytes decoded on the host, for the methods it has decoders for. */
function decodeListing(method: Method, body: Buffer): string | null {
  switch (method) {
    case "none":
      return body.toString("utf8");
    case "gzip":
      return gunzipSync(body).toString("utf8");
    case "br":
      return brotliDecompressSync(body).toString("utf8");
    case "zstd":
      return zstdDecompressSync(body).toString("utf8");
    case "xz":
    case "lzma":
      return execFileSync("xz", ["-d", "-c", `--format=${method === "xz" ? "xz" : "lzma"}`], { input: body }).toString("utf8");
    default:
      return null;
  }
}

let cache: LocalCache;
const clients = new Map<string, ChrootNix>();

beforeAll(async () => {
  cache = await LocalCache.start();
  for (const c of chroots) clients.set(c.name, await ChrootNix.create(c));
});

afterAll(async () => {
  await cache?.stop();
  for (const nix of clients.values()) await nix.cleanup();
});

const pushers = chroots.filter((c) => minor(c) >= 32);

it("has a matrix version that sends encoded uploads", () => {
  expect(pushers.map((c) => c.name)).toContain("2.34");
});

describe.each(pushers.map((c) => [c.name]))("Nix %s pushing with encoded uploads", (name) => {
  const nix = () => clients.get(name)!;
  const push = async (path: string, query: string) =>
    nix().nix(["copy", "--to", `${cache.url}?compression=zstd&${query}`, path, "--option", "netrc-file", await nix().netrc(cache.token)]);

  for (const method of NIX_METHODS) {
    it(`narinfo-compression=${method}`, async () => {
      const path = await nix().buildText(`narinfo-${method}`);
      const r = await push(path, `narinfo-compression=${method}`);
      if (EXTERNAL.has(method)) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain(`external ${method} program`);
        return;
      }
      if (!WORKER_DECODES.has(method)) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain(`narinfo uploads take no Content-Encoding or one of br, deflate, gzip, zstd, not \\"${method}\\"`);
        expect((await fetch(`${cache.url}/${hashPart(path)}.narinfo`)).status).toBe(404);
        return;
      }
      expect(r.code, r.stderr).toBe(0);
      const res = await fetch(`${cache.url}/${hashPart(path)}.narinfo`, { headers: { "Accept-Encoding": "identity" } });
      expect(res.headers.get("Content-Encoding")).toBeNull();
      expect(await res.text()).toContain(`StorePath: ${path}\n`);
      for (const reader of clients.values()) {
        const store = await reader.emptyStore();
        const s = await reader.nixStore(["--store", store, "-r", path, "--option", "substituters", cache.url, "--option", "trusted-public-keys", cache.publicKey]);
        expect(s.code, `Nix ${reader.name}: ${s.stderr}`).toBe(0);
      }
    });

    it(`ls-compression=${method}`, async () => {
      const path = await nix().buildText(`ls-${method}`);
      const r = await push(path, `write-nar-listing=1&ls-compression=${method}`);
      if (EXTERNAL.has(method)) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain(`external ${method} program`);
        return;
      }
      expect(r.code, r.stderr).toBe(0);
      // Asking for exactly the stored encoding shows how it was stored (a client that
      // accepts gzip may get a plain listing compressed on the way).
      const res = await fetch(`${cache.url}/${hashPart(path)}.ls`, { headers: { "Accept-Encoding": method === "none" ? "identity" : method } });
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Encoding")).toBe(method === "none" ? null : method);
      const body = Buffer.from(await res.arrayBuffer());
      // fetch decodes gzip, br and zstd itself; the rest arrives as stored.
      const listing = ["gzip", "br", "zstd"].includes(method) ? body.toString("utf8") : decodeListing(method, body);
      if (listing !== null) expect(JSON.parse(listing)).toMatchObject({ version: 1, root: { type: "regular" } });
    });

    it(`log-compression=${method}: nix store copy-log, then nix log --store with every version`, async () => {
      const path = await nix().buildText(`log-${method}`);
      expect((await push(path, "")).code).toBe(0);
      const r = await nix().nix(["store", "copy-log", "--to", `${cache.url}?log-compression=${method}`, path, "--option", "netrc-file", await nix().netrc(cache.token)]);
      if (EXTERNAL.has(method)) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain(`external ${method} program`);
        return;
      }
      expect(r.code, r.stderr).toBe(0);
      for (const reader of clients.values()) {
        const log = await reader.nix(["log", "--store", cache.url, path]);
        if (logReadable(reader.chroot, method)) {
          expect(log.code, `Nix ${reader.name}: ${log.stderr}`).toBe(0);
          expect(log.stdout).toContain(`building log-${method}`);
        } else {
          expect(log.code, `Nix ${reader.name} read a ${method} log`).not.toBe(0);
        }
      }
    });
  }
});
