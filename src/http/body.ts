// Request body checks shared by the upload routes: a declared length within a limit,
// no transfer coding we cannot handle, and bounded reads of small documents (narinfos,
// batch queries), which are the only bodies the Worker ever holds in memory. A small
// document sent with a Content-Encoding is decoded with a bound on what it may expand to,
// so a few compressed bytes can never become more than the document's own limit.

import { brotliDecompressSync, zstdDecompressSync } from "node:zlib";
import { concatBytes } from "../nix/encoding.ts";
import { fail, type AppError } from "../errors.ts";

const CONTENT_LENGTH = /^\d{1,16}$/;

/** The request's Content-Length, or null when it has none; 400 when it is malformed. */
export function declaredLength(request: Request): number | null {
  const header = request.headers.get("Content-Length");
  if (header === null) return null;
  if (!CONTENT_LENGTH.test(header.trim())) throw fail("bad_request", "Content-Length is not a decimal number");
  return Number(header.trim());
}

/**
 * Content-Length of an upload that is streamed into R2: required (R2 needs a known length,
 * TOOLCHAIN G7: 411 otherwise) and at most `limit` (413 with `hint`).
 */
export function requireLength(request: Request, limit: number, hint: string): number {
  const length = declaredLength(request);
  if (length === null) {
    throw fail("length_required", "this upload needs a Content-Length header (chunked uploads cannot be stored)");
  }
  if (length > limit) throw fail("payload_too_large", `body of ${length} bytes is over the limit of ${limit} bytes; ${hint}`);
  return length;
}

/**
 * Content-Encoding values Nix 2.32+ sends with narinfo-compression, ls-compression and
 * log-compression: the names of its compression methods (showCompressionAlgo), whatever
 * their HTTP registration, plus HTTP's own deflate. `none` and `identity` mean no encoding
 * (Nix sends `Content-Encoding: none` for `…-compression=none`).
 */
export const UPLOAD_ENCODINGS = [
  "br", "bzip2", "compress", "deflate", "grzip", "gzip", "lrzip", "lz4", "lzip", "lzma", "lzop", "xz", "zstd",
] as const;
export type UploadEncoding = (typeof UPLOAD_ENCODINGS)[number];

/**
 * Encodings the Worker can decode with the runtime's native decompressors
 * (DecompressionStream for gzip and deflate, node:zlib for br and zstd): the ones an
 * upload that must be read (a narinfo) may use. The others would need a decoder written
 * in JavaScript, too slow for the 10 ms of CPU a request gets on larger bodies.
 */
export const DECODABLE_ENCODINGS = ["br", "deflate", "gzip", "zstd"] as const satisfies readonly UploadEncoding[];

/**
 * The body's Content-Encoding when it is one of `allowed`, undefined when the body is not
 * encoded; 415 otherwise. (Nix 2.32+ compresses narinfo, listing and log uploads when
 * asked to; a body we cannot read must not be stored as if it were plain.)
 */
export function contentEncoding<E extends string>(
  request: Request,
  allowed: readonly E[],
  what: string,
  hint = "unset narinfo-compression/ls-compression/log-compression",
): E | undefined {
  const header = request.headers.get("Content-Encoding");
  if (header === null) return undefined;
  const value = header.trim().toLowerCase();
  if (value === "" || value === "identity" || value === "none") return undefined;
  if ((allowed as readonly string[]).includes(value)) return value as E;
  const accepted = allowed.length === 0 ? "no Content-Encoding" : `no Content-Encoding or one of ${allowed.join(", ")}`;
  throw fail("unsupported_media_type", `${what} uploads take ${accepted}, not ${JSON.stringify(value)}; ${hint}`);
}

/**
 * Every chunk of `stream`, joined, or null past `limit` bytes; rejects with the stream's
 * error when it fails. The stream is cancelled when not read to its end. The one bounded
 * read loop, for request bodies, decoded ones and upstream answers (upstream/client.ts).
 */
export async function readBounded(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array | null> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return concatBytes(chunks);
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(value);
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
}

/** Every chunk of `stream`, joined; throws `tooLarge()` past `limit` bytes and `broken()` when the stream fails. */
async function readAllBounded(stream: ReadableStream<Uint8Array>, limit: number, tooLarge: () => AppError, broken: () => AppError): Promise<Uint8Array> {
  let bytes: Uint8Array | null;
  try {
    bytes = await readBounded(stream, limit);
  } catch {
    throw broken();
  }
  if (bytes === null) throw tooLarge();
  return bytes;
}

/** Reads a small body completely; 413 past `limit` bytes, 400 if it ends early. */
export async function readBody(request: Request, limit: number, what: string): Promise<Uint8Array> {
  const length = declaredLength(request);
  const tooLarge = () => fail("payload_too_large", `${what} is over the limit of ${limit} bytes`);
  if (length !== null && length > limit) throw tooLarge();
  if (request.body === null) return new Uint8Array(0);
  const bytes = await readAllBounded(request.body, limit, tooLarge, () => fail("bad_request", `${what} ended before its Content-Length`));
  if (length !== null && bytes.length !== length) throw fail("bad_request", `${what} is ${bytes.length} bytes but Content-Length says ${length}`);
  return bytes;
}

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Reads a small UTF-8 body; 400 when it is not valid UTF-8. */
export async function readText(request: Request, limit: number, what: string): Promise<string> {
  const bytes = await readBody(request, limit, what);
  try {
    return UTF8_STRICT.decode(bytes);
  } catch {
    throw fail("bad_request", `${what} is not valid UTF-8`);
  }
}

/**
 * Decodes a small encoded body to at most `limit` bytes: 413 past it (a compression bomb
 * stops there), 400 when the bytes are not valid in their encoding. Everything here is
 * the runtime's native code; a narinfo of a few KB decodes in microseconds.
 */
export async function decodeBounded(bytes: Uint8Array, encoding: (typeof DECODABLE_ENCODINGS)[number], limit: number, what: string): Promise<Uint8Array> {
  const tooLarge = () => fail("payload_too_large", `${what} decodes to more than the limit of ${limit} bytes`);
  const invalid = () => fail("bad_request", `${what} is not valid ${encoding} data`);
  if (encoding === "br" || encoding === "zstd") {
    let out: Uint8Array;
    try {
      // maxOutputLength makes the decoder stop (RangeError) instead of growing past it.
      const options = { maxOutputLength: limit + 1 };
      out = encoding === "br" ? brotliDecompressSync(bytes, options) : zstdDecompressSync(bytes, options);
    } catch (err) {
      if (err instanceof RangeError) throw tooLarge();
      throw invalid();
    }
    if (out.byteLength > limit) throw tooLarge();
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(encoding));
  return readAllBounded(stream, limit, tooLarge, invalid);
}

/**
 * Reads a small UTF-8 body that may come with one of the decodable encodings: the encoded
 * body is bounded by `limit`, and so is what it decodes to.
 */
export async function readDecodedText(
  request: Request,
  encoding: (typeof DECODABLE_ENCODINGS)[number] | undefined,
  limit: number,
  what: string,
): Promise<string> {
  if (encoding === undefined) return readText(request, limit, what);
  const bytes = await decodeBounded(await readBody(request, limit, what), encoding, limit, what);
  try {
    return UTF8_STRICT.decode(bytes);
  } catch {
    throw fail("bad_request", `${what} is not valid UTF-8`);
  }
}
