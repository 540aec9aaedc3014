// Request body checks shared by the upload routes: a declared length within a limit,
// no transfer coding we cannot handle, and bounded reads of small documents (narinfos,
// batch queries), which are the only bodies the Worker ever holds in memory.

import { concatBytes } from "../nix/encoding.ts";
import { AppError, fail } from "../errors.ts";

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
 * The body's Content-Encoding when it is one of `allowed`, undefined when the body is not
 * encoded; 415 otherwise. (Nix 2.32+ compresses narinfo, listing and log uploads when
 * asked to; a body we cannot read must not be stored as if it were plain.)
 */
export function contentEncoding(request: Request, allowed: readonly string[], what: string): string | undefined {
  const header = request.headers.get("Content-Encoding");
  if (header === null) return undefined;
  const value = header.trim().toLowerCase();
  if (value === "" || value === "identity") return undefined;
  if (allowed.includes(value)) return value;
  const accepted = allowed.length === 0 ? "no Content-Encoding" : `no Content-Encoding or one of ${allowed.join(", ")}`;
  throw fail("unsupported_media_type", `${what} uploads take ${accepted}, not ${JSON.stringify(value)}; unset narinfo-compression/ls-compression/log-compression`);
}

/** Reads a small body completely; 413 past `limit` bytes, 400 if it ends early. */
export async function readBody(request: Request, limit: number, what: string): Promise<Uint8Array> {
  const length = declaredLength(request);
  const tooLarge = () => fail("payload_too_large", `${what} is over the limit of ${limit} bytes`);
  if (length !== null && length > limit) throw tooLarge();
  if (request.body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) throw tooLarge();
      chunks.push(value);
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    if (err instanceof AppError) throw err;
    throw fail("bad_request", `${what} ended before its Content-Length`);
  }
  if (length !== null && total !== length) throw fail("bad_request", `${what} is ${total} bytes but Content-Length says ${length}`);
  return concatBytes(chunks);
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
