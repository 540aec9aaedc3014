// Compression round trips through the reference tools: what the uploader writes must
// decompress with `zstd -d` and `xz -d` (the same libraries Nix's libarchive uses) back
// to the exact input.
import { createHash, randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { createWriteStream, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ZSTD_PROGRAM_MIN_BYTES, createCompressor, hasZstdProgram, narFileExtension, resolveLevel, type CompressionMethod } from "../../uploader/compress.ts";
import { UploaderError, UsageError } from "../../uploader/errors.ts";
import { NixSandbox, runOk } from "./helpers.ts";

let scratch: NixSandbox;
beforeAll(async () => {
  scratch = await NixSandbox.create();
});
afterAll(async () => scratch?.cleanup());

/** 6 MiB that compress somewhat: text runs mixed with random blocks, in uneven chunks. */
function sample(): Buffer[] {
  const chunks: Buffer[] = [];
  for (let i = 0; i < 96; i++) {
    chunks.push(i % 3 === 0 ? randomBytes(65_536 + i) : Buffer.from(`line ${i} of some repetitive text\n`.repeat(1800)));
  }
  return chunks;
}

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

async function compressToFile(method: CompressionMethod, level: number | undefined, input: Buffer[], narSize?: number): Promise<string> {
  const file = join(await scratch.tempDir(), `out.nar${narFileExtension(method)}`);
  await pipeline(Readable.from(input), createCompressor(method, level, narSize), createWriteStream(file));
  return file;
}

describe("round trips through the reference decompressors", () => {
  const cases: Array<[CompressionMethod, number | undefined, string[]]> = [
    ["zstd", undefined, ["zstd", "-d", "-c", "-q"]],
    ["zstd", 1, ["zstd", "-d", "-c", "-q"]],
    ["zstd", 19, ["zstd", "-d", "-c", "-q"]],
    ["xz", undefined, ["xz", "-d", "-c"]],
    ["xz", 0, ["xz", "-d", "-c"]],
  ];
  test.each(cases)("%s level %s", async (method, level, decompress) => {
    const input = sample();
    const file = await compressToFile(method, level, input);
    const [cmd, ...args] = decompress as [string, ...string[]];
    const out = await new Promise<Buffer>((resolve, reject) => {
      execFile(cmd, [...args, file], { encoding: "buffer", maxBuffer: 64 << 20 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    expect(out.length).toBe(Buffer.concat(input).length);
    expect(sha256(out)).toBe(sha256(Buffer.concat(input)));
  });

  test("none passes the bytes through unchanged", async () => {
    const input = sample();
    const file = await compressToFile("none", undefined, input);
    const fileHash = (await runOk("sha256sum", [file])).split(" ")[0];
    expect(fileHash).toBe(sha256(Buffer.concat(input)));
  });

  test("a large NAR goes through the zstd program on every core: same round trip, a checksum, deterministic", async () => {
    expect(hasZstdProgram()).toBe(true);
    const input = sample();
    const size = Buffer.concat(input).length;
    expect(size).toBeGreaterThanOrEqual(ZSTD_PROGRAM_MIN_BYTES);
    const viaProgram = await compressToFile("zstd", undefined, input, size);
    const inProcess = await compressToFile("zstd", undefined, input, 1);
    // zstd -T0 writes a multi-threaded frame layout, so its bytes differ from zlib's.
    expect(sha256(await readFile(viaProgram))).not.toBe(sha256(await readFile(inProcess)));
    expect(sha256(await readFile(await compressToFile("zstd", undefined, input, size)))).toBe(sha256(await readFile(viaProgram)));
    const out = await runOk("sh", ["-c", `zstd -d -c -q ${viaProgram} | sha256sum`]);
    expect(out.split(" ")[0]).toBe(sha256(Buffer.concat(input)));
    expect(await runOk("zstd", ["-lv", viaProgram])).toMatch(/Check:\s+XXH64/);
  });

  test("zstd frames carry a checksum, which zstd -t verifies", async () => {
    const file = await compressToFile("zstd", undefined, sample());
    const info = await runOk("zstd", ["-lv", file]);
    expect(info).toMatch(/Check:\s+XXH64/);
    await runOk("zstd", ["-t", "-q", file]);
  });

  test("higher levels compress repetitive data smaller", async () => {
    const input = Array.from({ length: 64 }, (_, i) => Buffer.from(`${i} ${"abcdefgh".repeat(i + 1)}\n`.repeat(2000)));
    const fast = statSync(await compressToFile("xz", 0, input)).size;
    const strong = statSync(await compressToFile("xz", 9, input)).size;
    expect(strong).toBeLessThan(fast);
  });
});

describe("errors", () => {
  test("a failing source fails the xz stream with the source's error", async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.from("some bytes");
      throw new Error("the NAR source broke");
    }
    const file = join(await scratch.tempDir(), "broken.xz");
    await expect(pipeline(Readable.from(failing()), createCompressor("xz"), createWriteStream(file))).rejects.toThrow("the NAR source broke");
  });

  test("levels are checked against each method's range", () => {
    expect(resolveLevel("zstd", undefined)).toBe(3);
    expect(resolveLevel("xz", undefined)).toBe(6);
    expect(resolveLevel("zstd", 19)).toBe(19);
    expect(() => resolveLevel("zstd", 20)).toThrow(UsageError);
    expect(() => resolveLevel("zstd", 0)).toThrow(UsageError);
    expect(() => resolveLevel("xz", 10)).toThrow(/0 to 9/);
    expect(() => resolveLevel("none", 3)).toThrow(UsageError);
    expect(resolveLevel("none", undefined)).toBeUndefined();
  });

  test("file extensions follow Nix's naming", () => {
    expect(narFileExtension("zstd")).toBe(".zst");
    expect(narFileExtension("xz")).toBe(".xz");
    expect(narFileExtension("none")).toBe("");
  });

  test("UsageError is an UploaderError with exit code 2", () => {
    expect(new UsageError("x")).toBeInstanceOf(UploaderError);
    expect(new UsageError("x").exitCode).toBe(2);
  });
});
