// The NAR writer: serialises a NarSource as a stream of chunks, byte-identical to
// `nix-store --dump` (wire rules in nar-wire.ts). Runtime-neutral: the uploader supplies a
// NarSource over the file system (uploader/nar-writer.ts), tests build one from an
// in-memory NarTree.

import { compareBytes, concatBytes, utf8 } from "./encoding.ts";
import { NarError } from "./errors.ts";
import {
  encodeNarString,
  NAR_MAGIC,
  NAR_MAX_DEPTH,
  narEntryNameProblem,
  narPadding,
  narSymlinkTargetProblem,
  type NarTree,
  writeU64,
} from "./nar-wire.ts";

/**
 * Size of the chunks the writer yields for the small tokens and small files it coalesces:
 * large enough that hashing/compressing/uploading consumers see few calls per megabyte,
 * small enough to stay cache-friendly (and equal to Node's default stream buffer).
 */
export const NAR_WRITER_CHUNK_BYTES = 64 * 1024;
/**
 * File-content chunks at least this long are yielded as they come (after flushing what is
 * buffered) instead of being copied: copying big chunks costs more than an extra yield.
 */
export const NAR_PASS_THROUGH_BYTES = 16 * 1024;

export type NarSource =
  | {
      type: "regular";
      executable: boolean;
      /** Byte length of the contents; written before them, so it must be known up front. */
      size: number;
      /** Yields exactly `size` bytes; chunks are passed on, so they must not be reused. */
      contents: () => AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
    }
  | { type: "symlink"; target: Uint8Array }
  | {
      type: "directory";
      /** Entries in any order; the writer sorts them. */
      entries: () =>
        | Promise<Array<{ name: Uint8Array; node: NarSource }>>
        | Array<{ name: Uint8Array; node: NarSource }>;
    };

// Token sequences the writer emits, pre-encoded once.
const seq = (...tokens: string[]): Uint8Array => concatBytes(tokens.map((t) => encodeNarString(t)));
const T_MAGIC = seq(NAR_MAGIC);
const T_REGULAR = seq("(", "type", "regular");
const T_EXECUTABLE_CONTENTS = seq("executable", "", "contents");
const T_CONTENTS = seq("contents");
const T_SYMLINK = seq("(", "type", "symlink", "target");
const T_DIRECTORY = seq("(", "type", "directory");
const T_ENTRY_NAME = seq("entry", "(", "name");
const T_NODE = seq("node");
const T_CLOSE = seq(")");
const ZEROS = new Uint8Array(8);
// Names only appear in error messages; invalid UTF-8 shows as U+FFFD there.
const NAME_DECODER = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

// Accumulates small writes into NAR_WRITER_CHUNK_BYTES buffers. A full buffer is handed
// out (and never touched again) when the next write does not fit.
class ChunkBuffer {
  private buf = new Uint8Array(NAR_WRITER_CHUNK_BYTES);
  private pos = 0;
  /** NAR bytes produced so far, buffered ones included. */
  offset = 0;

  /** Makes room for n bytes (n ≤ one chunk); returns the previous chunk if it was full. */
  private room(n: number): Uint8Array | null {
    return this.pos + n > this.buf.length ? this.take() : null;
  }

  /** Appends raw bytes (at most one chunk long). */
  put(bytes: Uint8Array): Uint8Array | null {
    const full = this.room(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
    this.offset += bytes.length;
    return full;
  }

  /** Appends a u64 (file sizes). */
  putU64(n: number): Uint8Array | null {
    const full = this.room(8);
    writeU64(this.buf, this.pos, n);
    this.pos += 8;
    this.offset += 8;
    return full;
  }

  /** Appends str(bytes) (names, targets: at most 4095 bytes), without a temporary copy. */
  putString(bytes: Uint8Array): Uint8Array | null {
    const padded = bytes.length + narPadding(bytes.length);
    const full = this.room(8 + padded);
    writeU64(this.buf, this.pos, bytes.length);
    this.buf.set(bytes, this.pos + 8);
    this.buf.fill(0, this.pos + 8 + bytes.length, this.pos + 8 + padded);
    this.pos += 8 + padded;
    this.offset += 8 + padded;
    return full;
  }

  /** Counts bytes emitted around the buffer (passed-through file data). */
  skip(n: number): void {
    this.offset += n;
  }

  get buffered(): number {
    return this.pos;
  }

  /** Hands out the buffered bytes and starts a fresh buffer. */
  take(): Uint8Array {
    const out = this.buf.subarray(0, this.pos);
    this.buf = new Uint8Array(NAR_WRITER_CHUNK_BYTES);
    this.pos = 0;
    return out;
  }
}

type Entry = { name: Uint8Array; node: NarSource };
// A directory being written: its sorted entries and the next one to write.
type Frame = { entries: Entry[]; next: number };

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === "function";
}

/**
 * Serialises a NarSource as a stream of NAR chunks, byte-identical to `nix-store --dump`.
 * Throws NarError (offset = NAR bytes produced so far) for invalid or duplicate names,
 * nesting of NAR_MAX_DEPTH levels, invalid symlink targets, a bad size, or a regular file
 * whose contents do not yield exactly `size` bytes.
 *
 * The tree is walked iteratively with an explicit stack (one generator for the whole NAR,
 * not one per node), which keeps the per-file overhead low for trees of many small files.
 */
export async function* writeNar(root: NarSource): AsyncGenerator<Uint8Array> {
  const out = new ChunkBuffer();
  const stack: Frame[] = [];
  // Path of the node being written, for error messages only (decoded lazily).
  const where = (): string => {
    if (stack.length === 0) return "the root";
    return JSON.stringify(stack.map((f) => "/" + NAME_DECODER.decode(f.entries[f.next - 1]!.name)).join(""));
  };
  const fail = (message: string): NarError => new NarError(out.offset, `${where()}: ${message}`);
  let full: Uint8Array | null = out.put(T_MAGIC);
  let node: NarSource | null = root;

  for (;;) {
    if (node !== null) {
      if (stack.length >= NAR_MAX_DEPTH) throw fail(`nested ${stack.length} levels deep; Nix refuses ${NAR_MAX_DEPTH} or more`);
      switch (node.type) {
        case "regular": {
          const { size } = node;
          if (!Number.isSafeInteger(size) || size < 0) throw fail(`invalid file size ${size}`);
          if ((full = out.put(T_REGULAR))) yield full;
          if ((full = out.put(node.executable ? T_EXECUTABLE_CONTENTS : T_CONTENTS))) yield full;
          if ((full = out.putU64(size))) yield full;
          const source = node.contents();
          const it: Iterator<Uint8Array> | AsyncIterator<Uint8Array> =
            Symbol.iterator in source ? source[Symbol.iterator]() : source[Symbol.asyncIterator]();
          let done = false;
          try {
            let written = 0;
            for (;;) {
              const step = it.next();
              const r = isPromise(step) ? await step : step;
              if (r.done) break;
              const chunk = r.value;
              written += chunk.length;
              if (written > size) throw fail(`contents yielded more than the ${size} bytes announced`);
              if (chunk.length >= NAR_PASS_THROUGH_BYTES) {
                if (out.buffered > 0) yield out.take();
                out.skip(chunk.length);
                yield chunk;
              } else if (chunk.length > 0) {
                if ((full = out.put(chunk))) yield full;
              }
            }
            done = true;
            if (written !== size) throw fail(`contents yielded ${written} bytes, ${size} announced`);
          } finally {
            // Stopped early (error, or the consumer gave up): let the source close its file.
            if (!done) await it.return?.();
          }
          if ((full = out.put(ZEROS.subarray(0, narPadding(size))))) yield full;
          if ((full = out.put(T_CLOSE))) yield full;
          break;
        }
        case "symlink": {
          const problem = narSymlinkTargetProblem(node.target);
          if (problem !== null) throw fail(problem);
          if ((full = out.put(T_SYMLINK))) yield full;
          if ((full = out.putString(node.target))) yield full;
          if ((full = out.put(T_CLOSE))) yield full;
          break;
        }
        case "directory": {
          const listed = node.entries();
          const entries = [...(isPromise(listed) ? await listed : listed)].sort((a, b) => compareBytes(a.name, b.name));
          if ((full = out.put(T_DIRECTORY))) yield full;
          stack.push({ entries, next: 0 });
          break;
        }
        default:
          throw fail(`unknown node type ${JSON.stringify((node as { type: unknown }).type)}`);
      }
      node = null;
    }

    const frame = stack[stack.length - 1];
    if (frame === undefined) break;
    // Close the entry whose node was just written.
    if (frame.next > 0 && (full = out.put(T_CLOSE))) yield full;
    if (frame.next === frame.entries.length) {
      // End of this directory: its own ")"; the parent then closes its entry.
      if ((full = out.put(T_CLOSE))) yield full;
      stack.pop();
      continue;
    }
    const entry = frame.entries[frame.next++]!;
    const problem = narEntryNameProblem(entry.name);
    if (problem !== null) throw fail(problem);
    if (frame.next > 1 && compareBytes(frame.entries[frame.next - 2]!.name, entry.name) === 0) throw fail("duplicate entry name");
    if ((full = out.put(T_ENTRY_NAME))) yield full;
    if ((full = out.putString(entry.name))) yield full;
    if ((full = out.put(T_NODE))) yield full;
    node = entry.node;
  }
  if (out.buffered > 0) yield out.take();
}

/** A NarSource over an in-memory tree (names and targets encoded as UTF-8). */
export function narSourceFromTree(t: NarTree): NarSource {
  switch (t.type) {
    case "regular": {
      const contents = t.contents;
      return { type: "regular", executable: t.executable ?? false, size: contents.length, contents: () => [contents] };
    }
    case "symlink":
      return { type: "symlink", target: utf8(t.target) };
    case "directory":
      return {
        type: "directory",
        entries: () => Object.keys(t.entries).map((name) => ({ name: utf8(name), node: narSourceFromTree(t.entries[name]!) })),
      };
  }
}

/** The whole NAR of an in-memory tree. */
export async function serializeNar(t: NarTree): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of writeNar(narSourceFromTree(t))) chunks.push(chunk);
  return concatBytes(chunks);
}
