// `nix-store --export` streams: Nix's export format (libstore/export-import.cc,
// exportPaths/importPaths), read without Nix.
//
//   stream  = { u64(1) path } u64(0)
//   path    = nar                       one NAR, no length prefix: it ends where its root
//                                        node ends (the core's readNar with stopAtEnd)
//             u64(0x4558494e)           exportMagic, "NIXE" little-endian
//             str(store path)
//             u64(n) n × str(reference) the references, full store paths
//             str(deriver)              "" when unknown
//             u64(0) | u64(1) str(sig)  the legacy signature marker: 0 from every Nix that
//                                        still writes this format; after a 1, Nix reads and
//                                        ignores one string, and so does this reader
//   u64     = 8 bytes, little-endian; str = u64 length, the bytes, zero padding to 8.
//
// Nix writes the paths references first (exportPaths sorts them topologically). The
// format carries no NarHash, no signatures and no content address: the importer computes
// the NarHash itself, and signatures come from the importer's key.
//
// `scanExport` reads the stream once, checking every NAR as Nix's parser would, and
// records where each NAR lies (offset and size) with its sha256 and the metadata that
// follows it; the NARs are then read again from those offsets (readExportNar) when they
// are compressed, so no NAR is ever held in memory. A stream that is not a seekable file
// (standard input) is copied to a spool file as it is scanned, and read back from there.
import { createHash } from "node:crypto";
import { createReadStream, type WriteStream } from "node:fs";
import type { Readable } from "node:stream";
import { formatSha256 } from "../../src/nix/hash.ts";
import { NarError } from "../../src/nix/errors.ts";
import { readNar } from "../../src/nix/nar-reader.ts";
import { parseStorePath, STORE_DIR } from "../../src/nix/store-path.ts";
import { READ_CHUNK_BYTES } from "../nar-writer.ts";
import { SourceError } from "./cache-source.ts";

/** exportMagic in Nix ("NIXE" as a little-endian u32, written as a u64). */
export const EXPORT_MAGIC = 0x4558494e;

/** Longest string accepted where a store path is expected (Nix's paths are < 256 bytes). */
const MAX_PATH_STRING = 4096;
/** Longest legacy signature string skipped. */
const MAX_SIGNATURE_STRING = 64 * 1024;
/** Most references accepted for one path (real ones have at most a few thousand). */
const MAX_REFERENCES = 1_000_000;

/** One path of an export stream. */
export interface ExportEntry {
  /** Full store path. */
  path: string;
  hashPart: string;
  /** Full store paths. */
  references: string[];
  /** Full store path of the .drv, when the stream names one. */
  deriver?: string;
  /** Where the NAR starts in the stream (or its spool file), and its length. */
  narOffset: number;
  narSize: number;
  /** `sha256:<nix32>` of the NAR. */
  narHash: string;
}

const EMPTY = new Uint8Array(0);

/** Sequential reads of the stream's framing, with absolute offsets. */
class ExportReader {
  readonly #it: AsyncIterator<Uint8Array>;
  readonly #spool: WriteStream | undefined;
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  /** Absolute offset of #buf[0]. */
  #bufStart = 0;

  constructor(input: AsyncIterable<Uint8Array>, spool?: WriteStream) {
    this.#it = input[Symbol.asyncIterator]();
    this.#spool = spool;
  }

  get offset(): number {
    return this.#bufStart + this.#pos;
  }

  /** Loads the next non-empty chunk (copying it to the spool); false at the end of input. */
  async #fill(): Promise<boolean> {
    for (;;) {
      const r = await this.#it.next();
      if (r.done) return false;
      const chunk = r.value instanceof Uint8Array ? r.value : Buffer.from(r.value as string);
      if (chunk.length === 0) continue;
      if (this.#spool && !this.#spool.write(chunk)) await waitForDrain(this.#spool);
      this.#bufStart += this.#buf.length;
      this.#buf = chunk;
      this.#pos = 0;
      return true;
    }
  }

  async bytes(n: number, what: string): Promise<Uint8Array> {
    if (this.#buf.length - this.#pos >= n) {
      const out = this.#buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (this.#pos === this.#buf.length && !(await this.#fill())) throw this.error(`unexpected end of the stream in ${what}`);
      const take = Math.min(n - got, this.#buf.length - this.#pos);
      out.set(this.#buf.subarray(this.#pos, this.#pos + take), got);
      this.#pos += take;
      got += take;
    }
    return out;
  }

  async u64(what: string): Promise<number> {
    const b = await this.bytes(8, what);
    const lo = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
    const hi = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
    if (hi >= 0x20_0000) throw this.error(`${what} is too large`);
    return hi * 0x1_0000_0000 + lo;
  }

  async string(max: number, what: string): Promise<string> {
    const length = await this.u64(`length of ${what}`);
    if (length > max) throw this.error(`${what} is ${length} bytes long, more than ${max}`);
    const bytes = Buffer.from(await this.bytes(length, what));
    const pad = (8 - (length % 8)) % 8;
    if (pad > 0 && (await this.bytes(pad, `padding of ${what}`)).some((b) => b !== 0)) throw this.error(`non-zero padding after ${what}`);
    return bytes.toString("utf8");
  }

  /**
   * Reads and checks one NAR (the core's readNar, which stops at the NAR's end), hashing
   * exactly its bytes. The reader is left just after it.
   */
  async nar(): Promise<{ offset: number; size: number; hash: string }> {
    const start = this.offset;
    const hash = createHash("sha256");
    // Each chunk handed to readNar is hashed once the next one is asked for (so it lay
    // wholly inside the NAR); the last one only up to the NAR's end.
    let pending: Uint8Array | undefined;
    let pendingStart = 0;
    const chunks = async function* (this: ExportReader): AsyncGenerator<Uint8Array> {
      if (this.#pos < this.#buf.length) {
        pending = this.#buf.subarray(this.#pos);
        pendingStart = this.offset;
        yield pending;
      }
      for (;;) {
        if (!(await this.#fill())) return;
        if (pending) hash.update(pending);
        pending = this.#buf;
        pendingStart = this.#bufStart;
        yield pending;
      }
    }.call(this);
    let size: number;
    try {
      ({ narSize: size } = await readNar(chunks, { stopAtEnd: true }));
    } catch (err) {
      if (err instanceof NarError) throw this.error(`the NAR starting at byte ${start} is not valid: ${err.message}`);
      throw err;
    }
    const end = start + size;
    if (pending) hash.update(pending.subarray(0, end - pendingStart));
    this.#pos = end - this.#bufStart;
    return { offset: start, size, hash: formatSha256(new Uint8Array(hash.digest())) };
  }

  error(message: string): SourceError {
    return new SourceError(`export stream, byte ${this.offset}: ${message}`, "give the output of `nix-store --export` as it was written");
  }
}

function waitForDrain(stream: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      stream.off("drain", onDrain);
      reject(err);
    };
    const onDrain = () => {
      stream.off("error", onError);
      resolve();
    };
    stream.once("drain", onDrain);
    stream.once("error", onError);
  });
}

export interface ScanOptions {
  /** Copy the stream here as it is read (for input that cannot be read twice). */
  spool?: WriteStream | undefined;
  /** Called with each path as it is found, for progress. */
  onPath?: ((entry: ExportEntry) => void) | undefined;
  /** The store directory paths must be in (the cache serves /nix/store). */
  storeDir?: string;
}

/**
 * Reads a whole export stream, checking its framing and every NAR, and returns its paths
 * in stream order. Throws SourceError naming the byte offset of the first problem.
 */
export async function scanExport(input: AsyncIterable<Uint8Array>, options: ScanOptions = {}): Promise<ExportEntry[]> {
  const storeDir = options.storeDir ?? STORE_DIR;
  const reader = new ExportReader(input, options.spool);
  const entries: ExportEntry[] = [];
  const seen = new Set<string>();
  const storePath = (s: string, what: string): { path: string; hashPart: string } => {
    const parsed = parseStorePath(s, storeDir);
    if (!parsed) throw reader.error(`${what} ${JSON.stringify(s)} is not a store path in ${storeDir}`);
    return { path: s, hashPart: parsed.hash };
  };
  for (;;) {
    const marker = await reader.u64(entries.length === 0 ? "the start of the stream" : "the marker before the next path");
    if (marker === 0) break;
    if (marker !== 1) throw reader.error("this does not look like the output of `nix-store --export` (expected 1 or 0)");
    const nar = await reader.nar();
    if ((await reader.u64("the export magic")) !== EXPORT_MAGIC) throw reader.error("missing the export magic (0x4558494e) after a NAR");
    const { path, hashPart } = storePath(await reader.string(MAX_PATH_STRING, "the store path"), "the store path");
    const count = await reader.u64("the number of references");
    if (count > MAX_REFERENCES) throw reader.error(`${count} references for ${path}`);
    const references: string[] = [];
    for (let i = 0; i < count; i++) references.push(storePath(await reader.string(MAX_PATH_STRING, "a reference"), `a reference of ${path}`).path);
    const deriver = await reader.string(MAX_PATH_STRING, "the deriver");
    if (deriver !== "") storePath(deriver, `the deriver of ${path}`);
    if ((await reader.u64("the signature marker")) === 1) await reader.string(MAX_SIGNATURE_STRING, "the legacy signature");
    const entry: ExportEntry = { path, hashPart, references, narOffset: nar.offset, narSize: nar.size, narHash: nar.hash };
    if (deriver !== "") entry.deriver = deriver;
    // A path exported twice is the same path (Nix imports it once).
    if (seen.has(path)) continue;
    seen.add(path);
    entries.push(entry);
    options.onPath?.(entry);
  }
  return entries;
}

/** The stream's bytes of one path's NAR, read again from the file. */
export function readExportNar(file: string, entry: Pick<ExportEntry, "narOffset" | "narSize">): Readable {
  return createReadStream(file, { start: entry.narOffset, end: entry.narOffset + entry.narSize - 1, highWaterMark: READ_CHUNK_BYTES });
}

/** A file read in large chunks, for scanning. */
export function readExportFile(file: string): Readable {
  return createReadStream(file, { highWaterMark: READ_CHUNK_BYTES });
}
