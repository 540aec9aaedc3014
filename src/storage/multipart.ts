// R2 multipart uploads of large NARs, with the bookkeeping the Workers R2 binding lacks.
//
// The binding can resume an upload only by (key, uploadId) and cannot list an upload's
// parts, yet a push killed halfway must be able to continue from another process or
// machine (a re-run CI job). So the Worker records both next to the upload (keys.ts):
//
//   multipart/<nar key>/upload.json    {"uploadId", "target", "size", "partSize",
//                                       "partCount", "verify", "started"}; written once
//                                       per upload (conditionally: the first start wins)
//   multipart/<nar key>/part/<00001>   empty object per received part, customMetadata
//                                       {"uploadId", "etag", "size"}; listed in one call
//   multipart/<nar key>/object         with MULTIPART_VERIFY=sha256, where R2 assembles
//                                       the parts; completion copies it to the NAR's key
//                                       through a put that R2 checks against the sha256
//
// An upload's parts are invisible until R2 completes it, so nothing under nar/ exists
// before completion and no narinfo can point at a half-uploaded NAR. The NAR's key is its
// sha256, so every honest client uploading to one key sends the same bytes: concurrent or
// successive pushes of the same NAR may share one upload. Races between them end in a
// clean 404/409 that makes the client start again, never in a stored object of the wrong
// size (completion only uses parts whose recorded size is right, and R2 refuses a part
// list whose etags it does not have).
//
// What local R2 (workerd 1.2026-11) throws, pinned by test/worker/multipart-storage.test.ts:
//   uploadPart / complete on an aborted or completed upload   "… does not exist. (10024)"
//   complete with an etag R2 does not have                     "… could not be found. (10025)"
//   complete with a non-last part under 5 MiB                  "… minimum allowed object size. (10011)"
//   abort / complete of an upload id R2 never issued           "internal error … (10001)"

import { fail } from "../errors.ts";
import { CONTENT_TYPE } from "../http/representation.ts";
import type { PartLayout } from "../upload/part-layout.ts";
import { headObject, storageUnavailable } from "./bucket.ts";
import { MULTIPART_PREFIX, multipartDir } from "./keys.ts";

/** What completion checks: part sizes only (free), or also the sha256 (a copy through R2). */
export type VerifyMode = "size" | "sha256";

/**
 * Age after which an unfinished upload counts as abandoned: the next start for its NAR
 * begins a new one, and abortStaleUploads aborts it. A day is far longer than any push
 * takes (a 10 GB NAR at 1 MB/s needs about three hours), and far shorter than R2's own
 * 7-day expiry of incomplete uploads, so a resumed upload never expires under R2 halfway.
 */
export const MULTIPART_MAX_AGE_MS = 24 * 3600 * 1000;

/**
 * Largest NAR completion can verify with MULTIPART_VERIFY=sha256: the verified copy is
 * one R2 put, and single puts are limited to 5 GiB less 5 MiB.
 */
export const MAX_VERIFIED_BYTES = 5 * 1024 ** 3 - 5 * 1024 ** 2;

/**
 * Stale uploads one abortStaleUploads call aborts. Each costs three R2 operations (read,
 * abort, delete), and the free plan allows 50 per invocation, listing included.
 */
export const STALE_UPLOADS_PER_PASS = 10;

/** R2 returns at most this many keys per list call, and deletes at most this many at once. */
const R2_PAGE = 1000;

/** An unfinished upload the Worker tracks. */
export interface TrackedUpload extends PartLayout {
  /** The NAR's key, `nar/<file>`. */
  narKey: string;
  uploadId: string;
  /** Where R2 assembles the parts: the NAR's key, or the staging key in sha256 mode. */
  target: string;
  verify: VerifyMode;
  /** Start time, ms since the epoch. */
  started: number;
}

/** A part R2 has received, as recorded. */
export interface RecordedPart {
  partNumber: number;
  size: number;
  etag: string;
}

const NO_SUCH_UPLOAD = /\(10024\)|upload does not exist/i;
const INVALID_PART = /\(10025\)|parts could not be found/i;
const PART_RULES = /\(10011\)|\(10048\)|minimum allowed object size|problem with the multipart upload/i;
const CHECKSUM_MISMATCH = /checksum|\(10037\)/i;
const LENGTH_MISMATCH = /FixedLengthStream|expected bytes|too many bytes|known length|disconnected|connection/i;

function stateKey(narKey: string): string {
  return `${multipartDir(narKey)}upload.json`;
}

function partKey(narKey: string, partNumber: number): string {
  return `${multipartDir(narKey)}part/${String(partNumber).padStart(5, "0")}`;
}

function stagingKey(narKey: string): string {
  return `${multipartDir(narKey)}object`;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function r2<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    return storageUnavailable(err);
  }
}

function parseState(narKey: string, text: string): TrackedUpload | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  const int = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x > 0;
  if (typeof o.uploadId !== "string" || o.uploadId === "" || typeof o.target !== "string") return null;
  if (!int(o.size) || !int(o.partSize) || !int(o.partCount) || !int(o.started)) return null;
  if (o.verify !== "size" && o.verify !== "sha256") return null;
  if (o.target !== narKey && o.target !== stagingKey(narKey)) return null;
  return { narKey, uploadId: o.uploadId, target: o.target, size: o.size, partSize: o.partSize, partCount: o.partCount, verify: o.verify, started: o.started };
}

/** The upload in progress for the NAR at `narKey`, or null. Unreadable bookkeeping is dropped. */
export async function readUpload(bucket: R2Bucket, narKey: string): Promise<TrackedUpload | null> {
  const obj = await r2(() => bucket.get(stateKey(narKey)));
  if (obj === null) return null;
  const upload = parseState(narKey, await r2(() => obj.text()));
  if (upload === null) {
    console.warn("dropping unreadable multipart bookkeeping", stateKey(narKey));
    await deleteDir(bucket, narKey);
  }
  return upload;
}

/**
 * Starts a new upload for `narKey`. When another start for the same NAR won the race to
 * record its upload, ours is aborted and theirs returned (it uploads the same bytes).
 */
export async function beginUpload(bucket: R2Bucket, narKey: string, layout: PartLayout, verify: VerifyMode, now: number): Promise<TrackedUpload> {
  const target = verify === "sha256" ? stagingKey(narKey) : narKey;
  const created = await r2(() => bucket.createMultipartUpload(target, { httpMetadata: { contentType: CONTENT_TYPE.nar } }));
  const upload: TrackedUpload = { narKey, uploadId: created.uploadId, target, verify, started: now, ...layout };
  const { narKey: _, ...state } = upload;
  const written = await r2(() =>
    bucket.put(stateKey(narKey), JSON.stringify(state), {
      httpMetadata: { contentType: CONTENT_TYPE.json },
      onlyIf: { etagDoesNotMatch: "*" },
    }),
  );
  if (written !== null) return upload;
  await abortQuietly(bucket, target, created.uploadId);
  const winner = await readUpload(bucket, narKey);
  if (winner === null) throw fail("conflict", "another upload of this NAR started and ended at the same moment; start again");
  return winner;
}

/** The parts recorded for `upload`, in part order. */
export async function recordedParts(bucket: R2Bucket, upload: TrackedUpload): Promise<RecordedPart[]> {
  const parts: RecordedPart[] = [];
  const prefix = `${multipartDir(upload.narKey)}part/`;
  let cursor: string | undefined;
  do {
    const page = await r2(() => bucket.list({ prefix, limit: R2_PAGE, include: ["customMetadata"], ...(cursor === undefined ? {} : { cursor }) }));
    for (const o of page.objects) {
      const m = o.customMetadata ?? {};
      const partNumber = Number(o.key.slice(prefix.length));
      const size = Number(m.size);
      if (m.uploadId !== upload.uploadId || typeof m.etag !== "string" || !Number.isSafeInteger(partNumber) || !Number.isSafeInteger(size)) continue;
      parts.push({ partNumber, size, etag: m.etag });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return parts.sort((a, b) => a.partNumber - b.partNumber);
}

/**
 * Streams a part of exactly `length` bytes into R2 and records it. A body shorter or
 * longer than `length` is refused (400) and not recorded.
 */
export async function receivePart(
  bucket: R2Bucket,
  upload: TrackedUpload,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  length: number,
): Promise<RecordedPart> {
  const fixed = new FixedLengthStream(length);
  let pipeFailed = false;
  const piping = (body ?? new Response(new Uint8Array(0)).body!).pipeTo(fixed.writable).catch(() => {
    pipeFailed = true;
  });
  let etag: string;
  try {
    etag = (await bucket.resumeMultipartUpload(upload.target, upload.uploadId).uploadPart(partNumber, fixed.readable)).etag;
  } catch (err) {
    const message = messageOf(err);
    if (NO_SUCH_UPLOAD.test(message)) {
      await forgetIfDead(bucket, upload);
      throw fail("not_found", "this multipart upload no longer exists (completed, aborted or expired); start the upload again");
    }
    if (pipeFailed || LENGTH_MISMATCH.test(message)) {
      throw fail("bad_request", `the part did not have exactly its Content-Length of ${length} bytes; it was not stored`);
    }
    return storageUnavailable(err);
  }
  await piping;
  await r2(() =>
    bucket.put(partKey(upload.narKey, partNumber), "", {
      customMetadata: { uploadId: upload.uploadId, etag, size: String(length) },
    }),
  );
  return { partNumber, size: length, etag };
}

/**
 * Completes `upload` from `parts` (checked by the caller: every part, right sizes) and
 * drops its bookkeeping. In sha256 mode the assembled object is copied to the NAR's key by
 * a put R2 verifies against `sha256Hex`; on a mismatch nothing is stored (400).
 * Returns the stored NAR's size.
 */
export async function finishUpload(bucket: R2Bucket, upload: TrackedUpload, parts: readonly RecordedPart[], sha256Hex: string): Promise<number> {
  let assembledSize: number;
  try {
    const obj = await bucket.resumeMultipartUpload(upload.target, upload.uploadId).complete(parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })));
    assembledSize = obj.size;
  } catch (err) {
    const message = messageOf(err);
    if (INVALID_PART.test(message)) {
      throw fail("conflict", "a part was uploaded again while the upload completed; abort the upload and start again");
    }
    if (PART_RULES.test(message)) {
      throw fail("bad_request", "R2 refused to assemble the parts (every part but the last must be the same size, of at least 5 MiB)");
    }
    if (!NO_SUCH_UPLOAD.test(message)) return storageUnavailable(err);
    // Completed by a concurrent or retried request (then the object is there), or gone.
    const done = await headObject(bucket, upload.target);
    if (done === null || done.size !== upload.size) {
      await forgetIfDead(bucket, upload);
      throw fail("not_found", "this multipart upload no longer exists (aborted or expired); start the upload again");
    }
    assembledSize = done.size;
  }
  if (assembledSize !== upload.size) {
    // Cannot happen with checked parts; never leave a NAR of the wrong size behind.
    await r2(() => bucket.delete(upload.target));
    await deleteDir(bucket, upload.narKey);
    throw fail("bad_request", `R2 assembled ${assembledSize} bytes instead of the declared ${upload.size}; nothing was stored, start again`);
  }
  if (upload.verify === "sha256") {
    const staged = await r2(() => bucket.get(upload.target));
    if (staged === null) throw fail("not_found", "this multipart upload no longer exists; start the upload again");
    try {
      // R2 reads the staged object's stream and checks its sha256 itself: no hashing here.
      await bucket.put(upload.narKey, staged.body, { sha256: sha256Hex, httpMetadata: { contentType: CONTENT_TYPE.nar } });
    } catch (err) {
      if (!CHECKSUM_MISMATCH.test(messageOf(err))) return storageUnavailable(err);
      await deleteDir(bucket, upload.narKey);
      throw fail("bad_request", "the uploaded parts do not hash to the sha256 in the NAR's name (MULTIPART_VERIFY=sha256); nothing was stored, upload it again");
    }
  }
  await deleteDir(bucket, upload.narKey);
  return upload.size;
}

/** Aborts `upload` (best effort: R2 forgets it after 7 days anyway) and drops its bookkeeping. */
export async function discardUpload(bucket: R2Bucket, upload: TrackedUpload): Promise<void> {
  await abortQuietly(bucket, upload.target, upload.uploadId);
  await deleteDir(bucket, upload.narKey);
}

export interface StaleUploadsPass {
  /** NAR keys whose abandoned uploads were aborted (or whose orphaned bookkeeping was dropped). */
  aborted: string[];
  /** More stale uploads remain: call again. */
  more: boolean;
}

/**
 * A cleanup pass for a cron: aborts uploads that started more than `maxAgeMs` ago and
 * drops their bookkeeping, at most `limit` per call (the free plan's 50 R2 operations per
 * invocation). Part records without an upload older than that go too.
 */
export async function abortStaleUploads(
  bucket: R2Bucket,
  opts: { now?: number; maxAgeMs?: number; limit?: number } = {},
): Promise<StaleUploadsPass> {
  const cutoff = (opts.now ?? Date.now()) - (opts.maxAgeMs ?? MULTIPART_MAX_AGE_MS);
  const limit = opts.limit ?? STALE_UPLOADS_PER_PASS;
  // Per NAR key: the state's upload time, and the newest bookkeeping object's.
  const dirs = new Map<string, { started?: number; newest: number }>();
  let cursor: string | undefined;
  do {
    const page = await r2(() => bucket.list({ prefix: MULTIPART_PREFIX, limit: R2_PAGE, ...(cursor === undefined ? {} : { cursor }) }));
    for (const o of page.objects) {
      const m = /^multipart\/(nar\/[^/]+)\/(upload\.json|part\/\d+|object)$/.exec(o.key);
      if (m === null) continue;
      const entry = dirs.get(m[1]!) ?? { newest: 0 };
      const time = o.uploaded.getTime();
      entry.newest = Math.max(entry.newest, time);
      if (m[2] === "upload.json") entry.started = time;
      dirs.set(m[1]!, entry);
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);

  const stale = [...dirs].filter(([, d]) => (d.started ?? d.newest) < cutoff).map(([narKey]) => narKey);
  const aborted: string[] = [];
  for (const narKey of stale.slice(0, limit)) {
    const upload = await readUpload(bucket, narKey);
    if (upload !== null) await discardUpload(bucket, upload);
    else await deleteDir(bucket, narKey);
    aborted.push(narKey);
  }
  return { aborted, more: stale.length > limit };
}

async function abortQuietly(bucket: R2Bucket, target: string, uploadId: string): Promise<void> {
  try {
    await bucket.resumeMultipartUpload(target, uploadId).abort();
  } catch (err) {
    // Already completed or aborted, or an R2 hiccup: R2 drops it after 7 days either way.
    console.warn("multipart abort failed", messageOf(err));
  }
}

/**
 * Drops the bookkeeping of an upload R2 no longer has, unless it was completed (the NAR
 * or the staged object exists: the completing request cleans up after itself).
 */
async function forgetIfDead(bucket: R2Bucket, upload: TrackedUpload): Promise<void> {
  if ((await headObject(bucket, upload.narKey)) !== null) return;
  if (upload.target !== upload.narKey && (await headObject(bucket, upload.target)) !== null) return;
  await deleteDir(bucket, upload.narKey);
}

/** Deletes every bookkeeping object of the NAR at `narKey`. */
async function deleteDir(bucket: R2Bucket, narKey: string): Promise<void> {
  const prefix = multipartDir(narKey);
  let cursor: string | undefined;
  do {
    const page = await r2(() => bucket.list({ prefix, limit: R2_PAGE, ...(cursor === undefined ? {} : { cursor }) }));
    if (page.objects.length > 0) await r2(() => bucket.delete(page.objects.map((o) => o.key)));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
}
