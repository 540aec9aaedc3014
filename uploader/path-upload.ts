// Uploading one store path: NAR to a temp file, checks, NAR upload, narinfo.
//
// `prepareNar` streams the path's NAR through two hashes and the compressor into a temp
// file in one pass (as Nix does with a tee): NarHash/NarSize of the uncompressed stream,
// FileHash/FileSize of the compressed one. Memory stays bounded for any NAR size, and the
// temp file gives the upload an exact Content-Length and a body that can be re-read on
// retry. Before anything leaves the machine, NarHash and NarSize are checked against the
// store database: a corrupted or modified store path is reported, never pushed.
//
// `uploadNar` PUTs `nar/<FileHash nix32>.nar<ext>` (Nix's naming), or, when the file is
// larger than the cache takes in one request, uploads it in parts from the temp file
// (multipart.ts). `prepareAndUploadNar` does both at once for a NAR that may be over the
// limit: once the compressed file is over it, each part leaves as soon as compression has
// written it into the temp file, so sending overlaps compressing. `narInfoFor` builds the
// narinfo with the core's formatter and signer; the caller (run-plan.ts) PUTs it only once
// the narinfos of all the path's references are in the cache.
import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform, Writable, pipeline as pipelineStreams, type Duplex } from "node:stream";
import { pipeline } from "node:stream/promises";
import { formatSha256, normaliseSha256 } from "../src/nix/hash.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { formatNarInfo, type NarInfo } from "../src/nix/narinfo.ts";
import { signNarInfo, withSignature, type SecretKey } from "../src/nix/signature.ts";
import { createCompressor, narFileExtension, type CompressionMethod } from "./compress.ts";
import { HttpError, NarMismatchError, TooLargeError } from "./errors.ts";
import { PartsWhileWriting, counting, needsParts, refusedForGood, uploadInParts, uploadLimits } from "./multipart.ts";
import { READ_CHUNK_BYTES, dumpPath } from "./nar-writer.ts";
import type { RemoteCache } from "./remote-cache.ts";
import type { StorePathInfo } from "./store.ts";

/**
 * NARs at least this large are first looked for with a HEAD: an interrupted push may
 * have uploaded the NAR but not its narinfo, and compression is deterministic, so the
 * same file name means the same bytes. Below this, one PUT costs about as much as a HEAD.
 */
export const HEAD_BEFORE_UPLOAD_BYTES = 1 << 20;

export interface UploadSettings {
  cache: RemoteCache;
  compression: CompressionMethod;
  /** Compression level; the method's default when undefined. */
  level?: number | undefined;
  /** Signs each narinfo (keeping the signatures the path already has) when given. */
  secretKey?: SecretKey | undefined;
  /** Where compressed NARs wait for upload. */
  tmpDir: string;
  /** Wraps the NAR and the upload streams, for progress (see progress.ts). */
  observe?: { nar?: () => Transform; sent?: () => Transform; detail?: (message: string) => void; log?: (message: string) => void } | undefined;
}

/** A NAR written, compressed and checked, waiting in a temp file. */
export interface PreparedNar {
  narHash: string;
  narSize: number;
  /** `sha256:<nix32>` of the compressed file. */
  fileHash: string;
  fileSize: number;
  /** Cache key, `nar/<nix32>.nar.zst`. */
  key: string;
  /** The temp file holding the compressed NAR. */
  file: string;
}

/**
 * Serialises, hashes and compresses `info.path` into a temp file and checks it against the
 * store's record. Throws NarMismatchError (and leaves no temp file) on a mismatch.
 * `narSource` gives the NAR bytes from elsewhere (`uploader import`: an export stream, or a
 * downloaded NAR being recompressed) instead of serialising the path from disk.
 */
export function prepareNar(info: StorePathInfo, settings: UploadSettings, narSource?: () => Readable | Promise<Readable>): Promise<PreparedNar> {
  return writePreparedNar(info, settings, narSource, null);
}

/**
 * The NAR written into its temp file; with `parts`, told after each write how much of the
 * file is on disk (PartsOnceOverLimit sends the parts written; the sink waits while the
 * parts in flight are at their bound).
 */
async function writePreparedNar(info: StorePathInfo, settings: UploadSettings, narSource: (() => Readable | Promise<Readable>) | undefined, parts: WrittenListener | null): Promise<PreparedNar> {
  const ext = narFileExtension(settings.compression);
  const file = join(settings.tmpDir, `${info.hashPart}.nar${ext}`);
  const nar = hashingCounter();
  const compressed = hashingCounter();
  const stages: Array<Duplex> = [nar.stream];
  if (settings.observe?.nar) stages.push(settings.observe.nar());
  stages.push(createCompressor(settings.compression, settings.level, info.narSize), compressed.stream);
  try {
    const source = narSource ? await narSource() : Readable.from(dumpPath(info.path), { objectMode: false });
    await pipeline([source, ...stages, parts ? await fileSendingParts(file, parts) : createWriteStream(file)]);
    const narHash = formatSha256(nar.digest());
    const expected = normaliseSha256(info.narHash);
    if (narHash !== expected || nar.size() !== info.narSize) {
      throw new NarMismatchError(info.path, { narHash: expected, narSize: info.narSize }, { narHash, narSize: nar.size() });
    }
    const fileDigest = compressed.digest();
    return {
      narHash,
      narSize: nar.size(),
      fileHash: formatSha256(fileDigest),
      fileSize: compressed.size(),
      key: `nar/${encodeNix32(fileDigest)}.nar${ext}`,
      file,
    };
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}

/** What the temp file's sink tells after each write: how many bytes are on disk. */
interface WrittenListener {
  written(size: number): Promise<void>;
}

/**
 * A sink writing the compressed NAR into `file` and telling `parts` how much of it is on
 * disk after each write, so parts leave while compression goes on.
 */
async function fileSendingParts(file: string, parts: WrittenListener): Promise<Writable> {
  const fh = await open(file, "w");
  let size = 0;
  return new Writable({
    highWaterMark: READ_CHUNK_BYTES,
    write(chunk: Buffer, _encoding, callback) {
      fh.write(chunk)
        .then(async ({ bytesWritten }) => {
          size += bytesWritten;
          await parts.written(size);
        })
        .then(() => callback(), callback);
    },
    destroy(err, callback) {
      fh.close().then(() => callback(err), (closeErr: unknown) => callback(err ?? (closeErr as Error)));
    },
  });
}

/**
 * Starts the upload named at completion once the compressed file is over the request
 * limit, and from then on passes on what is written. Until then the NAR may still fit in
 * one PUT, which costs the cache one verified write where parts cost the parts, then the
 * completion's verified copy of the whole file.
 */
class PartsOnceOverLimit implements WrittenListener {
  parts: PartsWhileWriting | null = null;
  readonly #limit: number;
  readonly #start: () => Promise<PartsWhileWriting | null>;
  #asked = false;

  constructor(limit: number, start: () => Promise<PartsWhileWriting | null>) {
    this.#limit = limit;
    this.#start = start;
  }

  async written(size: number): Promise<void> {
    if (!this.#asked && size > this.#limit) {
      this.#asked = true;
      this.parts = await this.#start();
    }
    await this.parts?.written(size);
  }
}

/**
 * A path's NAR prepared and uploaded, for NARs that may be over the cache's request limit:
 * once the compressed file is over it, its parts go as they are written (an upload named
 * at completion, multipart.ts), so sending overlaps compressing instead of following it.
 * A file that stays within the limit, or a cache without such uploads, is uploaded once
 * written, as uploadNar does. Returns null, having done nothing, for a NAR that fits in
 * one request whatever its compression: then prepareNar and uploadNar do it in turn. The
 * temp file is left for the caller to remove, as prepareNar leaves it.
 *
 * Without a name, the cache cannot be asked first whether it has the NAR already (an
 * interrupted push that stored the NAR but not its narinfo): such a NAR is sent again and
 * its completion finds it stored.
 */
export async function prepareAndUploadNar(info: StorePathInfo, settings: UploadSettings): Promise<{ prepared: PreparedNar; sentBytes: number } | null> {
  const http = settings.cache.http;
  const limits = await uploadLimits(http);
  if (limits === null || !needsParts(info.narSize, limits)) return null;
  const ext = narFileExtension(settings.compression);
  const observe = { sent: settings.observe?.sent, detail: settings.observe?.detail, log: settings.observe?.log };
  // Names the bytes: the same path, NAR and compression make the same file, so a re-run
  // resumes the parts it sent.
  const name = `${info.hashPart}-${normaliseSha256(info.narHash)}-${settings.compression}${settings.level ?? ""}`;
  const overLimit = new PartsOnceOverLimit(limits.maxRequestBytes, () => PartsWhileWriting.start(http, name, join(settings.tmpDir, `${info.hashPart}.nar${ext}`), observe));
  let prepared: PreparedNar;
  try {
    prepared = await writePreparedNar(info, settings, undefined, overLimit);
  } catch (err) {
    // A NAR that is not the store's record must not be stored: drop its parts. A part
    // refused for good is dropped too; parts of a push that lost the cache are kept for
    // a re-run.
    if (overLimit.parts && (err instanceof NarMismatchError || refusedForGood(err))) await overLimit.parts.abort();
    throw err;
  }
  const parts = overLimit.parts;
  try {
    if (parts === null) return { prepared, sentBytes: await uploadNar(prepared, settings) };
    try {
      return { prepared, sentBytes: await parts.finish(prepared.fileSize, prepared.key.slice("nar/".length)) };
    } catch (err) {
      // Parts resumed from an earlier run that were not of these bytes (another compressor
      // version) fail the completion's check: start afresh from the finished file.
      if (!(err instanceof HttpError) || !refusedForGood(err)) throw err;
      await parts.abort();
      observe.detail?.(`${prepared.key}: the upload named at completion was refused (${err.message}); sending the file in parts`);
      return { prepared, sentBytes: parts.sent + (await uploadInParts(http, prepared.key, prepared.file, prepared.fileSize, observe)) };
    }
  } catch (err) {
    await rm(prepared.file, { force: true });
    throw err;
  }
}

/**
 * Uploads the prepared NAR, unless it is large and the cache already has it: in one PUT,
 * or in parts when it is over the cache's request limit (asked once per push). Returns the
 * request body bytes sent, retries included (0: nothing needed sending).
 */
export async function uploadNar(prepared: PreparedNar, settings: UploadSettings): Promise<number> {
  if (prepared.fileSize >= HEAD_BEFORE_UPLOAD_BYTES && (await settings.cache.has(prepared.key))) {
    (settings.observe?.log ?? settings.observe?.detail)?.(`${prepared.key}: already in the cache (an earlier push sent it), not sent again`);
    return 0;
  }
  const http = settings.cache.http;
  const limits = prepared.fileSize >= HEAD_BEFORE_UPLOAD_BYTES ? await uploadLimits(http) : null;
  const observe = { sent: settings.observe?.sent, detail: settings.observe?.detail, log: settings.observe?.log };
  if (needsParts(prepared.fileSize, limits)) return uploadInParts(http, prepared.key, prepared.file, prepared.fileSize, observe);
  let sent = 0;
  try {
    await settings.cache.putNar(prepared.key, prepared.fileSize, () => {
      const body = counting(createReadStream(prepared.file, { highWaterMark: READ_CHUNK_BYTES }), (n) => (sent += n));
      // The callback form returns the last stream and destroys both on error, so a read
      // failure reaches the HTTP request instead of stalling it.
      return observe.sent ? pipelineStreams(body, observe.sent(), () => {}) : body;
    });
  } catch (err) {
    // Something in front of the Worker (Cloudflare's own request limit, which may be
    // smaller than the Worker's setting) refused the body: parts always fit.
    if (!(err instanceof TooLargeError) || limits === null || !needsParts(prepared.fileSize, { maxRequestBytes: 0 })) throw err;
    settings.observe?.detail?.(`${prepared.key}: refused as one request (${err.message}); sending it in parts`);
    return sent + (await uploadInParts(http, prepared.key, prepared.file, prepared.fileSize, observe));
  }
  return sent;
}

/** The narinfo text for an uploaded NAR: the store's metadata, plus the user's signature. */
export async function narInfoFor(info: StorePathInfo, prepared: PreparedNar, settings: UploadSettings): Promise<string> {
  let narinfo: NarInfo = {
    storePath: info.path,
    url: prepared.key,
    compression: settings.compression,
    fileHash: prepared.fileHash,
    fileSize: prepared.fileSize,
    narHash: prepared.narHash,
    narSize: prepared.narSize,
    references: info.references.map(baseName).sort(),
    sigs: [...info.sigs],
    extra: [],
  };
  if (info.deriver) narinfo.deriver = baseName(info.deriver);
  if (info.ca) narinfo.ca = info.ca;
  if (settings.secretKey) narinfo = withSignature(narinfo, await signNarInfo(narinfo, settings.secretKey));
  return formatNarInfo(narinfo);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** A pass-through stream that hashes (sha256) and counts what flows through it. */
export function hashingCounter(): { stream: Transform; digest: () => Uint8Array; size: () => number } {
  const hash: Hash = createHash("sha256");
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
  });
  return { stream, digest: () => new Uint8Array(hash.digest()), size: () => size };
}
