// How a large NAR is cut into the parts of an R2 multipart upload, and the rules a part
// and a completed upload must follow. Pure: no R2, no HTTP; routes/multipart.ts applies it.
//
//   size      the whole file's length (FileSize), declared when the upload starts
//   partSize  every part but the last has exactly this many bytes
//   parts     n = ceil(size / partSize), numbered 1..n; part n has size - (n-1)·partSize
//             bytes (1..partSize)
//
// R2's rules (PEERS §4.2): parts of 5 MiB to 5 GiB, all the same size but the last, which
// is not larger; at most 10,000 parts. Each part is one request to the Worker, so a part
// is also at most the cache's per-request body limit (MAX_NAR_UPLOAD_BYTES).

import { fail } from "../errors.ts";

/** R2's smallest part (except the last): 5 MiB. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
/** R2's largest part: 5 GiB. */
export const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024;
/** R2's most parts per upload. */
export const MAX_PARTS = 10_000;
/** R2's largest object: 5 TiB less 5 GiB ("~4.995 TiB"). */
export const MAX_OBJECT_BYTES = 5 * 1024 ** 4 - 5 * 1024 ** 3;
/**
 * Part size when the client does not ask for one (capped by the request limit): 64 MiB is
 * well under the free plan's 100 MB per request whether that means 10^8 or 100 MiB, a
 * failed part costs at most that much to send again, and a 1 GiB NAR takes 16 requests
 * out of the free plan's 100,000 per day.
 */
export const DEFAULT_PART_BYTES = 64 * 1024 * 1024;
/** Automatic part sizes are rounded up to whole MiB (easier to read in logs). */
const PART_GRANULE = 1024 * 1024;

export interface PartLayout {
  size: number;
  partSize: number;
  partCount: number;
}

/** Number of parts of `size` bytes cut into `partSize` pieces. */
export function partCountOf(size: number, partSize: number): number {
  return Math.ceil(size / partSize);
}

/** The layout of a new upload; `requested` is the client's part size, if it asked for one. Throws AppError. */
export function layoutFor(size: number, requestLimit: number, requested?: number): PartLayout {
  if (!Number.isSafeInteger(size) || size < 1) throw fail("bad_request", "size must be a positive whole number of bytes");
  if (size > MAX_OBJECT_BYTES) throw fail("payload_too_large", `a NAR of ${size} bytes is over R2's object limit of ${MAX_OBJECT_BYTES} bytes`);
  const ceiling = Math.min(requestLimit, MAX_PART_BYTES);
  if (requested !== undefined) {
    if (!Number.isSafeInteger(requested) || requested < 1) throw fail("bad_request", "partSize must be a positive whole number of bytes");
    if (requested > ceiling) {
      throw fail("payload_too_large", `partSize ${requested} is over this cache's limit of ${ceiling} bytes per request`);
    }
    const count = partCountOf(size, requested);
    if (count > 1 && requested < MIN_PART_BYTES) throw fail("bad_request", `partSize must be at least ${MIN_PART_BYTES} bytes (R2's minimum part size)`);
    if (count > MAX_PARTS) throw fail("bad_request", `partSize ${requested} makes ${count} parts; R2 allows at most ${MAX_PARTS}`);
    return { size, partSize: requested, partCount: count };
  }
  if (size <= ceiling) return { size, partSize: size, partCount: 1 };
  if (ceiling < MIN_PART_BYTES) {
    throw fail(
      "payload_too_large",
      `this cache takes at most ${requestLimit} bytes per request (MAX_NAR_UPLOAD_BYTES), less than R2's minimum part size of ${MIN_PART_BYTES} bytes, so it cannot store a NAR of ${size} bytes`,
    );
  }
  const spread = Math.ceil(size / MAX_PARTS / PART_GRANULE) * PART_GRANULE;
  const partSize = Math.min(ceiling, Math.max(MIN_PART_BYTES, Math.min(DEFAULT_PART_BYTES, ceiling), spread));
  const partCount = partCountOf(size, partSize);
  if (partCount > MAX_PARTS) {
    throw fail("payload_too_large", `a NAR of ${size} bytes needs more than ${MAX_PARTS} parts of at most ${ceiling} bytes (this cache's request limit)`);
  }
  return { size, partSize, partCount };
}

/** Bytes part `partNumber` (1-based) must have; null when there is no such part. */
export function expectedPartSize(layout: PartLayout, partNumber: number): number | null {
  if (!Number.isSafeInteger(partNumber) || partNumber < 1 || partNumber > layout.partCount) return null;
  return partNumber < layout.partCount ? layout.partSize : layout.size - (layout.partCount - 1) * layout.partSize;
}

/** A part R2 has received, as the Worker recorded it. */
export interface ReceivedPart {
  partNumber: number;
  size: number;
}

/**
 * The parts that complete `layout`, in order, or an AppError (422) naming what is missing:
 * every part number once, each of its expected size, adding up to the declared size.
 */
export function checkComplete<P extends ReceivedPart>(layout: PartLayout, received: readonly P[]): P[] {
  const byNumber = new Map<number, P>();
  for (const p of received) {
    if (expectedPartSize(layout, p.partNumber) === p.size) byNumber.set(p.partNumber, p);
  }
  const missing: number[] = [];
  const parts: P[] = [];
  let total = 0;
  for (let n = 1; n <= layout.partCount; n++) {
    const p = byNumber.get(n);
    if (p === undefined) missing.push(n);
    else {
      parts.push(p);
      total += p.size;
    }
  }
  if (missing.length > 0) {
    const shown = missing.length > 10 ? `${missing.slice(0, 10).join(", ")} and ${missing.length - 10} more` : missing.join(", ");
    throw fail("unprocessable", `the upload is not complete: part${missing.length === 1 ? "" : "s"} ${shown} of ${layout.partCount} not received; upload ${missing.length === 1 ? "it" : "them"} first`);
  }
  // Follows from the sizes checked above; kept as the invariant completion relies on.
  if (total !== layout.size) throw fail("unprocessable", `the parts add up to ${total} bytes, not the declared ${layout.size}`);
  return parts;
}
