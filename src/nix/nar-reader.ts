// Streaming NAR reader and validator (grammar in nar.ts, PROTOCOL §1).
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
// It reports the NAR's size and can build the `.ls` listing and/or a NarTree. File
// contents are skipped, never buffered, unless the tree is requested, so validating or
// listing a multi-GB NAR takes constant memory. Every problem is a NarError whose offset
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
} from "./nar.ts";

/** A node of the `.ls` listing, in Nix 2.8's shape (PROTOCOL §5.1). */
export type NarListingNode =
  | {
      type: "regular";
      size: number;
      /** Present (true) only for executables, as Nix 2.8 writes it. */
      executable?: true;
      /** Offset of the contents in the uncompressed NAR. */
      narOffset?: number;
    }
  | { type: "symlink"; target: string }
  | { type: "directory"; entries: Record<string, NarListingNode> };

/** The `.ls` document: `{"version":1,"root":{…}}`. */
export interface NarListing {
  version: 1;
  root: NarListingNode;
}

export interface ReadNarOptions {
  /** Build the `.ls` listing (names and targets must then be valid UTF-8). */
  listing?: boolean;
  /** Build a NarTree with all file contents in memory: only for small NARs. */
  tree?: boolean;
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
// collecting of file contents without per-byte work.
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

  /** Exactly n bytes (n is small: a token or u64). Valid until the next read. */
  async read(n: number, what: string): Promise<Uint8Array> {
    if (this.buf.length - this.pos >= n) {
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return out;
    }
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

  /** Passes over n bytes of file contents, handing each piece to `sink` if given. */
  async skip(n: number, what: string, sink?: (piece: Uint8Array) => void): Promise<void> {
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

class NarParser {
  private readonly cur: Cursor;
  private readonly listing: boolean;
  private readonly tree: boolean;

  constructor(cur: Cursor, opts: ReadNarOptions) {
    this.cur = cur;
    this.listing = opts.listing === true;
    this.tree = opts.tree === true;
  }

  private async u64(what: string): Promise<number> {
    const at = this.cur.offset;
    const b = await this.cur.read(8, what);
    const lo = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
    const hi = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
    // Beyond 2^53 a length is certainly bogus (and no longer exact in a JS number).
    if (hi >= 0x20_0000) throw new NarError(at, `${what} is too large`);
    return hi * 0x1_0000_0000 + lo;
  }

  private async padding(length: number, what: string): Promise<void> {
    const pad = narPadding(length);
    if (pad === 0) return;
    const at = this.cur.offset;
    const bytes = await this.cur.read(pad, `padding of ${what}`);
    for (let i = 0; i < pad; i++) if (bytes[i] !== 0) throw new NarError(at + i, `non-zero padding after ${what}`);
  }

  /** str(s) with s at most `max` bytes; the result is only valid until the next read. */
  private async string(max: number, what: string): Promise<Uint8Array> {
    const at = this.cur.offset;
    const length = await this.u64(`length of ${what}`);
    if (length > max) throw new NarError(at, `${what} is ${length} bytes long, more than the ${max} allowed`);
    const bytes = await this.cur.read(length, what);
    await this.padding(length, what);
    return bytes;
  }

  private async tag(what: string): Promise<Uint8Array> {
    return this.string(NAR_MAX_TAG_LENGTH, what);
  }

  private async expect(expected: Uint8Array, what: string): Promise<void> {
    const at = this.cur.offset;
    const got = await this.tag(what);
    if (!equalBytes(got, expected)) throw new NarError(at, `expected ${show(expected)} (${what}), got ${show(got)}`);
  }

  private text(bytes: Uint8Array, at: number, what: string): string {
    try {
      return FATAL_UTF8.decode(bytes);
    } catch {
      throw new NarError(at, `${what} is not valid UTF-8, which a listing or tree cannot represent`);
    }
  }

  async nar(): Promise<{ listing?: NarListingNode; tree?: NarTree }> {
    const at = this.cur.offset;
    const magic = await this.tag("magic");
    if (!equalBytes(magic, TAG.magic)) throw new NarError(at, `not a NAR: magic ${show(magic)} instead of "${NAR_MAGIC}"`);
    return this.node(0);
  }

  private async node(depth: number): Promise<{ listing?: NarListingNode; tree?: NarTree }> {
    if (depth >= NAR_MAX_DEPTH) throw new NarError(this.cur.offset, `directories nested ${NAR_MAX_DEPTH} levels deep`);
    await this.expect(TAG.open, "start of node");
    await this.expect(TAG.type, "node type");
    const typeAt = this.cur.offset;
    const type = await this.tag("node type");
    let result: { listing?: NarListingNode; tree?: NarTree };
    if (equalBytes(type, TAG.regular)) result = await this.regular();
    else if (equalBytes(type, TAG.symlink)) result = await this.symlink();
    else if (equalBytes(type, TAG.directory)) return this.directory(depth); // consumes its own ")"
    else throw new NarError(typeAt, `unknown node type ${show(type)}`);
    await this.expect(TAG.close, "end of node");
    return result;
  }

  private async regular(): Promise<{ listing?: NarListingNode; tree?: NarTree }> {
    let at = this.cur.offset;
    let tag = await this.tag("file field");
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
    const size = await this.u64("file size");
    const narOffset = this.cur.offset;
    let contents: Uint8Array | undefined;
    if (this.tree) {
      // Collected piece by piece (never preallocated from the untrusted size field).
      const pieces: Uint8Array[] = [];
      await this.cur.skip(size, "file contents", (p) => pieces.push(p.slice()));
      contents = pieces.length === 1 ? pieces[0]! : concat(pieces, size);
    } else {
      await this.cur.skip(size, "file contents");
    }
    await this.padding(size, "file contents");
    const out: { listing?: NarListingNode; tree?: NarTree } = {};
    if (this.listing) out.listing = executable ? { type: "regular", size, executable: true, narOffset } : { type: "regular", size, narOffset };
    if (this.tree) out.tree = executable ? { type: "regular", executable: true, contents: contents! } : { type: "regular", contents: contents! };
    return out;
  }

  private async symlink(): Promise<{ listing?: NarListingNode; tree?: NarTree }> {
    await this.expect(TAG.target, "symlink target");
    const at = this.cur.offset;
    const target = await this.string(NAR_MAX_TARGET_LENGTH, "symlink target");
    const problem = narSymlinkTargetProblem(target);
    if (problem !== null) throw new NarError(at, problem);
    const out: { listing?: NarListingNode; tree?: NarTree } = {};
    if (this.listing || this.tree) {
      const text = this.text(target, at, "symlink target");
      if (this.listing) out.listing = { type: "symlink", target: text };
      if (this.tree) out.tree = { type: "symlink", target: text };
    }
    return out;
  }

  private async directory(depth: number): Promise<{ listing?: NarListingNode; tree?: NarTree }> {
    // Null-prototype records: an entry may be called "__proto__".
    const listingEntries: Record<string, NarListingNode> = Object.create(null);
    const treeEntries: Record<string, NarTree> = Object.create(null);
    let previous: Uint8Array | null = null;
    for (;;) {
      const at = this.cur.offset;
      const tag = await this.tag("directory entry");
      if (equalBytes(tag, TAG.close)) break;
      if (!equalBytes(tag, TAG.entry)) throw new NarError(at, `expected "entry" or ")", got ${show(tag)}`);
      await this.expect(TAG.open, "start of entry");
      await this.expect(TAG.name, "entry name");
      const nameAt = this.cur.offset;
      const name = (await this.string(NAR_MAX_NAME_LENGTH, "entry name")).slice();
      const problem = narEntryNameProblem(name);
      if (problem !== null) throw new NarError(nameAt, `invalid file name: ${problem}`);
      if (previous !== null) {
        const order = compareBytes(previous, name);
        if (order === 0) throw new NarError(nameAt, `duplicate entry name ${show(name)}`);
        if (order > 0) throw new NarError(nameAt, `directory is not sorted: ${show(name)} after ${show(previous)}`);
      }
      previous = name;
      await this.expect(TAG.node, "entry node");
      const child = await this.node(depth + 1);
      await this.expect(TAG.close, "end of entry");
      if (this.listing || this.tree) {
        const key = this.text(name, nameAt, "entry name");
        if (child.listing) listingEntries[key] = child.listing;
        if (child.tree) treeEntries[key] = child.tree;
      }
    }
    const out: { listing?: NarListingNode; tree?: NarTree } = {};
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
 * truncated, or followed by trailing bytes. On error the input is cancelled.
 */
export async function readNar(
  input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  opts: ReadNarOptions = {},
): Promise<ReadNarResult> {
  const chunks = chunksOf(input);
  const cur = new Cursor(chunks);
  try {
    const root = await new NarParser(cur, opts).nar();
    if (!(await cur.atEnd())) throw new NarError(cur.offset, "trailing bytes after the NAR's root node");
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

function listingNodeJson(n: NarListingNode): string {
  switch (n.type) {
    case "regular":
      return (
        `{"type":"regular","size":${n.size}` +
        (n.executable ? `,"executable":true` : "") +
        (n.narOffset !== undefined ? `,"narOffset":${n.narOffset}` : "") +
        "}"
      );
    case "symlink":
      return `{"type":"symlink","target":${JSON.stringify(n.target)}}`;
    case "directory": {
      // Entries in NAR order (UTF-8 bytes), whatever order the object's keys have.
      const names = Object.keys(n.entries)
        .map((name) => [name, utf8(name)] as const)
        .sort((a, b) => compareBytes(a[1], b[1]));
      const body = names.map(([name]) => `${JSON.stringify(name)}:${listingNodeJson(n.entries[name]!)}`).join(",");
      return `{"type":"directory","entries":{${body}}}`;
    }
  }
}

/** The `.ls` JSON as Nix 2.8 writes it: `{"version":1,"root":{…}}`, compact, NAR order. */
export function formatNarListing(l: NarListing): string {
  return `{"version":${l.version},"root":${listingNodeJson(l.root)}}`;
}
