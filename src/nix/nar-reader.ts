// Streaming NAR reader and validator (wire rules in nar-wire.ts, PROTOCOL §1). The
// uploader's import reads the NARs of a `nix-store --export` stream with it
// (uploader/sources/export-stream.ts); tests read what the writer and Nix produce.
//
// Walks a NAR byte stream whose chunks may split tokens anywhere, and checks everything a
// strict Nix (2.35+) parser checks: the magic, the grammar as a state machine (so
// `executable` after `contents` or `node` before `name` fail), zero padding, entry names
// (not empty, ".", "..", no "/" or NUL, at most 255 bytes) in strictly increasing byte
// order, symlink targets (non-empty, no NUL, at most 4095 bytes), tag lengths, and nesting
// below 64 levels. Unlike Nix, which stops after the root node and leaves what follows
// unread, bytes after the root node are an error: a stored NAR must be exactly one archive,
// or its NarHash/NarSize would describe bytes Nix never unpacks.
//
// It reports the NAR's size and can build the `.ls` listing (nar-listing.ts) and/or a
// NarTree. File contents are skipped, never buffered, unless the tree is requested, so
// validating or listing a multi-GB NAR takes constant memory. Every problem is a NarError whose offset
// is the position in the NAR of the offending token (the end of input for truncation).

import { compareBytes, utf8 } from "./encoding.ts";
import { NarError } from "./errors.ts";
import {
  NAR_MAGIC,
  NAR_MAX_DEPTH,
  NAR_MAX_NAME_LENGTH,
  NAR_MAX_TAG_LENGTH,
  NAR_MAX_TARGET_LENGTH,
  type NarTree,
  narEntryNameProblem,
  narPadding,
  narSymlinkTargetProblem,
} from "./nar-wire.ts";
import type { NarListing, NarListingNode } from "./nar-listing.ts";

export interface ReadNarOptions {
  /** Build the `.ls` listing (names and targets must then be valid UTF-8). */
  listing?: boolean;
  /** Build a NarTree with all file contents in memory: only for small NARs. */
  tree?: boolean;
  /**
   * Stop after the root node, as Nix's parseDump does, for a NAR embedded in a longer
   * stream (`nix-store --export`): what follows is neither an error nor read, and the
   * input is left open. The caller finds the NAR's end from the returned narSize.
   */
  stopAtEnd?: boolean;
}

export interface ReadNarResult {
  narSize: number;
  listing?: NarListing;
  tree?: NarTree;
}

const EMPTY = new Uint8Array(0);
const FATAL_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const LOSSY_UTF8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

const TAG = {
  magic: utf8(NAR_MAGIC),
  open: utf8("("),
  close: utf8(")"),
  type: utf8("type"),
  regular: utf8("regular"),
  executable: utf8("executable"),
  contents: utf8("contents"),
  symlink: utf8("symlink"),
  target: utf8("target"),
  directory: utf8("directory"),
  entry: utf8("entry"),
  name: utf8("name"),
  node: utf8("node"),
};

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function show(bytes: Uint8Array): string {
  return JSON.stringify(LOSSY_UTF8.decode(bytes.subarray(0, 40)));
}

type Chunks = { next(): Promise<IteratorResult<Uint8Array>>; stop(): Promise<void>; release(): void };

function chunksOf(input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>): Chunks {
  if ("getReader" in input && typeof input.getReader === "function") {
    const reader = (input as ReadableStream<Uint8Array>).getReader();
    return {
      next: () => reader.read() as Promise<IteratorResult<Uint8Array>>,
      stop: () => reader.cancel().catch(() => undefined),
      release: () => reader.releaseLock(),
    };
  }
  const it = (input as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  return {
    next: () => it.next(),
    stop: async () => {
      try {
        await it.return?.();
      } catch {
        // The input's own clean-up failing does not change the verdict on the NAR.
      }
    },
    release: () => undefined,
  };
}

// A cursor over the input chunks: small exact reads for tokens, and skipping or
// collecting of file contents without per-byte work. Every read has a synchronous fast
// path, taken whenever the bytes are already in the current chunk (nearly always), so a
// token costs no promise; only reads that cross a chunk boundary go asynchronous.
class Cursor {
  private buf: Uint8Array = EMPTY;
  private pos = 0;
  /** Absolute NAR offset of the next unread byte. */
  offset = 0;
  private readonly chunks: Chunks;

  constructor(chunks: Chunks) {
    this.chunks = chunks;
  }

  /** Loads the next non-empty chunk; false at the end of input. */
  private async fill(): Promise<boolean> {
    for (;;) {
      const r = await this.chunks.next();
      if (r.done) return false;
      const chunk = r.value;
      if (!(chunk instanceof Uint8Array)) throw new TypeError("NAR input must yield Uint8Array chunks");
      if (chunk.length > 0) {
        this.buf = chunk;
        this.pos = 0;
        return true;
      }
    }
  }

  /** Exactly n bytes, across chunks (the slow path of the reads below). */
  private async readSlow(n: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (this.pos === this.buf.length && !(await this.fill())) {
        throw new NarError(this.offset, `unexpected end of NAR in ${what}`);
      }
      const take = Math.min(n - got, this.buf.length - this.pos);
      out.set(this.buf.subarray(this.pos, this.pos + take), got);
      this.pos += take;
      this.offset += take;
      got += take;
    }
    return out;
  }

  /** Exactly n bytes (n is small: a token or u64). Valid until the next read. */
  read(n: number, what: string): Uint8Array | Promise<Uint8Array> {
    if (this.buf.length - this.pos >= n) {
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return out;
    }
    return this.readSlow(n, what);
  }

  /** A u64 that must fit a JavaScript number exactly. */
  u64(what: string): number | Promise<number> {
    const at = this.offset;
    const b = this.read(8, what);
    return b instanceof Uint8Array ? decodeU64(b, at, what) : b.then((bytes) => decodeU64(bytes, at, what));
  }

  /** The zero padding after `length` bytes. */
  padding(length: number, what: string): void | Promise<void> {
    const pad = narPadding(length);
    if (pad === 0) return;
    const at = this.offset;
    const b = this.read(pad, `padding of ${what}`);
    if (b instanceof Uint8Array) return checkZero(b, at, what);
    return b.then((bytes) => checkZero(bytes, at, what));
  }

  /** str(s) with s at most `max` bytes; the result is only valid until the next read. */
  string(max: number, what: string): Uint8Array | Promise<Uint8Array> {
    const at = this.offset;
    const avail = this.buf.length - this.pos;
    if (avail >= 8) {
      const length = decodeU64(this.buf.subarray(this.pos, this.pos + 8), at, `length of ${what}`);
      if (length > max) throw new NarError(at, `${what} is ${length} bytes long, more than the ${max} allowed`);
      const padded = length + narPadding(length);
      if (avail >= 8 + padded) {
        const start = this.pos + 8;
        checkZero(this.buf.subarray(start + length, start + padded), at + 8 + length, what);
        this.pos += 8 + padded;
        this.offset += 8 + padded;
        return this.buf.subarray(start, start + length);
      }
    }
    return this.stringSlow(max, what);
  }

  private async stringSlow(max: number, what: string): Promise<Uint8Array> {
    const at = this.offset;
    const length = await this.u64(`length of ${what}`);
    if (length > max) throw new NarError(at, `${what} is ${length} bytes long, more than the ${max} allowed`);
    const bytes = await this.read(length, what);
    await this.padding(length, what);
    return bytes;
  }

  /** Passes over n bytes of file contents, handing each piece to `sink` if given. */
  skip(n: number, what: string, sink?: (piece: Uint8Array) => void): void | Promise<void> {
    if (this.buf.length - this.pos >= n) {
      if (sink) sink(this.buf.subarray(this.pos, this.pos + n));
      this.pos += n;
      this.offset += n;
      return;
    }
    return this.skipSlow(n, what, sink);
  }

  private async skipSlow(n: number, what: string, sink?: (piece: Uint8Array) => void): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.pos === this.buf.length && !(await this.fill())) {
        throw new NarError(this.offset, `unexpected end of NAR in ${what} (${left} of ${n} bytes missing)`);
      }
      const take = Math.min(left, this.buf.length - this.pos);
      if (sink) sink(this.buf.subarray(this.pos, this.pos + take));
      this.pos += take;
      this.offset += take;
      left -= take;
    }
  }

  async atEnd(): Promise<boolean> {
    return this.pos === this.buf.length && !(await this.fill());
  }
}

function decodeU64(b: Uint8Array, at: number, what: string): number {
  const lo = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  const hi = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
  // Beyond 2^53 a length is certainly bogus (and no longer exact in a JS number).
  if (hi >= 0x20_0000) throw new NarError(at, `${what} is too large`);
  return hi * 0x1_0000_0000 + lo;
}

function checkZero(bytes: Uint8Array, at: number, what: string): void {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) throw new NarError(at + i, `non-zero padding after ${what}`);
}

type Parsed = { listing?: NarListingNode; tree?: NarTree };

class NarParser {
  private readonly cur: Cursor;
  private readonly listing: boolean;
  private readonly tree: boolean;

  constructor(cur: Cursor, opts: ReadNarOptions) {
    this.cur = cur;
    this.listing = opts.listing === true;
    this.tree = opts.tree === true;
  }

  private tag(what: string): Uint8Array | Promise<Uint8Array> {
    return this.cur.string(NAR_MAX_TAG_LENGTH, what);
  }

  private expect(expected: Uint8Array, what: string): void | Promise<void> {
    const at = this.cur.offset;
    const got = this.tag(what);
    const check = (tag: Uint8Array): void => {
      if (!equalBytes(tag, expected)) throw new NarError(at, `expected ${show(expected)} (${what}), got ${show(tag)}`);
    };
    return got instanceof Uint8Array ? check(got) : got.then(check);
  }

  private text(bytes: Uint8Array, at: number, what: string): string {
    try {
      return FATAL_UTF8.decode(bytes);
    } catch {
      throw new NarError(at, `${what} is not valid UTF-8, which a listing or tree cannot represent`);
    }
  }

  async nar(): Promise<Parsed> {
    const at = this.cur.offset;
    const magic = await this.tag("magic");
    if (!equalBytes(magic, TAG.magic)) throw new NarError(at, `not a NAR: magic ${show(magic)} instead of "${NAR_MAGIC}"`);
    return this.node(0);
  }

  private async node(depth: number): Promise<Parsed> {
    if (depth >= NAR_MAX_DEPTH) throw new NarError(this.cur.offset, `directories nested ${NAR_MAX_DEPTH} levels deep`);
    // `if (p) await p` / `instanceof` instead of a plain await: a read that completed
    // synchronously then costs no microtask (a third of the time on many small files).
    let p = this.expect(TAG.open, "start of node");
    if (p) await p;
    p = this.expect(TAG.type, "node type");
    if (p) await p;
    const typeAt = this.cur.offset;
    let type = this.tag("node type");
    if (!(type instanceof Uint8Array)) type = await type;
    let result: Parsed;
    if (equalBytes(type, TAG.regular)) result = await this.regular();
    else if (equalBytes(type, TAG.symlink)) result = await this.symlink();
    else if (equalBytes(type, TAG.directory)) return this.directory(depth); // consumes its own ")"
    else throw new NarError(typeAt, `unknown node type ${show(type)}`);
    p = this.expect(TAG.close, "end of node");
    if (p) await p;
    return result;
  }

  private async regular(): Promise<Parsed> {
    let at = this.cur.offset;
    let tag = this.tag("file field");
    if (!(tag instanceof Uint8Array)) tag = await tag;
    let executable = false;
    if (equalBytes(tag, TAG.executable)) {
      executable = true;
      const markerAt = this.cur.offset;
      const marker = await this.tag("executable marker");
      if (marker.length !== 0) throw new NarError(markerAt, "executable marker has a non-empty value");
      at = this.cur.offset;
      tag = await this.tag("file field");
    }
    if (!equalBytes(tag, TAG.contents)) throw new NarError(at, `expected "contents", got ${show(tag)}`);
    let size = this.cur.u64("file size");
    if (typeof size !== "number") size = await size;
    const narOffset = this.cur.offset;
    let contents: Uint8Array | undefined;
    if (this.tree) {
      // Collected piece by piece (never preallocated from the untrusted size field).
      const pieces: Uint8Array[] = [];
      await this.cur.skip(size, "file contents", (p) => pieces.push(p.slice()));
      contents = pieces.length === 1 ? pieces[0]! : concat(pieces, size);
    } else {
      const skipped = this.cur.skip(size, "file contents");
      if (skipped) await skipped;
    }
    const padded = this.cur.padding(size, "file contents");
    if (padded) await padded;
    const out: Parsed = {};
    if (this.listing) out.listing = executable ? { type: "regular", size, executable: true, narOffset } : { type: "regular", size, narOffset };
    if (this.tree) out.tree = executable ? { type: "regular", executable: true, contents: contents! } : { type: "regular", contents: contents! };
    return out;
  }

  private async symlink(): Promise<Parsed> {
    await this.expect(TAG.target, "symlink target");
    const at = this.cur.offset;
    const target = await this.cur.string(NAR_MAX_TARGET_LENGTH, "symlink target");
    const problem = narSymlinkTargetProblem(target);
    if (problem !== null) throw new NarError(at, problem);
    const out: Parsed = {};
    if (this.listing || this.tree) {
      const text = this.text(target, at, "symlink target");
      if (this.listing) out.listing = { type: "symlink", target: text };
      if (this.tree) out.tree = { type: "symlink", target: text };
    }
    return out;
  }

  private async directory(depth: number): Promise<Parsed> {
    // Null-prototype records: an entry may be called "__proto__".
    const listingEntries: Record<string, NarListingNode> = Object.create(null);
    const treeEntries: Record<string, NarTree> = Object.create(null);
    let previous: Uint8Array | null = null;
    for (;;) {
      const at = this.cur.offset;
      let tag = this.tag("directory entry");
      if (!(tag instanceof Uint8Array)) tag = await tag;
      if (equalBytes(tag, TAG.close)) break;
      if (!equalBytes(tag, TAG.entry)) throw new NarError(at, `expected "entry" or ")", got ${show(tag)}`);
      let p = this.expect(TAG.open, "start of entry");
      if (p) await p;
      p = this.expect(TAG.name, "entry name");
      if (p) await p;
      const nameAt = this.cur.offset;
      let read = this.cur.string(NAR_MAX_NAME_LENGTH, "entry name");
      if (!(read instanceof Uint8Array)) read = await read;
      const name = read.slice();
      const problem = narEntryNameProblem(name);
      if (problem !== null) throw new NarError(nameAt, `invalid file name: ${problem}`);
      if (previous !== null) {
        const order = compareBytes(previous, name);
        if (order === 0) throw new NarError(nameAt, `duplicate entry name ${show(name)}`);
        if (order > 0) throw new NarError(nameAt, `directory is not sorted: ${show(name)} after ${show(previous)}`);
      }
      previous = name;
      p = this.expect(TAG.node, "entry node");
      if (p) await p;
      const child = await this.node(depth + 1);
      p = this.expect(TAG.close, "end of entry");
      if (p) await p;
      if (this.listing || this.tree) {
        const key = this.text(name, nameAt, "entry name");
        if (child.listing) listingEntries[key] = child.listing;
        if (child.tree) treeEntries[key] = child.tree;
      }
    }
    const out: Parsed = {};
    if (this.listing) out.listing = { type: "directory", entries: listingEntries };
    if (this.tree) out.tree = { type: "directory", entries: treeEntries };
    return out;
  }
}

function concat(pieces: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of pieces) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Reads and validates one NAR from a byte stream. Resolves with its size and, on request,
 * its listing and tree; rejects with NarError (offset in the NAR) if it is malformed,
 * truncated, or followed by trailing bytes (unless `stopAtEnd`). On error the input is
 * cancelled.
 */
export async function readNar(
  input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  opts: ReadNarOptions = {},
): Promise<ReadNarResult> {
  const chunks = chunksOf(input);
  const cur = new Cursor(chunks);
  try {
    const root = await new NarParser(cur, opts).nar();
    if (opts.stopAtEnd !== true && !(await cur.atEnd())) throw new NarError(cur.offset, "trailing bytes after the NAR's root node");
    chunks.release();
    const result: ReadNarResult = { narSize: cur.offset };
    if (root.listing) result.listing = { version: 1, root: root.listing };
    if (root.tree) result.tree = root.tree;
    return result;
  } catch (e) {
    await chunks.stop();
    throw e;
  }
}
