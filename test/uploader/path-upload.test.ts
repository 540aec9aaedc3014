// One path's upload artefacts, checked with outside tools: the temp file's FileHash and
// FileSize against `sha256sum` and `stat`, its name against Nix's naming, its contents
// (decompressed by the zstd/xz CLIs) against `nix-store --dump`; and the narinfo text
// against the store's metadata, parsed back and verified with the signer's public key.
import { execFile } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { fromHex } from "../../src/nix/encoding.ts";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { generateKeyPair, publicKeyOf, verifyNarInfo } from "../../src/nix/signature.ts";
import { HttpClient } from "../../uploader/http.ts";
import { RemoteCache } from "../../uploader/remote-cache.ts";
import { queryClosure, type StorePathInfo } from "../../uploader/store.ts";
import { narInfoFor, prepareNar } from "../../uploader/path-upload.ts";
import { NixSandbox, runOk } from "./helpers.ts";

let nix: NixSandbox;
let closure: { tree: string; dep: string; top: string; drv: string };
let infos: StorePathInfo[];
// prepareNar and narInfoFor never touch the cache; a client for an unused address.
const cache = new RemoteCache(new HttpClient({ baseUrl: "http://127.0.0.1:9" }));

beforeAll(async () => {
  nix = await NixSandbox.create();
  closure = await nix.buildClosure();
  infos = await queryClosure([closure.top], { env: nix.env });
});
afterAll(async () => {
  cache.http.close();
  await nix?.cleanup();
});

const infoOf = (path: string): StorePathInfo => infos.find((i) => i.path === path)!;

function bufferOf(cmd: string, args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { encoding: "buffer", maxBuffer: 64 << 20, env: nix.env }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
}

describe("prepareNar", () => {
  test.each([
    ["zstd", ".nar.zst", ["zstd", "-d", "-c", "-q"]],
    ["xz", ".nar.xz", ["xz", "-d", "-c"]],
    ["none", ".nar", ["cat"]],
  ] as const)("%s: FileHash/FileSize describe the file, which decompresses to the NAR", async (compression, ext, decompress) => {
    const info = infoOf(closure.top);
    const tmpDir = await nix.tempDir();
    const prepared = await prepareNar(info, { cache, compression, tmpDir });
    const sha256sum = (await runOk("sha256sum", [prepared.file])).split(" ")[0]!;
    const nix32 = encodeNix32(fromHex(sha256sum));
    expect(prepared.fileHash).toBe(`sha256:${nix32}`);
    expect(prepared.fileSize).toBe((await stat(prepared.file)).size);
    expect(prepared.key).toBe(`nar/${nix32}${ext}`);
    expect(prepared.narHash).toBe(info.narHash);
    expect(prepared.narSize).toBe(info.narSize);
    const [cmd, ...args] = decompress;
    const nar = await bufferOf(cmd, [...args, prepared.file]);
    expect(nar.equals(await bufferOf("nix-store", ["--dump", info.path]))).toBe(true);
    expect(basename(prepared.file).startsWith(info.hashPart)).toBe(true);
  });

  test("a mismatch leaves no temp file behind", async () => {
    const tmpDir = await nix.tempDir();
    const info = { ...infoOf(closure.dep), narSize: infoOf(closure.dep).narSize + 8 };
    await expect(prepareNar(info, { cache, compression: "zstd", tmpDir })).rejects.toThrow(/do not match the store database/);
    expect(await runOk("ls", ["-A", tmpDir])).toBe("");
  });
});

describe("narInfoFor", () => {
  test("carries the store's metadata, keeps existing signatures and adds the user's", async () => {
    const info = { ...infoOf(closure.top), sigs: ["zzz-earlier-1:" + "A".repeat(86) + "=="] };
    const key = await generateKeyPair("upload-test-1");
    const prepared = await prepareNar(info, { cache, compression: "zstd", tmpDir: await nix.tempDir() });
    const text = await narInfoFor(info, prepared, { cache, compression: "zstd", tmpDir: "", secretKey: key });
    const narinfo = parseNarInfo(text);
    expect(narinfo.storePath).toBe(closure.top);
    expect(narinfo.url).toBe(prepared.key);
    expect(narinfo.compression).toBe("zstd");
    expect(narinfo.fileHash).toBe(prepared.fileHash);
    expect(narinfo.fileSize).toBe(prepared.fileSize);
    expect(narinfo.narHash).toBe(info.narHash);
    expect(narinfo.narSize).toBe(info.narSize);
    expect(narinfo.references).toEqual([closure.dep, closure.tree].map((p) => p.slice("/nix/store/".length)).sort());
    expect(narinfo.deriver).toBe(basename(closure.drv));
    expect(narinfo.ca).toBeUndefined();
    // Nix writes Sig lines sorted: ours ("upload-test-1") before "zzz-earlier-1".
    expect(narinfo.sigs.map((s) => s.split(":")[0])).toEqual(["upload-test-1", "zzz-earlier-1"]);
    expect(await verifyNarInfo(narinfo, [publicKeyOf(key)])).toBe(true);
    // Nix's field order and line syntax (PROTOCOL.md §3.3).
    expect(text.split("\n").map((l) => l.split(":")[0])).toEqual([
      "StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "References", "Deriver", "Sig", "Sig", "",
    ]);
  });

  test("a content-addressed path without references keeps its CA and an empty References line", async () => {
    const info = infoOf(closure.tree);
    const prepared = await prepareNar(info, { cache, compression: "none", tmpDir: await nix.tempDir() });
    const text = await narInfoFor(info, prepared, { cache, compression: "none", tmpDir: "" });
    expect(text).toContain("\nReferences: \n");
    expect(text).toContain(`\nCA: ${info.ca}\n`);
    expect(text).not.toContain("Sig:");
    expect(parseNarInfo(text).fileHash).toBe(info.narHash);
    // Written exactly as `nix copy --to file://?compression=none` writes it.
    const cacheDir = await nix.tempDir("nixcopy-");
    await nix.nix(["copy", "--to", `file://${cacheDir}?compression=none`, info.path]);
    expect(text).toBe(await readFile(join(cacheDir, `${info.hashPart}.narinfo`), "utf8"));
  });
});
