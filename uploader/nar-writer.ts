// The file-system side of NAR serialisation: a `NarSource` over a real path, fed to the
// core's `writeNar`, which owns the format (PROTOCOL.md §1). Together they reproduce
// `nix-store --dump` byte for byte.
//
// What this side must get right (PROTOCOL.md §1.3):
// - names and symlink targets are raw bytes: readdir/readlink with `encoding: "buffer"`,
//   and paths are built as Buffers, so names that are not valid UTF-8 survive;
// - only the owner-execute bit is recorded (`mode & 0o100`), so 0610 is not executable;
// - symlinks are stored verbatim (never followed), dangling ones included;
// - sockets, FIFOs and device nodes cannot be stored: they are an error;
// - on macOS, Nix renames case-colliding names on disk with a `~nix~case~hack~N` suffix and
//   strips it again when dumping; so does this module there.
// File sizes come from lstat before the contents are read (the size precedes the bytes in
// a NAR); `writeNar` fails if a file then yields a different number of bytes.
// The tree is explored lazily: a directory is listed when the writer reaches it, and a
// file is opened only when its contents are due, so memory does not grow with the tree.
// Metadata (readdir, lstat, readlink) and small files are read with synchronous calls, as
// Nix's own dumper does: for the thousands of small files of a typical store path, a
// thread-pool round trip per call costs several times the call itself (measured: 5,849
// files read in 58 ms synchronously against 140-250 ms through fs/promises, 16 at a time).
// Large files are streamed asynchronously with read-ahead, so reading overlaps with
// hashing and compression and a slow disk does not stall the event loop for long.
import type { Stats } from "node:fs";
import { closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync } from "node:fs";
import { open } from "node:fs/promises";
import { writeNar, type NarSource } from "../src/nix/nar-writer.ts";
import { UnsupportedFileError } from "./errors.ts";

/**
 * Bytes per read of a large file. Large reads keep the system calls and thread-pool round
 * trips to about a thousand per gigabyte, while a few chunks in flight stay cheap in memory.
 */
export const READ_CHUNK_BYTES = 1 << 20;

/**
 * Files up to this size are read in one synchronous call when the writer reaches them;
 * larger ones are streamed. Most files in store paths are smaller than this.
 */
export const SMALL_FILE_BYTES = 128 * 1024;

/** Owner-execute permission: the only mode bit a NAR records. */
const S_IXUSR = 0o100;

/** The suffix Nix appends on case-insensitive file systems (macOS) to colliding names. */
const CASE_HACK_SUFFIX = Buffer.from("~nix~case~hack~");

export interface NarFromPathOptions {
  /** Strip Nix's case-hack suffix from names (default: on macOS only, as Nix does). */
  caseHack?: boolean;
}

/** The NAR serialisation of a path, as a stream of chunks. */
export async function* dumpPath(path: string | Buffer, options: NarFromPathOptions = {}): AsyncGenerator<Uint8Array> {
  yield* writeNar(await narSourceFromPath(path, options));
}

/** A lazy `NarSource` for the file, directory or symlink at `path` (not followed). */
export async function narSourceFromPath(path: string | Buffer, options: NarFromPathOptions = {}): Promise<NarSource> {
  const caseHack = options.caseHack ?? process.platform === "darwin";
  const p = typeof path === "string" ? Buffer.from(path) : path;
  return sourceFor(p, lstatSync(p), caseHack);
}

function sourceFor(path: Buffer, st: Stats, caseHack: boolean): NarSource {
  if (st.isFile()) {
    const size = st.size;
    const executable = (st.mode & S_IXUSR) !== 0;
    if (size <= SMALL_FILE_BYTES) return { type: "regular", executable, size, contents: () => [readSmallFile(path, size)] };
    return { type: "regular", executable, size, contents: () => readLargeFile(path, size) };
  }
  if (st.isSymbolicLink()) {
    return { type: "symlink", target: readlinkSync(path, { encoding: "buffer" }) };
  }
  if (st.isDirectory()) {
    return { type: "directory", entries: () => listDirectory(path, caseHack) };
  }
  throw new UnsupportedFileError(path.toString(), fileKind(st));
}

function listDirectory(dir: Buffer, caseHack: boolean): Array<{ name: Uint8Array; node: NarSource }> {
  const slash = Buffer.from("/");
  return readdirSync(dir, { encoding: "buffer" }).map((name) => {
    const child = Buffer.concat([dir, slash, name]);
    return { name: caseHack ? stripCaseHack(name) : name, node: sourceFor(child, lstatSync(child), caseHack) };
  });
}

/** A small file's bytes in one buffer. */
function readSmallFile(path: Buffer, size: number): Uint8Array {
  if (size === 0) return new Uint8Array(0);
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const bytesRead = readSync(fd, buf, filled, size - filled, filled);
      // The file shrank since lstat: hand back what is there; writeNar reports the mismatch.
      if (bytesRead === 0) return buf.subarray(0, filled);
      filled += bytesRead;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads exactly the file's bytes, in chunks the caller may keep (never reused). The next
 * chunk is already being read while the caller consumes the current one, so disk reads
 * overlap with hashing and compression.
 */
async function* readLargeFile(path: Buffer, size: number): AsyncGenerator<Uint8Array> {
  const fh = await open(path, "r");
  const readAt = async (position: number): Promise<Uint8Array> => {
    const want = Math.min(size - position, READ_CHUNK_BYTES);
    const buf = Buffer.allocUnsafe(want);
    const { bytesRead } = await fh.read(buf, 0, want, position);
    return bytesRead === want ? buf : buf.subarray(0, bytesRead);
  };
  let next: Promise<Uint8Array> | undefined;
  try {
    let position = 0;
    next = readAt(0);
    while (next) {
      const chunk = await next;
      next = undefined;
      // The file shrank since lstat: stop, and let writeNar report the size mismatch.
      if (chunk.length === 0) return;
      position += chunk.length;
      if (position < size) next = readAt(position);
      yield chunk;
    }
  } finally {
    // A read still in flight (the consumer stopped early) must finish before closing.
    await next?.catch(() => {});
    await fh.close();
  }
}

/** `name~nix~case~hack~N` → `name`, as Nix's dumper does when use-case-hack is on. */
export function stripCaseHack(name: Buffer): Buffer {
  const at = name.indexOf(CASE_HACK_SUFFIX);
  return at === -1 ? name : name.subarray(0, at);
}

function fileKind(st: Stats): string {
  if (st.isSocket()) return "socket";
  if (st.isFIFO()) return "FIFO";
  if (st.isCharacterDevice()) return "character device";
  if (st.isBlockDevice()) return "block device";
  return "file of unknown type";
}
