// R2 multipart uploads of large NARs: the bookkeeping the Workers R2 binding lacks, who owns
// an upload, how many a write token may have, and a completion that can only ever store
// bytes that hash to the NAR's name, and never over a stored NAR.
//
// The binding can resume an upload only by (key, uploadId) and cannot list an upload's
// parts, yet a push killed halfway must be able to continue from another process or
// machine (a re-run CI job). So the Worker records both next to the upload (keys.ts):
//
//   multipart/uploads/<writer>~<slot>   the upload record: empty body, customMetadata
//                                       {"nar", "uploadId", "size", "partSize", "partCount",
//                                       "started"}; written once, only if the slot is free
//   multipart/objects/<writer>~<slot>/part/<00001>   empty object per received part,
//                                       customMetadata {"uploadId", "etag", "size"}
//   multipart/objects/<writer>~<slot>/assembled      the R2 upload's own key: where R2
//                                       assembles the parts when the upload completes
//
// Integrity. Several write tokens share the cache and none may change what another stored,
// so parts are never assembled at the NAR's key: R2 assembles them at `assembled`, then
// completion copies that object to nar/<file> with one put that R2 checks against the
// sha256 in the name and that only succeeds while the key is absent (onlyIf
// etagDoesNotMatch "*"). Bytes that do not hash to the name are refused (400, nothing
// stored); if the NAR got stored meanwhile, by anyone, the put changes nothing and the
// upload answers "stored". Either way the assembled object and all bookkeeping go.
// Verification makes a NAR one R2 put, hence MAX_VERIFIED_BYTES.
//
// Ownership and bounds. Each write token (its secret's name, the <writer>) has
// MAX_UPLOADS_PER_WRITER slots; an upload lives in one, so another token can neither see
// nor touch it, nor block it: two tokens uploading one NAR each have their own upload and
// whichever completes first with the right bytes stores it. A slot is claimed by writing
// its record only if absent, so no race ever exceeds the bound. Clients name an upload by
// the handle `<writer>~<slot>:<R2 upload id>` (its "uploadId" in the API). Per cache the
// bookkeeping is at most tokens × MAX_UPLOADS_PER_WRITER records, each with at most
// partCount part records (part numbers 1..partCount only) and one assembled object.
//
// Cleanup. Uploads started more than MULTIPART_MAX_AGE_MS ago belong to the cron
// (abortStaleUploads): each pass lists every record in one call, aborts the oldest stale
// uploads and bulk-deletes their objects, within CLEANUP_OPERATIONS_PER_PASS R2 calls; then
// it removes objects no record accounts for (a part recorded after its upload ended, an
// older layout's bookkeeping). A request never frees another upload's slot but its own, so
// a slot is reused only after its previous upload's objects are gone (record deleted last).
//
// What local R2 (workerd 1.2026-11) throws, pinned by test/worker/multipart-storage.test.ts:
//   uploadPart / complete on an aborted or completed upload   "… does not exist. (10024)"
//   complete with an etag R2 does not have                     "… could not be found. (10025)"
//   complete with a non-last part under 5 MiB                  "… minimum allowed object size. (10011)"
//   abort / complete of an upload id R2 never issued           "internal error … (10001)"
//   put with a sha256 the body does not have                   "… checksum … did not match … (10037)"
//   put with onlyIf etagDoesNotMatch "*" on a stored key       returns null, stores nothing

import { fail } from "../errors.ts";
import { CONTENT_TYPE } from "../http/representation.ts";
import { checkComplete, expectedPartSize, partCountOf, type PartLayout } from "../upload/part-layout.ts";
import { headObject, httpMetadataFor, storageUnavailable } from "./bucket.ts";
import {
  MULTIPART_OBJECTS_PREFIX,
  MULTIPART_PREFIX,
  MULTIPART_UPLOADS_PREFIX,
  multipartAssemblyKey,
  multipartDir,
  multipartPartKey,
  multipartUploadKey,
  narKey,
  parseNarFileName,
  parseUploadSlotName,
  uploadSlotName,
  writerSlotPrefix,
  type UploadSlot,
} from "./keys.ts";

/** What completion checks: the sha256 of the assembled NAR, by R2 (the only mode left). */
export type VerifyMode = "sha256";

/**
 * Age after which an unfinished upload counts as abandoned: a start for its NAR begins a
 * new one, and abortStaleUploads aborts it. A day is far longer than any push takes (a
 * 5 GB NAR at 1 MB/s needs about an hour and a half), and far shorter than R2's own 7-day
 * expiry of incomplete uploads, so a resumed upload never expires under R2 halfway.
 */
export const MULTIPART_MAX_AGE_MS = 24 * 3600 * 1000;

/**
 * Largest NAR a multipart upload takes: completion copies the assembled NAR to its name
 * through one R2 put (that is what lets R2 check its sha256), and single puts are limited
 * to 5 GiB less 5 MiB.
 */
export const MAX_VERIFIED_BYTES = 5 * 1024 ** 3 - 5 * 1024 ** 2;

/**
 * Uploads in progress one write token may have. The uploader sends at most one NAR per
 * job and takes at most 64 jobs (`push --jobs`), so one push never runs out, and several
 * pushes of one pipeline at the default 4 jobs fit many times over; a token that leaks
 * cannot grow the bookkeeping beyond 64 uploads of at most ~1,000 small objects each.
 */
export const MAX_UPLOADS_PER_WRITER = 64;

/**
 * R2 calls one cleanup pass may make: the free plan allows 50 subrequests per invocation
 * and every R2 call is one; five spare, so that nothing the pass does ever meets the limit
 * (the cron tick may also check the nix-cache-info object first: CACHE_INFO_CHECK_OPERATIONS).
 * Aborts cost one call each and deletes one per 1,000 keys, so a pass clears about 40
 * abandoned uploads.
 */
export const CLEANUP_OPERATIONS_PER_PASS = 45;

/**
 * How many times a start retries when another start of the same token took the free slot
 * it chose: each retry lists the slots again, and only a token racing itself loses.
 */
const MAX_START_ATTEMPTS = 3;

/** R2 returns at most this many keys per list call, and deletes at most this many at once. */
const R2_PAGE = 1000;

/** An unfinished upload the Worker tracks, in its writer's slot. */
export interface TrackedUpload extends PartLayout, UploadSlot {
  /** The NAR's file name, `<filehash52>.nar[.ext]`; it is stored at `nar/<file>`. */
  nar: string;
  /** R2's id of the multipart upload at the slot's `assembled` key. */
  uploadId: string;
  /** Start time, ms since the epoch. */
  started: number;
}

/** What a client passes back to name an upload: its slot and R2's upload id. */
export interface UploadHandle extends UploadSlot {
  uploadId: string;
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

/** The handle clients name `upload` by: `<writer>~<slot>:<R2 upload id>`. */
export function handleOf(upload: TrackedUpload): string {
  return `${uploadSlotName(upload)}:${upload.uploadId}`;
}

/** Parses a handle; null unless it has handleOf's shape with a slot that can exist. */
export function parseHandle(text: string): UploadHandle | null {
  const colon = text.indexOf(":");
  if (colon < 0) return null;
  const slot = parseUploadSlotName(text.slice(0, colon));
  const uploadId = text.slice(colon + 1);
  if (slot === null || slot.slot >= MAX_UPLOADS_PER_WRITER || !/^[\x21-\x7e]+$/.test(uploadId)) return null;
  return { ...slot, uploadId };
}

function metadataOf(u: TrackedUpload): Record<string, string> {
  return {
    nar: u.nar,
    uploadId: u.uploadId,
    size: String(u.size),
    partSize: String(u.partSize),
    partCount: String(u.partCount),
    started: String(u.started),
  };
}

/** The upload a record's customMetadata describes; null when it is not one handleOf could name. */
function parseRecord(slot: UploadSlot, m: Record<string, string> | undefined): TrackedUpload | null {
  if (m === undefined) return null;
  const int = (x: string | undefined): number | null => (x !== undefined && /^[1-9][0-9]{0,15}$/.test(x) && Number.isSafeInteger(Number(x)) ? Number(x) : null);
  const size = int(m.size);
  const partSize = int(m.partSize);
  const partCount = int(m.partCount);
  const started = int(m.started);
  const { nar, uploadId } = m;
  if (size === null || partSize === null || partCount === null || started === null) return null;
  if (nar === undefined || parseNarFileName(nar) === null || uploadId === undefined || uploadId === "") return null;
  if (partCount !== partCountOf(size, partSize)) return null;
  return { ...slot, nar, uploadId, size, partSize, partCount, started };
}

/** The upload in the slot a handle names, or null when the slot is free (or its record unreadable). */
export async function readUpload(bucket: R2Bucket, slot: UploadSlot): Promise<TrackedUpload | null> {
  const obj = await headObject(bucket, multipartUploadKey(slot));
  return obj === null ? null : parseRecord({ writer: slot.writer, slot: slot.slot }, obj.customMetadata);
}

/** Every upload record of `writer`: the uploads, and the slots taken (unreadable records too). */
async function writerUploads(bucket: R2Bucket, writer: string): Promise<{ uploads: TrackedUpload[]; taken: Set<number> }> {
  const prefix = MULTIPART_UPLOADS_PREFIX + writerSlotPrefix(writer);
  const uploads: TrackedUpload[] = [];
  const taken = new Set<number>();
  let cursor: string | undefined;
  do {
    const page = await r2(() => bucket.list({ prefix, limit: R2_PAGE, include: ["customMetadata"], ...(cursor === undefined ? {} : { cursor }) }));
    for (const o of page.objects) {
      const slot = parseUploadSlotName(o.key.slice(MULTIPART_UPLOADS_PREFIX.length));
      if (slot === null || slot.writer !== writer) continue;
      taken.add(slot.slot);
      const upload = parseRecord(slot, o.customMetadata);
      if (upload !== null) uploads.push(upload);
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return { uploads, taken };
}

export interface StartedUpload {
  upload: TrackedUpload;
  /** An upload already in progress, continued. */
  resumed: boolean;
  /** The parts it has received (none for a new one). */
  parts: RecordedPart[];
}

/**
 * Starts an upload of the NAR `nar` for `writer`, or resumes the writer's upload of it that
 * `resumable` accepts. The writer's other uploads of this NAR that cannot continue (another
 * size or part size) are discarded; ones older than MULTIPART_MAX_AGE_MS are left to the
 * cleanup. A new upload takes the writer's lowest free slot: 429 when there is none.
 */
export async function startUpload(
  bucket: R2Bucket,
  writer: string,
  nar: string,
  layout: PartLayout,
  now: number,
  resumable: (upload: TrackedUpload) => boolean,
): Promise<StartedUpload> {
  for (let attempt = 1; ; attempt++) {
    const { uploads, taken } = await writerUploads(bucket, writer);
    const ofThisNar = uploads.filter((u) => u.nar === nar).sort((a, b) => b.started - a.started);
    const resumed = ofThisNar.find(resumable);
    if (resumed !== undefined) return { upload: resumed, resumed: true, parts: (await listParts(bucket, resumed)).parts };
    for (const u of ofThisNar) {
      if (now - u.started >= MULTIPART_MAX_AGE_MS) continue;
      await discardUpload(bucket, u);
      taken.delete(u.slot);
    }
    let slot = 0;
    while (taken.has(slot)) slot++;
    if (slot >= MAX_UPLOADS_PER_WRITER) {
      throw fail(
        "too_many_requests",
        `this token (${writer}) has ${MAX_UPLOADS_PER_WRITER} multipart uploads in progress, the most one token may have: finish or abort some ` +
          "(a push run again resumes its own), or wait for the cleanup, which aborts uploads started more than a day ago",
      );
    }
    const upload = await claimSlot(bucket, { writer, slot }, nar, layout, now);
    if (upload !== null) return { upload, resumed: false, parts: [] };
    if (attempt >= MAX_START_ATTEMPTS) {
      throw fail("conflict", "other uploads by this token started at the same moment and took the free slots; start again");
    }
  }
}

/** Begins an R2 upload in `slot` and records it there, unless another start took the slot first (null). */
async function claimSlot(bucket: R2Bucket, slot: UploadSlot, nar: string, layout: PartLayout, now: number): Promise<TrackedUpload | null> {
  const target = multipartAssemblyKey(slot);
  const created = await r2(() => bucket.createMultipartUpload(target, { httpMetadata: { contentType: CONTENT_TYPE.nar } }));
  const upload: TrackedUpload = { ...slot, nar, uploadId: created.uploadId, started: now, ...layout };
  const written = await r2(() => bucket.put(multipartUploadKey(slot), "", { customMetadata: metadataOf(upload), onlyIf: { etagDoesNotMatch: "*" } }));
  if (written !== null) return upload;
  await abortQuietly(bucket, target, created.uploadId);
  return null;
}

/** The parts recorded for `upload` in part order, and every key under its part records (stray ones too). */
async function listParts(bucket: R2Bucket, upload: TrackedUpload): Promise<{ parts: RecordedPart[]; keys: string[] }> {
  const parts: RecordedPart[] = [];
  const keys: string[] = [];
  const prefix = `${multipartDir(upload)}part/`;
  let cursor: string | undefined;
  do {
    const page = await r2(() => bucket.list({ prefix, limit: R2_PAGE, include: ["customMetadata"], ...(cursor === undefined ? {} : { cursor }) }));
    for (const o of page.objects) {
      keys.push(o.key);
      const m = o.customMetadata ?? {};
      const partNumber = Number(o.key.slice(prefix.length));
      const size = Number(m.size);
      // Records of an earlier upload in this slot (a part that arrived after it ended) have another id.
      if (m.uploadId !== upload.uploadId || typeof m.etag !== "string" || expectedPartSize(upload, partNumber) !== size) continue;
      parts.push({ partNumber, size, etag: m.etag });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return { parts: parts.sort((a, b) => a.partNumber - b.partNumber), keys };
}

/** The parts recorded for `upload` with the size the layout gives their number, in part order. */
export async function recordedParts(bucket: R2Bucket, upload: TrackedUpload): Promise<RecordedPart[]> {
  return (await listParts(bucket, upload)).parts;
}

/**
 * Streams part `partNumber` of exactly `length` bytes into R2 and records it. Only parts of
 * the layout are taken (1..partCount, each of its size); a body shorter or longer than
 * `length` is refused (400) and not recorded.
 */
export async function receivePart(
  bucket: R2Bucket,
  upload: TrackedUpload,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  length: number,
): Promise<RecordedPart> {
  if (expectedPartSize(upload, partNumber) !== length) {
    throw fail("bad_request", `part ${partNumber} of this upload cannot have ${length} bytes`);
  }
  const fixed = new FixedLengthStream(length);
  let pipeFailed = false;
  const piping = (body ?? new Response(new Uint8Array(0)).body!).pipeTo(fixed.writable).catch(() => {
    pipeFailed = true;
  });
  let etag: string;
  try {
    etag = (await bucket.resumeMultipartUpload(multipartAssemblyKey(upload), upload.uploadId).uploadPart(partNumber, fixed.readable)).etag;
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
    bucket.put(multipartPartKey(upload, partNumber), "", {
      customMetadata: { uploadId: upload.uploadId, etag, size: String(length) },
    }),
  );
  return { partNumber, size: length, etag };
}

/** How a completion ended. */
export interface Finished {
  /** The stored NAR's size. */
  size: number;
  /** The NAR was stored before (by this or another writer): nothing was written. */
  storedBefore: boolean;
}

/**
 * Completes `upload`: every part of the layout must be recorded (else 422 naming the
 * missing ones). R2 assembles them at the slot's `assembled` key; one put, checked by R2
 * against `sha256Hex` and only done while the NAR's key is absent, copies that to
 * `nar/<file>`. Bytes that do not hash to the name: 400, nothing stored. The assembled
 * object and all bookkeeping are gone afterwards, whatever the outcome but a 422 or 5xx.
 */
export async function finishUpload(bucket: R2Bucket, upload: TrackedUpload, sha256Hex: string): Promise<Finished> {
  const nar = narKey(upload.nar);
  const target = multipartAssemblyKey(upload);
  const existing = await headObject(bucket, nar);
  if (existing !== null) {
    // Stored meanwhile, by anyone (its bytes were verified then): this upload is moot.
    await discardUpload(bucket, upload);
    return { size: existing.size, storedBefore: true };
  }
  const listing = await listParts(bucket, upload);
  const parts = checkComplete(upload, listing.parts);
  let assembledSize: number;
  try {
    const obj = await bucket.resumeMultipartUpload(target, upload.uploadId).complete(parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })));
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
    // Assembled by a concurrent or retried completion of this upload, or aborted.
    const done = await headObject(bucket, target);
    if (done === null || done.size !== upload.size) {
      const stored = await headObject(bucket, nar);
      if (stored !== null) return { size: stored.size, storedBefore: true };
      await forgetIfDead(bucket, upload);
      throw fail("not_found", "this multipart upload no longer exists (aborted or expired); start the upload again");
    }
    assembledSize = done.size;
  }
  if (assembledSize !== upload.size) {
    // Cannot happen with checked parts; never copy an object of the wrong size.
    await dropUpload(bucket, upload, listing.keys);
    throw fail("bad_request", `R2 assembled ${assembledSize} bytes instead of the declared ${upload.size}; nothing was stored, start again`);
  }
  const staged = await r2(() => bucket.get(target));
  if (staged === null) {
    // A concurrent completion copied it and cleaned up.
    const stored = await headObject(bucket, nar);
    if (stored !== null) return { size: stored.size, storedBefore: true };
    throw fail("not_found", "this multipart upload no longer exists; start the upload again");
  }
  let written: R2Object | null;
  try {
    // R2 reads the assembled object's stream and checks its sha256 itself: no hashing here.
    written = await bucket.put(nar, staged.body, {
      sha256: sha256Hex,
      httpMetadata: httpMetadataFor(nar, CONTENT_TYPE.nar),
      onlyIf: { etagDoesNotMatch: "*" },
    });
  } catch (err) {
    if (!CHECKSUM_MISMATCH.test(messageOf(err))) return storageUnavailable(err);
    await dropUpload(bucket, upload, listing.keys);
    throw fail("bad_request", "the uploaded parts do not hash to the sha256 in the NAR's name; nothing was stored, upload it again");
  }
  if (written === null) await staged.body.cancel().catch(() => {});
  await dropUpload(bucket, upload, listing.keys);
  return { size: upload.size, storedBefore: written === null };
}

/** Aborts `upload` (best effort: R2 forgets it after 7 days anyway) and deletes all its objects. */
export async function discardUpload(bucket: R2Bucket, upload: TrackedUpload): Promise<void> {
  await abortQuietly(bucket, multipartAssemblyKey(upload), upload.uploadId);
  await dropUpload(bucket, upload, (await listParts(bucket, upload)).keys);
}

/** Deletes the objects of `upload`: `partKeys`, the assembled object, and its record last. */
async function dropUpload(bucket: R2Bucket, upload: TrackedUpload, partKeys: readonly string[]): Promise<void> {
  const keys = [...partKeys, multipartAssemblyKey(upload), multipartUploadKey(upload)];
  for (let i = 0; i < keys.length; i += R2_PAGE) {
    const chunk = keys.slice(i, i + R2_PAGE);
    await r2(() => bucket.delete(chunk));
  }
}

/**
 * Drops the bookkeeping of an upload R2 no longer has (left by a request that died between
 * aborting and cleaning up), so that the next start begins anew. Not while its NAR or its
 * assembled object exists (a completion in progress cleans up after itself), and only if
 * the slot still holds this very upload.
 */
async function forgetIfDead(bucket: R2Bucket, upload: TrackedUpload): Promise<void> {
  if ((await headObject(bucket, narKey(upload.nar))) !== null) return;
  if ((await headObject(bucket, multipartAssemblyKey(upload))) !== null) return;
  const current = await readUpload(bucket, upload);
  if (current === null || current.uploadId !== upload.uploadId) return;
  await dropUpload(bucket, upload, (await listParts(bucket, upload)).keys);
}

async function abortQuietly(bucket: R2Bucket, target: string, uploadId: string): Promise<void> {
  try {
    await bucket.resumeMultipartUpload(target, uploadId).abort();
  } catch (err) {
    // Already completed or aborted, or an R2 hiccup: R2 drops it after 7 days either way.
    console.warn("multipart abort failed", messageOf(err));
  }
}

/** What a cleanup pass did. */
export interface CleanupPass {
  /** The uploads aborted, as `<writer> nar/<file>`, oldest first. */
  aborted: string[];
  /** Objects deleted that no upload accounted for (unreadable records, stray part records, an older layout's). */
  strays: number;
  /** R2 calls made. */
  operations: number;
  /** Work is left for the next pass. */
  more: boolean;
}

/**
 * A cleanup pass for the cron, of at most `operations` R2 calls (default
 * CLEANUP_OPERATIONS_PER_PASS): aborts the uploads started more than `maxAgeMs` ago, oldest
 * first, and deletes their objects; then deletes objects under multipart/ older than that
 * which no upload record accounts for. A pass with nothing under multipart/ is one call.
 */
export async function abortStaleUploads(
  bucket: R2Bucket,
  opts: { now?: number; maxAgeMs?: number; operations?: number } = {},
): Promise<CleanupPass> {
  const cutoff = (opts.now ?? Date.now()) - (opts.maxAgeMs ?? MULTIPART_MAX_AGE_MS);
  const budget = opts.operations ?? CLEANUP_OPERATIONS_PER_PASS;
  const pass: CleanupPass = { aborted: [], strays: 0, operations: 0, more: false };
  const call = <T>(op: () => Promise<T>): Promise<T> => {
    pass.operations++;
    return r2(op);
  };
  const pending: string[] = [];
  /** Calls the deletes queued so far still need. */
  const deletesDue = (extra = 0) => Math.ceil((pending.length + extra) / R2_PAGE);
  const deleteFullPages = async () => {
    while (pending.length >= R2_PAGE) {
      const chunk = pending.splice(0, R2_PAGE);
      await call(() => bucket.delete(chunk));
    }
  };

  const top = await call(() => bucket.list({ prefix: MULTIPART_PREFIX, delimiter: "/" }));
  if (top.objects.length === 0 && top.delimitedPrefixes.length === 0) return pass;

  // Every upload record: at most tokens × MAX_UPLOADS_PER_WRITER, usually one call.
  const records: Array<{ key: string; name: string; upload: TrackedUpload | null; time: number }> = [];
  let listedAll = true;
  let cursor: string | undefined;
  do {
    if (pass.operations >= budget) {
      listedAll = false;
      break;
    }
    const page = await call(() => bucket.list({ prefix: MULTIPART_UPLOADS_PREFIX, limit: R2_PAGE, include: ["customMetadata"], ...(cursor === undefined ? {} : { cursor }) }));
    for (const o of page.objects) {
      const name = o.key.slice(MULTIPART_UPLOADS_PREFIX.length);
      const slot = parseUploadSlotName(name);
      const upload = slot === null ? null : parseRecord(slot, o.customMetadata);
      records.push({ key: o.key, name, upload, time: upload?.started ?? o.uploaded.getTime() });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);

  // Stale uploads, oldest first: one abort each, their keys computed (no listing) and
  // deleted 1,000 at a time, each upload's record after its other objects.
  const stale = records.filter((r) => r.time < cutoff).sort((a, b) => a.time - b.time);
  const gone = new Set<string>();
  for (const r of stale) {
    const u = r.upload;
    const keys = u === null ? [r.key] : [...Array.from({ length: u.partCount }, (_, i) => multipartPartKey(u, i + 1)), multipartAssemblyKey(u), r.key];
    const aborts = u === null ? 0 : 1;
    if (pass.operations + aborts + deletesDue(keys.length) > budget) {
      pass.more = true;
      break;
    }
    if (u !== null) {
      pass.operations++;
      await abortQuietly(bucket, multipartAssemblyKey(u), u.uploadId);
      pass.aborted.push(`${u.writer} nar/${u.nar}`);
    } else {
      pass.strays++;
    }
    pending.push(...keys);
    gone.add(r.name);
    await deleteFullPages();
  }
  if (!listedAll) pass.more = true;
  if (pending.length > 0) {
    const chunk = pending.splice(0);
    await call(() => bucket.delete(chunk));
  }

  // Strays, once every record is known and every stale upload gone: directories no record
  // accounts for, and anything under multipart/ outside the layout. Only objects older
  // than the cutoff go: a slot just claimed by a new upload gets its part records afresh.
  if (listedAll && !pass.more) {
    const live = new Set(records.filter((r) => !gone.has(r.name)).map((r) => r.name));
    const queue = (objects: readonly R2Object[]) => {
      for (const o of objects) {
        if (o.uploaded.getTime() >= cutoff) continue;
        pending.push(o.key);
        pass.strays++;
      }
    };
    /** Room for one more listing and for deleting all it may add to what is queued. */
    const roomForPage = () => pass.operations + 1 + deletesDue(R2_PAGE) <= budget;
    queue(top.objects);
    const dirs = top.delimitedPrefixes.filter((p) => p !== MULTIPART_UPLOADS_PREFIX && p !== MULTIPART_OBJECTS_PREFIX);
    let dirCursor: string | undefined;
    do {
      if (!roomForPage()) {
        pass.more = true;
        break;
      }
      const page = await call(() => bucket.list({ prefix: MULTIPART_OBJECTS_PREFIX, delimiter: "/", limit: R2_PAGE, ...(dirCursor === undefined ? {} : { cursor: dirCursor }) }));
      for (const p of page.delimitedPrefixes) if (!live.has(p.slice(MULTIPART_OBJECTS_PREFIX.length, -1))) dirs.push(p);
      queue(page.objects);
      dirCursor = page.truncated ? page.cursor : undefined;
    } while (dirCursor !== undefined);
    for (const dir of pass.more ? [] : dirs) {
      let c: string | undefined;
      do {
        if (!roomForPage()) {
          pass.more = true;
          break;
        }
        const page = await call(() => bucket.list({ prefix: dir, limit: R2_PAGE, ...(c === undefined ? {} : { cursor: c }) }));
        queue(page.objects);
        await deleteFullPages();
        c = page.truncated ? page.cursor : undefined;
      } while (c !== undefined);
      if (pass.more) break;
    }
    await deleteFullPages();
    if (pending.length > 0) {
      const chunk = pending.splice(0);
      await call(() => bucket.delete(chunk));
    }
  }
  if (top.truncated) pass.more = true;
  return pass;
}
