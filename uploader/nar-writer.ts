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
import type { Stats } from "node:fs";
import { lstat, open, readdir, readlink } from "node:fs/promises";
import { writeNar, type NarSource } from "../src/nix/nar.ts";
import { UnsupportedFileError } from "./errors.ts";

/**
 * Bytes per read of a file's contents. Large reads keep the number of system calls (and
 * thread-pool round trips) per megabyte low; 1 MiB is where throughput stops improving.
 */
export const READ_CHUNK_BYTES = 1 << 20;

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
  return sourceFor(p, await lstat(p), caseHack);
}

async function sourceFor(path: Buffer, st: Stats, caseHack: boolean): Promise<NarSource> {
  if (st.isFile()) {
    const size = st.size;
    return { type: "regular", executable: (st.mode & S_IXUSR) !== 0, size, contents: () => readContents(path, size) };
  }
  if (st.isSymbolicLink()) {
    return { type: "symlink", target: await readlink(path, { encoding: "buffer" }) };
  }
  if (st.isDirectory()) {
    return { type: "directory", entries: () => listDirectory(path, caseHack) };
  }
  throw new UnsupportedFileError(path.toString(), fileKind(st));
}

async function listDirectory(dir: Buffer, caseHack: boolean): Promise<Array<{ name: Uint8Array; node: NarSource }>> {
  const names = await readdir(dir, { encoding: "buffer" });
  const slash = Buffer.from("/");
  return Promise.all(
    names.map(async (name) => {
      const child = Buffer.concat([dir, slash, name]);
      return { name: caseHack ? stripCaseHack(name) : name, node: await sourceFor(child, await lstat(child), caseHack) };
    }),
  );
}

/**
 * Reads exactly the file's bytes, in chunks the caller may keep (never reused). The next
 * chunk is already being read while the caller consumes the current one, so disk reads
 * overlap with hashing and compression.
 */
async function* readContents(path: Buffer, size: number): AsyncGenerator<Uint8Array> {
  if (size === 0) return;
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
