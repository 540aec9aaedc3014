// NAR compression: the methods the uploader writes, their file extensions and levels.
//
// - zstd: read by every Nix >= 2.4 (and 2.3.17+). The default. Large NARs go through the
//   system `zstd -T0` when it is installed, which compresses one NAR on every core (Node's
//   own zstd is single-threaded, and its multi-threaded mode breaks Node's stream); small
//   ones through Node's built-in zlib zstd (Node >= 22.15), which costs no process start.
//   Node 20 has no built-in zstd: there every NAR goes through the program.
// - xz: the system `xz -T0` (xz-utils), which is multi-threaded and twice as fast as any
//   in-process xz (TOOLCHAIN.md §9). For old clients, or the last few percent of size.
// - none: the NAR as is.
//
// `uploader import` also decompresses what other caches stored (createDecompressor: those
// three plus gzip, br and bzip2), to check NarHash or to recompress.
//
// Each compressor is a Duplex stream, so it slots into a stream pipeline with backpressure
// and memory stays bounded whatever the NAR size. Extensions follow Nix's own naming
// (`nar/<filehash>.nar.zst`, `.nar.xz`, `.nar`), PROTOCOL.md §3.4.
import { spawn, spawnSync } from "node:child_process";
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
/** The zstd program (zstd's CLI), looked up on PATH. */
const ZSTD_PROGRAM = "zstd";

/**
 * NARs at least this large are compressed by the zstd program on all cores when it is
 * installed: starting a process costs a few milliseconds, which a NAR this size repays
 * (about 30 ms of compression on one core) and a small path would not.
 */
export const ZSTD_PROGRAM_MIN_BYTES = 4 * 1024 * 1024;

/** Node's zlib has zstd from 22.15 and 23.8 on. */
const NODE_HAS_ZSTD = typeof (zlib as Partial<typeof zlib>).createZstdCompress === "function";

let zstdProgramFound: boolean | undefined;
/** Whether the zstd program runs (asked once per process). */
export function hasZstdProgram(): boolean {
  zstdProgramFound ??= spawnSync(ZSTD_PROGRAM, ["--version"], { stdio: "ignore" }).status === 0;
  return zstdProgramFound;
}

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

/**
 * A fresh compressing stream: write the NAR in, read the compressed file out. `narSize`
 * (when known) picks the zstd program for large NARs; the output is a valid zstd file
 * either way, and the same input with the same choice gives the same bytes.
 */
export function createCompressor(method: CompressionMethod, level?: number, narSize?: number): Duplex {
  const checked = resolveLevel(method, level);
  switch (method) {
    case "none":
      return new PassThrough();
    case "zstd": {
      const zstdLevel = checked ?? DEFAULT_LEVEL.zstd;
      // The program writes a frame checksum by default, like the in-process settings below.
      const viaProgram = !NODE_HAS_ZSTD || (narSize !== undefined && narSize >= ZSTD_PROGRAM_MIN_BYTES && hasZstdProgram());
      if (viaProgram) {
        return programStream(ZSTD_PROGRAM, ["-T0", "-c", "-q", `-${zstdLevel}`], `this Node.js (${process.version}) has no built-in zstd: install zstd (apt install zstd), use Node.js >= 22.15, or use --compression xz`);
      }
      return zlib.createZstdCompress({
        chunkSize: ZSTD_OUTPUT_CHUNK_BYTES,
        params: {
          [zlib.constants.ZSTD_c_compressionLevel]: zstdLevel,
          // A frame checksum, as the zstd CLI writes by default: 4 bytes that let any
          // decoder (libarchive in Nix) detect a corrupted download.
          [zlib.constants.ZSTD_c_checksumFlag]: 1,
        },
      });
    }
    case "xz":
      return xzCompressor(checked ?? DEFAULT_LEVEL.xz);
  }
}

/** `xz -T0 -c -<level>` as a Duplex; a non-zero exit fails the stream. */
function xzCompressor(level: number): Duplex {
  return programStream(XZ_PROGRAM, ["-T0", "-c", "-q", `-${level}`], "install xz-utils, or use --compression zstd");
}

/** Compression methods `createDecompressor` reads (narinfo Compression values). */
export const DECOMPRESSION_METHODS: readonly string[] = ["none", "zstd", "xz", "bzip2", "gzip", "br"];

/**
 * A fresh decompressing stream for a narinfo's Compression (`uploader import`): zstd, gzip
 * and br in-process (node:zlib), xz and bzip2 through the system programs, `none` as is.
 * Throws UsageError for a method it cannot read.
 */
export function createDecompressor(method: string | undefined): Duplex {
  switch (method === undefined || method === "" ? "bzip2" : method) {
    case "none":
      return new PassThrough();
    case "zstd":
      return zlib.createZstdDecompress({ chunkSize: ZSTD_OUTPUT_CHUNK_BYTES });
    case "gzip":
      return zlib.createGunzip();
    case "br":
      return zlib.createBrotliDecompress();
    case "xz":
      return programStream(XZ_PROGRAM, ["-d", "-c", "-q"], "install xz-utils");
    case "bzip2":
      return programStream("bzip2", ["-d", "-c", "-q"], "install bzip2");
    default:
      throw new UsageError(`cannot decompress "${method}" NARs: the uploader reads ${DECOMPRESSION_METHODS.join(", ")}`);
  }
}

/** `program args…` as a Duplex (stdin in, stdout out); a non-zero exit fails the stream. */
function programStream(program: string, args: readonly string[], hint: string): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Uint8Array>) {
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on("error", (err: NodeJS.ErrnoException) =>
        reject(
          err.code === "ENOENT"
            ? new UploaderError(`cannot run ${program}: not found`, EXIT_LOCAL, hint)
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
        throw new UploaderError(`${program} failed (exit ${code}): ${stderr.trim()}`, EXIT_LOCAL);
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    }
  });
}
