// The only code that touches the R2 binding. Reads return null for absent objects;
// writes stream request bodies straight into R2 and turn R2's verdicts on bad bodies
// into 400s. Any other R2 failure becomes `storage_unavailable` (503), never an
// exception text in a response.
//
// What local R2 (workerd 1.2026-11) throws, pinned by test/worker/storage.test.ts:
//   sha256 mismatch     Error "put: The SHA-256 checksum you specified did not match what we
//                       received. … (10037)"; nothing is stored
//   body shorter than   TypeError "FixedLengthStream did not see all expected bytes before
//   its length          close()"; nothing is stored
//   body longer         TypeError "Attempt to write too many bytes through a FixedLengthStream.",
//                       yet the first `length` bytes may already be committed (R2 reads exactly
//                       the announced length); putStream deletes them when the key was absent
//   unknown length      TypeError "Provided readable stream must have a known length …"
// Under `wrangler dev`, a client that disconnects mid-body never reaches the Worker: the
// dev proxy answers 500 "Network connection lost" itself; nothing is stored either.

import { fail } from "../errors.ts";
import { mapConcurrent } from "../concurrency.ts";
import { storedCacheControlOf } from "../http/representation.ts";
import { classifyKey } from "./keys.ts";

/**
 * Parallel R2 operations per request. Workers allow 6 simultaneous open connections per
 * request and R2 calls count toward them; more would only queue.
 */
export const R2_CONCURRENCY = 6;

/**
 * Turns an R2 failure into the one `storage_unavailable` error (503 with Retry-After), so
 * clients retry instead of treating the cache as broken; the cause goes to the log only.
 */
export function storageUnavailable(err: unknown, what: "R2" | "D1" = "R2"): never {
  console.error(`${what} operation failed`, err);
  throw fail("storage_unavailable", "the storage backend failed; try again shortly");
}

/**
 * The HTTP headers stored with an object (R2 httpMetadata): its Content-Type, any
 * Content-Encoding, and for the layout's objects (keys.ts) their public Cache-Control, so
 * the bucket read directly on its public domain serves what the Worker would.
 */
export function httpMetadataFor(key: string, contentType: string, contentEncoding?: string): R2HTTPMetadata {
  const kind = classifyKey(key)?.kind;
  return {
    contentType,
    ...(contentEncoding === undefined ? {} : { contentEncoding }),
    ...(kind === undefined ? {} : { cacheControl: storedCacheControlOf(kind) }),
  };
}

/** Metadata of an object, or null when absent. */
export async function headObject(bucket: R2Bucket, key: string): Promise<R2Object | null> {
  try {
    return await bucket.head(key);
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** An object with its body stream (or a byte range of it), or null when absent. */
export async function getObject(bucket: R2Bucket, key: string, range?: { offset: number; length: number }): Promise<R2ObjectBody | null> {
  try {
    return await bucket.get(key, range === undefined ? undefined : { range });
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** For each key, whether an object exists; at most R2_CONCURRENCY requests at a time. */
export async function existsMany(bucket: R2Bucket, keys: readonly string[]): Promise<boolean[]> {
  return mapConcurrent(keys, R2_CONCURRENCY, async (key) => (await headObject(bucket, key)) !== null);
}

export interface StreamPut {
  /** Exact number of bytes the body must have (the request's Content-Length). */
  length: number;
  /** Expected SHA-256 as 64 hex digits; R2 refuses to store anything else. */
  sha256Hex?: string;
  contentType: string;
  contentEncoding?: string;
  /**
   * The caller checked that the key was absent: on a length failure, delete whatever R2 may
   * have committed. (Over HTTP a body cannot run past its Content-Length, so this only
   * matters for in-process callers; the bytes R2 got were the announced ones, verified
   * against sha256Hex when given, but a refused upload must leave nothing behind.)
   */
  absentBefore?: boolean;
  /** Store only while the key is absent (R2 onlyIf); false when it was there meanwhile. */
  onlyIfAbsent?: boolean;
}

const LENGTH_MISMATCH = /FixedLengthStream|expected bytes|too many bytes|known length|disconnected|connection/i;
const CHECKSUM_MISMATCH = /checksum|\(10037\)/i;

/**
 * Streams `body` into R2 under `key` without buffering it. The body goes through a
 * FixedLengthStream of `length` bytes: R2 needs a known length (TOOLCHAIN G7), and a body
 * that is shorter or longer than announced fails instead of being stored truncated.
 * With `sha256Hex`, R2 verifies the digest and stores nothing on a mismatch.
 */
export async function putStream(bucket: R2Bucket, key: string, body: ReadableStream<Uint8Array> | null, put: StreamPut): Promise<boolean> {
  const fixed = new FixedLengthStream(put.length);
  let pipeFailed = false;
  const piping = (body ?? new Response(new Uint8Array(0)).body!).pipeTo(fixed.writable).catch(() => {
    pipeFailed = true;
  });
  let stored: R2Object | null;
  try {
    stored = await bucket.put(key, fixed.readable, {
      ...(put.sha256Hex === undefined ? {} : { sha256: put.sha256Hex }),
      ...(put.onlyIfAbsent === true ? { onlyIf: ONLY_IF_ABSENT } : {}),
      httpMetadata: httpMetadataFor(key, put.contentType, put.contentEncoding),
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (CHECKSUM_MISMATCH.test(message)) {
      throw fail("bad_request", "the body's sha256 does not match the hash in its name; nothing was stored");
    }
    if (pipeFailed || LENGTH_MISMATCH.test(message)) {
      if (put.absentBefore === true) await bucket.delete(key).catch(() => {});
      throw fail("bad_request", `the body did not have exactly its Content-Length of ${put.length} bytes; nothing was stored`);
    }
    return storageUnavailable(err);
  }
  // A put refused by its condition need not have read the body: do not wait on the pipe.
  if (stored === null) return false;
  await piping;
  return true;
}

/** What a conditional write requires of its key: absent, or unchanged since it was read. */
export interface PutCondition {
  ifAbsent?: boolean;
  /** The etag the key had when it was read. */
  ifEtag?: string;
}

/** R2's condition for "only while the key is absent": no etag matches "*". */
export const ONLY_IF_ABSENT: R2Conditional = { etagDoesNotMatch: "*" };

/**
 * Writes an object, conditionally when `condition` asks: the stored object, or null when
 * the condition failed (someone else wrote the key meanwhile) and nothing changed. The one
 * place a PutCondition becomes R2's onlyIf; R2 failures become `storage_unavailable`.
 */
export async function putObject(
  bucket: R2Bucket,
  key: string,
  body: Parameters<R2Bucket["put"]>[1],
  options: R2PutOptions = {},
  condition: PutCondition = {},
): Promise<R2Object | null> {
  const onlyIf: R2Conditional | undefined = condition.ifEtag !== undefined ? { etagMatches: condition.ifEtag } : condition.ifAbsent === true ? ONLY_IF_ABSENT : undefined;
  try {
    return await bucket.put(key, body, onlyIf === undefined ? options : { ...options, onlyIf });
  } catch (err) {
    return storageUnavailable(err);
  }
}
