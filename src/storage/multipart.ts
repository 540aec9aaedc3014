// R2 multipart uploads of large NARs: the bookkeeping the Workers R2 binding lacks, who owns
// an upload, how many a write token may have, and a completion that can only ever store
// bytes that hash to the NAR's name, and never over a stored NAR.
//
// The binding can resume an upload only by (key, uploadId) and cannot list an upload's
// parts, yet a push killed halfway must be able to continue from another process or
// machine (a re-run CI job). So the Worker records both, as facts in D1
// (migrations/0005_multipart.sql, queries in multipart-index.ts), while the bytes stay in R2:
//
//   D1 multipart_uploads (writer, slot)   one row per upload in progress: the NAR's file name
//                                         (or, for an upload named at completion, the client's
//                                         name for it), R2's upload id, size, partSize,
//                                         partCount, start time
//   D1 multipart_parts (writer, slot, n)  one row per part R2 has received: its etag and size
//   R2 multipart/assembled/<writer>~<slot>   the R2 upload's own key: where R2 assembles the
//                                         parts when the upload completes (keys.ts)
//
// Integrity. Several write tokens share the cache and none may change what another stored,
// so parts are never assembled at the NAR's key: R2 assembles them at `assembled`, then
// completion copies that object to nar/<file> with one put that R2 checks against the
// sha256 in the name and that only succeeds while the key is absent (onlyIf
// etagDoesNotMatch "*"). Bytes that do not hash to the name are refused (400, nothing
// stored); if the NAR got stored meanwhile, by anyone, the put changes nothing and the
// upload answers "stored". Either way the assembled object and all bookkeeping go.
// Verification makes a NAR one R2 put, hence MAX_VERIFIED_BYTES. An upload may also be
// named at completion (started under a name of the client's, with a part size but no size):
// its parts are taken up to partSize bytes each, and the completion brings the file name
// and the layout, which are checked and copied exactly the same way.
//
// Ownership and bounds. Each write token (its secret's name, the <writer>) has
// MAX_UPLOADS_PER_WRITER slots; an upload lives in one, so another token can neither see
// nor touch it, nor block it: two tokens uploading one NAR each have their own upload and
// whichever completes first with the right bytes stores it. A start picks the writer's
// lowest free slot (a random free one when it tries again after a race), begins the R2 upload at that slot's key, and claims the slot by
// inserting its row: writer and slot are the row's primary key, and the insert does nothing
// while the writer has a young upload of the same NAR, so no race exceeds the bound and two
// starts of one NAR end in one upload (the loser aborts its R2 upload and resumes the
// winner's). Clients
// name an upload by the handle `<writer>~<slot>:<R2 upload id>` (its "uploadId" in the
// API); the route refuses a handle of another writer before anything is read. Per cache
// the bookkeeping is at most tokens × MAX_UPLOADS_PER_WRITER upload rows, each with at
// most partCount part rows (a part row is only written while its upload holds the slot)
// and one assembled object.
//
// Cost in D1 rows written (the free plan allows 100,000 a day): an upload writes one row
// when it starts and one per part (parts are at least 5 MiB, 64 MiB by default: 16 for a
// 1 GiB NAR), and deletes as many when it ends, which D1 counts as written too; a 1 GiB NAR
// costs about 34 rows, a thousand of them a day a third of the allowance. Requests cost a
// constant number of calls: a start one R2 head, one D1 read, and for a new upload one R2
// call and one D1 insert; a part one D1 read, the R2 part, one D1 write; a completion one
// D1 read, five R2 calls (head, complete, get, the checked put, delete) and one D1 batch.
//
// Cleanup. Uploads started more than MULTIPART_MAX_AGE_MS ago belong to the cron
// (abortStaleUploads): each pass finds them with one D1 query, oldest first, aborts them
// (one R2 call each), deletes their assembled objects in one R2 call and then their rows in
// one D1 batch, within CLEANUP_OPERATIONS_PER_PASS calls. A request never frees another
// upload's slot but its own, and rows go after the upload's objects, so a slot is reused
// only after its previous upload's objects are gone.
//
// Caches from before D1 held this kept it as R2 objects: a record per upload
// (multipart/uploads/<writer>~<slot>, its state in customMetadata) and an empty object per
// part (multipart/objects/<writer>~<slot>/part/<n>). They are not resumed: once a pass has
// no stale upload left, it lists what is under multipart/ past multipart/assembled/, aborts
// each recorded upload and deletes every such object, a page at a time, and notes in D1
// (index_state) when none is left, after which idle passes make no R2 call. An upload in
// progress during the upgrade thus ends; its push, run again, starts it anew.
//
// What local R2 (workerd 1.2026-11) throws, pinned by test/worker/multipart-storage.test.ts:
//   uploadPart / complete on an aborted or completed upload   "… does not exist. (10024)"
//   complete with an etag R2 does not have                     "… could not be found. (10025)"
//   complete with a non-last part under 5 MiB                  "… minimum allowed object size. (10011)"
//   abort / complete of an upload id R2 never issued           "internal error … (10001)"
//   put with a sha256 the body does not have                   "… checksum … did not match … (10037)"
//   put with onlyIf etagDoesNotMatch "*" on a stored key       returns null, stores nothing

import { fail } from "../errors.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { checkComplete, expectedPartSize, MAX_PARTS, type PartLayout } from "../ingest/part-layout.ts";
import { headObject, httpMetadataFor, ONLY_IF_ABSENT, storageUnavailable } from "./bucket.ts";
import {
  LEGACY_MULTIPART_UPLOADS_PREFIX,
  legacyMultipartAssemblyKey,
  MULTIPART_ASSEMBLED_PREFIX,
  MULTIPART_PREFIX,
  multipartAssemblyKey,
  narKey,
  parseUploadSlotName,
  uploadSlotName,
  type UploadSlot,
} from "./keys.ts";
import {
  claimSlot,
  cleanupWork,
  forgetUploads,
  markLegacySwept,
  recordPart,
  uploadIn,
  uploadsOf,
  uploadWithParts,
  type RecordedPart,
  type TrackedUpload,
  type UploadKey,
} from "./multipart-index.ts";

export type { RecordedPart, TrackedUpload, UploadKey };

/** What completion checks: the sha256 of the assembled NAR, by R2 (the only mode left). */
export type VerifyMode = "sha256";

/** The R2 bucket with the bytes and the D1 database with the bookkeeping. */
export interface MultipartStores {
  bucket: R2Bucket;
  db: D1Database;
}

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
 * cannot grow the bookkeeping beyond 64 uploads.
 */
export const MAX_UPLOADS_PER_WRITER = 64;

/**
 * R2 and D1 calls one cleanup pass may make: the free plan allows 50 subrequests per
 * invocation; five spare, so that nothing the pass does ever meets the limit (the cron tick
 * may also check the nix-cache-info object first: CACHE_INFO_CHECK_OPERATIONS). A pass
 * spends one D1 query finding the stale uploads, one R2 abort for each, one R2 delete of
 * their assembled objects and one D1 batch for their rows, so it clears 42 uploads.
 */
export const CLEANUP_OPERATIONS_PER_PASS = 45;

/**
 * How many times a start tries again when a concurrent start by the same token took the
 * slot it chose (each try reads the slots again), or began an upload of the same NAR that
 * this start's layout cannot resume.
 */
const MAX_START_ATTEMPTS = 4;

/** R2 returns at most this many keys per list call, and deletes at most this many at once. */
const R2_PAGE = 1000;

/** What a client passes back to name an upload: its slot and R2's upload id. */
export interface UploadHandle extends UploadSlot {
  uploadId: string;
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
export function handleOf(upload: UploadHandle): string {
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

/** The layout of `upload` when it is known (always for an upload started with its NAR's name). */
export function layoutOf(upload: TrackedUpload): PartLayout | null {
  return upload.size === null || upload.partCount === null ? null : { size: upload.size, partSize: upload.partSize, partCount: upload.partCount };
}

/** What a new upload declares: the layout, or for an upload named at completion the part size alone. */
export type UploadShape = { partSize: number; size: number; partCount: number } | { partSize: number; size: null; partCount: null };

/** The upload in the slot a handle names, or null when the slot is free. One D1 call. */
export function readUpload(db: D1Database, slot: UploadSlot): Promise<TrackedUpload | null> {
  return uploadIn(db, slot);
}

/** The upload in the slot a handle names with the parts recorded for it, or null. One D1 call. */
export function readUploadWithParts(db: D1Database, slot: UploadSlot): Promise<{ upload: TrackedUpload; parts: RecordedPart[] } | null> {
  return uploadWithParts(db, slot);
}

/** The recorded parts that fit `upload`'s layout (all of them while the layout is not known). */
function partsThatFit(upload: TrackedUpload, parts: readonly RecordedPart[]): RecordedPart[] {
  const layout = layoutOf(upload);
  return layout === null ? parts.filter((p) => p.size <= upload.partSize) : parts.filter((p) => expectedPartSize(layout, p.partNumber) === p.size);
}

export interface StartedUpload {
  upload: TrackedUpload;
  /** An upload already in progress, continued. */
  resumed: boolean;
  /** The parts it has received (none for a new one). */
  parts: RecordedPart[];
}

/**
 * Starts an upload for `writer` under `key` (a NAR's file name, or a client's name for an
 * upload named at completion), or resumes the writer's upload under that key that
 * `resumable` accepts. The writer's other uploads under it that cannot continue (another
 * layout) are discarded; ones older than MULTIPART_MAX_AGE_MS are left to the cleanup. A
 * new upload takes the writer's lowest free slot: 429 when there is none.
 */
export async function startUpload(
  s: MultipartStores,
  writer: string,
  key: UploadKey,
  shape: UploadShape,
  now: number,
  resumable: (upload: TrackedUpload) => boolean,
): Promise<StartedUpload> {
  const youngSince = now - MULTIPART_MAX_AGE_MS;
  for (let attempt = 1; ; attempt++) {
    const { uploads, taken } = await uploadsOf(s.db, writer, key);
    const resumed = uploads.find((u) => resumable(u.upload));
    if (resumed !== undefined) return { upload: resumed.upload, resumed: true, parts: partsThatFit(resumed.upload, resumed.parts) };
    for (const { upload } of uploads) {
      if (upload.started <= youngSince) continue;
      await discardUpload(s, upload);
      taken.delete(upload.slot);
    }
    const free = Array.from({ length: MAX_UPLOADS_PER_WRITER }, (_, i) => i).filter((i) => !taken.has(i));
    if (free.length === 0) throw tooMany(writer);
    // The lowest free slot; after losing one to a concurrent start, any free one, so that
    // many starts at once do not all go for the same slot again.
    const slot = attempt === 1 ? free[0]! : free[Math.floor(Math.random() * free.length)]!;
    const target = multipartAssemblyKey({ writer, slot });
    const created = await r2(() => s.bucket.createMultipartUpload(target, { httpMetadata: { contentType: CONTENT_TYPE.nar } }));
    const upload: TrackedUpload = { writer, slot, ...key, uploadId: created.uploadId, ...shape, started: now };
    if (await claimSlot(s.db, upload, youngSince)) return { upload, resumed: false, parts: [] };
    // Another start of this writer took the slot, or began an upload under this key.
    await abortQuietly(s.bucket, target, created.uploadId);
    if (attempt >= MAX_START_ATTEMPTS) {
      throw fail("conflict", "other uploads by this token started at the same moment and took the free slots; start again");
    }
  }
}

function tooMany(writer: string): Error {
  return fail(
    "too_many_requests",
    `this token (${writer}) has ${MAX_UPLOADS_PER_WRITER} multipart uploads in progress, the most one token may have: finish or abort some ` +
      "(a push run again resumes its own), or wait for the cleanup, which aborts uploads started more than a day ago",
  );
}

/** Whether part `partNumber` of `length` bytes belongs to `upload`: its layout's size, or while the layout is not known, at most partSize. */
export function fitsUpload(upload: TrackedUpload, partNumber: number, length: number): boolean {
  const layout = layoutOf(upload);
  if (layout !== null) return expectedPartSize(layout, partNumber) === length;
  return Number.isSafeInteger(partNumber) && partNumber >= 1 && partNumber <= maxPartsOf(upload.partSize) && length >= 1 && length <= upload.partSize;
}

/** Most parts of an upload with parts of `partSize`: R2's limit, and no more than a verified NAR can fill. */
export function maxPartsOf(partSize: number): number {
  return Math.min(MAX_PARTS, Math.ceil(MAX_VERIFIED_BYTES / partSize));
}

/**
 * Streams part `partNumber` of exactly `length` bytes into R2 and records it. Only parts
 * that fit the upload are taken (fitsUpload); a body shorter or longer than `length` is
 * refused (400) and not recorded.
 */
export async function receivePart(
  s: MultipartStores,
  upload: TrackedUpload,
  partNumber: number,
  body: ReadableStream<Uint8Array> | null,
  length: number,
): Promise<RecordedPart> {
  if (!fitsUpload(upload, partNumber, length)) {
    throw fail("bad_request", `part ${partNumber} of this upload cannot have ${length} bytes`);
  }
  const fixed = new FixedLengthStream(length);
  let pipeFailed = false;
  const piping = (body ?? new Response(new Uint8Array(0)).body!).pipeTo(fixed.writable).catch(() => {
    pipeFailed = true;
  });
  let etag: string;
  try {
    etag = (await s.bucket.resumeMultipartUpload(multipartAssemblyKey(upload), upload.uploadId).uploadPart(partNumber, fixed.readable)).etag;
  } catch (err) {
    const message = messageOf(err);
    if (NO_SUCH_UPLOAD.test(message)) {
      await forgetIfDead(s, upload);
      throw fail("not_found", "this multipart upload no longer exists (completed, aborted or expired); start the upload again");
    }
    if (pipeFailed || LENGTH_MISMATCH.test(message)) {
      throw fail("bad_request", `the part did not have exactly its Content-Length of ${length} bytes; it was not stored`);
    }
    return storageUnavailable(err);
  }
  await piping;
  const part = { partNumber, size: length, etag };
  if (!(await recordPart(s.db, upload, part))) {
    // The upload ended (completed, aborted) while the part was on its way.
    throw fail("not_found", "this multipart upload ended while the part was sent (completed, aborted or expired); start the upload again");
  }
  return part;
}

/** How a completion ended. */
export interface Finished {
  /** The stored NAR's size. */
  size: number;
  /** The NAR was stored before (by this or another writer): nothing was written. */
  storedBefore: boolean;
}

/**
 * Completes `upload` as the NAR `file` with `layout` (its own, or for an upload named at
 * completion the one the client declares now): every part of the layout must be recorded
 * in `recorded` (else 422 naming the missing ones). R2 assembles them at the slot's
 * assembled key; one put, checked by R2 against `sha256Hex` and only done while the NAR's
 * key is absent, copies that to `nar/<file>`. Bytes that do not hash to the name: 400,
 * nothing stored. The assembled object and all bookkeeping are gone afterwards, whatever
 * the outcome but a 422 or 5xx.
 */
export async function finishUpload(
  s: MultipartStores,
  upload: TrackedUpload,
  recorded: readonly RecordedPart[],
  file: string,
  layout: PartLayout,
  sha256Hex: string,
): Promise<Finished> {
  const { bucket } = s;
  const nar = narKey(file);
  const target = multipartAssemblyKey(upload);
  const existing = await headObject(bucket, nar);
  if (existing !== null) {
    // Stored meanwhile, by anyone (its bytes were verified then): this upload is moot.
    await discardUpload(s, upload);
    return { size: existing.size, storedBefore: true };
  }
  const parts = checkComplete(layout, recorded);
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
    if (done === null || done.size !== layout.size) {
      const stored = await headObject(bucket, nar);
      if (stored !== null) return { size: stored.size, storedBefore: true };
      await forgetIfDead(s, upload);
      throw fail("not_found", "this multipart upload no longer exists (aborted or expired); start the upload again");
    }
    assembledSize = done.size;
  }
  if (assembledSize !== layout.size) {
    // Cannot happen with checked parts; never copy an object of the wrong size.
    await dropUpload(s, upload);
    throw fail("bad_request", `R2 assembled ${assembledSize} bytes instead of the declared ${layout.size}; nothing was stored, start again`);
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
      onlyIf: ONLY_IF_ABSENT,
    });
  } catch (err) {
    if (!CHECKSUM_MISMATCH.test(messageOf(err))) return storageUnavailable(err);
    await dropUpload(s, upload);
    throw fail("bad_request", "the uploaded parts do not hash to the sha256 in the NAR's name; nothing was stored, upload it again");
  }
  if (written === null) await staged.body.cancel().catch(() => {});
  await dropUpload(s, upload);
  return { size: layout.size, storedBefore: written === null };
}

/** Aborts `upload` (best effort: R2 forgets it after 7 days anyway), deletes its assembled object, then its rows. */
export async function discardUpload(s: MultipartStores, upload: TrackedUpload): Promise<void> {
  await abortQuietly(s.bucket, multipartAssemblyKey(upload), upload.uploadId);
  await dropUpload(s, upload);
}

/** Deletes the assembled object of `upload`, then its rows (last: the slot is free only once its objects are gone). */
async function dropUpload(s: MultipartStores, upload: TrackedUpload): Promise<void> {
  await r2(() => s.bucket.delete(multipartAssemblyKey(upload)));
  await forgetUploads(s.db, [upload]);
}

/**
 * Drops the bookkeeping of an upload R2 no longer has (left by a request that died between
 * aborting and cleaning up), so that the next start begins anew. Not while its NAR or its
 * assembled object exists (a completion in progress cleans up after itself), and only if
 * the slot still holds this very upload (forgetUploads checks).
 */
async function forgetIfDead(s: MultipartStores, upload: TrackedUpload): Promise<void> {
  if (upload.nar !== null && (await headObject(s.bucket, narKey(upload.nar))) !== null) return;
  if ((await headObject(s.bucket, multipartAssemblyKey(upload))) !== null) return;
  await forgetUploads(s.db, [upload]);
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
  /** The uploads aborted, as `<writer> nar/<file>` (or `<writer> <name>` for one named at completion), oldest first. */
  aborted: string[];
  /** Objects deleted that were bookkeeping from before D1 held it. */
  strays: number;
  /** R2 and D1 calls made. */
  operations: number;
  /** Work is left for the next pass. */
  more: boolean;
}

/** How a cleanup pass names an upload. */
function describe(u: Pick<TrackedUpload, "writer" | "nar" | "name">): string {
  return u.nar !== null ? `${u.writer} nar/${u.nar}` : `${u.writer} ${u.name ?? ""}`;
}

/**
 * A cleanup pass for the cron, of at most `operations` R2 and D1 calls (default
 * CLEANUP_OPERATIONS_PER_PASS): aborts the uploads started more than `maxAgeMs` ago,
 * oldest first, deletes their assembled objects and then their rows; then, until it has
 * found none once, deletes the bucket's bookkeeping from before D1 held it. A pass with
 * nothing to do is one D1 query.
 */
export async function abortStaleUploads(
  s: MultipartStores,
  opts: { now?: number; maxAgeMs?: number; operations?: number } = {},
): Promise<CleanupPass> {
  const cutoff = (opts.now ?? Date.now()) - (opts.maxAgeMs ?? MULTIPART_MAX_AGE_MS);
  const budget = opts.operations ?? CLEANUP_OPERATIONS_PER_PASS;
  const pass: CleanupPass = { aborted: [], strays: 0, operations: 0, more: false };
  const call = <T>(op: () => Promise<T>): Promise<T> => {
    pass.operations++;
    return op();
  };

  // Stale uploads, oldest first: one abort each, then one delete of their assembled
  // objects (each upload has one key) and one batch for their rows, which go last.
  const work = await call(() => cleanupWork(s.db, cutoff, budget));
  const room = Math.max(0, Math.min(R2_PAGE, budget - pass.operations - 2));
  const ending = work.stale.slice(0, room);
  if (ending.length < work.stale.length) pass.more = true;
  for (const u of ending) {
    pass.operations++;
    await abortQuietly(s.bucket, multipartAssemblyKey(u), u.uploadId);
    pass.aborted.push(describe(u));
  }
  if (ending.length > 0) {
    const keys = ending.map(multipartAssemblyKey);
    await call(() => r2(() => s.bucket.delete(keys)));
    await call(() => forgetUploads(s.db, ending));
  }
  if (!pass.more && !work.legacySwept) await sweepLegacy(s, pass, budget);
  return pass;
}

/**
 * Deletes, a listed page at a time, the bookkeeping of caches from before D1 held it (every
 * object under multipart/ past multipart/assembled/), aborting each upload a record
 * describes; notes in D1 when nothing is left. Within what `budget` leaves of `pass`.
 */
async function sweepLegacy(s: MultipartStores, pass: CleanupPass, budget: number): Promise<void> {
  // A listing, a delete of what it found, and the note in D1.
  const roomForPage = () => pass.operations + 3 <= budget;
  // Assembled objects (this layout) sort before every older layout's prefix (nar/, objects/, uploads/).
  const startAfter = `${MULTIPART_ASSEMBLED_PREFIX}\u{10FFFF}`;
  let cursor: string | undefined;
  do {
    if (!roomForPage()) {
      pass.more = true;
      return;
    }
    pass.operations++;
    const page = await r2(() =>
      s.bucket.list({ prefix: MULTIPART_PREFIX, startAfter, limit: R2_PAGE, include: ["customMetadata"], ...(cursor === undefined ? {} : { cursor }) }),
    );
    const keys: string[] = [];
    for (const o of page.objects) {
      if (o.key.startsWith(MULTIPART_ASSEMBLED_PREFIX)) continue;
      const name = o.key.startsWith(LEGACY_MULTIPART_UPLOADS_PREFIX) ? o.key.slice(LEGACY_MULTIPART_UPLOADS_PREFIX.length) : null;
      const slot = name === null ? null : parseUploadSlotName(name);
      const uploadId = o.customMetadata?.uploadId;
      if (name !== null && slot !== null && uploadId !== undefined && uploadId !== "") {
        // Room for this abort and still the delete and the note.
        if (pass.operations + 3 > budget) {
          pass.more = true;
          break;
        }
        pass.operations++;
        await abortQuietly(s.bucket, legacyMultipartAssemblyKey(name), uploadId);
        pass.aborted.push(describe({ writer: slot.writer, nar: o.customMetadata?.nar ?? "?", name: null }));
      }
      keys.push(o.key);
      pass.strays++;
    }
    if (keys.length > 0) {
      pass.operations++;
      await r2(() => s.bucket.delete(keys));
    }
    if (pass.more) return;
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  pass.operations++;
  await markLegacySwept(s.db, Date.now());
}
