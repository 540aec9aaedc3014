// NAR compression: the methods the uploader writes, their file extensions and levels.
//
// - zstd: Node's built-in zlib zstd (Node >= 22.15). Fast, and read by every Nix >= 2.4
//   (and 2.3.17+). The default.
// - xz: the system `xz -T0` (xz-utils), which is multi-threaded and twice as fast as any
//   in-process xz (TOOLCHAIN.md §9). For old clients, or the last few percent of size.
// - none: the NAR as is.
//
// Each compressor is a Duplex stream, so it slots into a stream pipeline with backpressure
// and memory stays bounded whatever the NAR size. Extensions follow Nix's own naming
// (`nar/<filehash>.nar.zst`, `.nar.xz`, `.nar`), PROTOCOL.md §3.4.
import { spawn } from "node:child_process";
import { Duplex, PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { UploaderError, EXIT_LOCAL, UsageError } from "./errors.ts";

export const COMPRESSION_METHODS = ["zstd", "xz", "none"] as const;
export type CompressionMethod = (typeof COMPRESSION_METHODS)[number];
export const DEFAULT_COMPRESSION: CompressionMethod = "zstd";

/**
 * Default levels. zstd 3 is libzstd's (and Nix's) default: about 130 MB/s per core on
 * binaries with a 39 % ratio, while higher levels cost far more time than they save in
 * upload bandwidth. xz 6 is the xz CLI's and Nix's default.
 */
export const DEFAULT_LEVEL: Record<Exclude<CompressionMethod, "none">, number> = { zstd: 3, xz: 6 };

/**
 * Accepted levels. zstd stops at 19: levels 20-22 ("ultra") need up to 2^27-byte windows
 * on the decoder side, more than some clients allow. xz presets are 0-9.
 */
export const LEVEL_RANGE: Record<Exclude<CompressionMethod, "none">, readonly [number, number]> = {
  zstd: [1, 19],
  xz: [0, 9],
};

/** The xz program, looked up on PATH. */
const XZ_PROGRAM = "xz";

/** The file extension after `.nar` for a method, as Nix names its NAR files. */
export function narFileExtension(method: CompressionMethod): string {
  switch (method) {
    case "zstd":
      return ".zst";
    case "xz":
      return ".xz";
    case "none":
      return "";
  }
}

/** Parses `--compression`; throws UsageError for anything else. */
export function parseCompressionMethod(value: string): CompressionMethod {
  if ((COMPRESSION_METHODS as readonly string[]).includes(value)) return value as CompressionMethod;
  throw new UsageError(`unknown compression "${value}": use one of ${COMPRESSION_METHODS.join(", ")}`);
}

/** Checks a level against the method's range; returns the default when none is given. */
export function resolveLevel(method: CompressionMethod, level: number | undefined): number | undefined {
  if (method === "none") {
    if (level !== undefined) throw new UsageError("--compression-level has no meaning with --compression none");
    return undefined;
  }
  if (level === undefined) return DEFAULT_LEVEL[method];
  const [min, max] = LEVEL_RANGE[method];
  if (!Number.isInteger(level) || level < min || level > max) {
    throw new UsageError(`${method} compression levels go from ${min} to ${max}, got ${level}`);
  }
  return level;
}

/**
 * Output buffer of the zstd stream. zlib's default (16 KiB) makes a round trip to the
 * thread pool for every 16 KiB of output; 256 KiB cut compression time by about 30 % on a
 * 119 MiB NAR of binaries, and larger buffers gained nothing more.
 */
const ZSTD_OUTPUT_CHUNK_BYTES = 256 * 1024;

/** A fresh compressing stream: write the NAR in, read the compressed file out. */
export function createCompressor(method: CompressionMethod, level?: number): Duplex {
  const checked = resolveLevel(method, level);
  switch (method) {
    case "none":
      return new PassThrough();
    case "zstd":
      return zlib.createZstdCompress({
        chunkSize: ZSTD_OUTPUT_CHUNK_BYTES,
        params: {
          [zlib.constants.ZSTD_c_compressionLevel]: checked ?? DEFAULT_LEVEL.zstd,
          // A frame checksum, as the zstd CLI writes by default: 4 bytes that let any
          // decoder (libarchive in Nix) detect a corrupted download.
          [zlib.constants.ZSTD_c_checksumFlag]: 1,
        },
      });
    case "xz":
      return xzCompressor(checked ?? DEFAULT_LEVEL.xz);
  }
}

/** `xz -T0 -c -<level>` as a Duplex; a non-zero exit fails the stream. */
function xzCompressor(level: number): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Uint8Array>) {
    const child = spawn(XZ_PROGRAM, ["-T0", "-c", "-q", `-${level}`], { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on("error", (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "ENOENT"
            ? new UploaderError(`cannot run ${XZ_PROGRAM}: not found`, EXIT_LOCAL, "install xz-utils, or use --compression zstd")
            : err,
        ),
      );
      child.on("close", (code) => resolve(code));
    });
    // Feeding stdin runs alongside reading stdout; its failure (e.g. the NAR source
    // throwing) is re-thrown below, after stdout has drained.
    const feeding = pipeline(source, child.stdin);
    // Marked as handled so an early exit from the loop below cannot leave them unhandled.
    feeding.catch(() => {});
    exited.catch(() => {});
    try {
      for await (const chunk of child.stdout) yield chunk as Buffer;
      const [fed, exit] = await Promise.allSettled([feeding, exited]);
      // A program that never started explains any broken pipe; then the NAR source's own
      // error; then xz's exit status.
      if (exit.status === "rejected") throw exit.reason;
      if (fed.status === "rejected") throw fed.reason;
      const code = exit.value;
      if (code !== 0) {
        throw new UploaderError(`${XZ_PROGRAM} failed (exit ${code}): ${stderr.trim()}`, EXIT_LOCAL);
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    }
  });
}
