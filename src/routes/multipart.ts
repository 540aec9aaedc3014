// Multipart uploads of NARs larger than one request may carry (Cloudflare's Free and Pro
// plans refuse request bodies over 100 MB), on top of R2's multipart uploads. Writers only;
// each upload belongs to the write token that started it.
//
//   GET    /_api/v1/limits
//          → 200 {"maxRequestBytes", "minPartBytes", "maxParts", "defaultPartBytes",
//                 "multipartVerify": "sha256"}   what a client needs to choose single or multipart
//   POST   /_api/v1/multipart/nar/<file>            body {"size": <FileSize>, "partSize"?: n}
//          → 201 {"key", "stored": false, "uploadId", "size", "partSize", "partCount",
//                 "parts": [], "maxRequestBytes", "verify": "sha256"}      a new upload
//          → 200 the same with the parts already received, [{"partNumber", "size"}]: this
//                token's upload of this NAR in progress, resumed (same size and part size,
//                parts within the request limit, started less than MULTIPART_MAX_AGE_MS
//                ago; otherwise a new one is begun). Another token's upload is never resumed:
//                each token uploads its own parts, and whichever completes first stores the NAR.
//          → 200 {"key", "stored": true, "size"}      the NAR is already stored
//          → 413 over MAX_VERIFIED_BYTES (completion verifies the NAR in one R2 put)
//          → 429 the token has MAX_UPLOADS_PER_WRITER uploads in progress
//   PUT    /_api/v1/multipart/nar/<file>/<partNumber>?uploadId=<id>   (Content-Length)
//          → 200 {"partNumber", "size"}     part n of the layout: partSize bytes, the last
//                                            one the rest; sending a part again replaces it
//   POST   /_api/v1/multipart/nar/<file>/complete?uploadId=<id>
//          → 201 {"key", "size"}   every part received with its size, and the assembled file
//                                  hashes to the sha256 in its name (checked by R2; else 400,
//                                  nothing stored); 422 names the parts missing
//          → 200 {"key", "size", "stored": true}   the NAR was stored already (by a retried
//                                  completion, or by anyone meanwhile): nothing changed
//   DELETE /_api/v1/multipart/nar/<file>?uploadId=<id>     → 204   abort
//
// Uploads named at completion, for a client that compresses and sends parts at once (the
// file name is the sha256 of the compressed bytes, and the size, known only at the end):
//
//   POST   /_api/v1/multipart/nar                   body {"name": <the client's name>, "partSize"?: n}
//          → 201 {"stored": false, "name", "uploadId", "partSize", "maxParts", "parts": [],
//                 "maxRequestBytes", "verify": "sha256"}   a new upload; partSize is at
//                least 5 MiB (64 MiB or the request limit by default)
//          → 200 the same with the parts already received: this token's upload of that name
//                in progress (same partSize if asked, started less than a day ago). The name
//                (1 to 200 of A-Z a-z 0-9 . _ + = : @ -) is the client's: it should name the
//                bytes, e.g. <hash part>-<narHash>-<compression>, so that only parts of the
//                same file are resumed; parts of other bytes fail the sha256 check at the end.
//          → 429 the token has MAX_UPLOADS_PER_WRITER uploads in progress (of either kind)
//   PUT    /_api/v1/multipart/nar/<partNumber>?uploadId=<id>   (Content-Length 1..partSize)
//          → 200 {"partNumber", "size"}     parts 1..maxParts; every part but the last must
//                                            have partSize bytes (checked at completion)
//   POST   /_api/v1/multipart/nar/complete?uploadId=<id>   body {"nar": "<file>", "size": n, "parts": count}
//          → 201 {"key", "size"} / 200 {"key", "size", "stored": true}   as for a named upload:
//                parts 1..count (count = ceil(size / partSize), else 400) assembled, copied to
//                nar/<file> by the put R2 checks against the sha256 in <file> (else 400,
//                nothing stored) and only if nothing is stored there; 422 names the parts
//                missing or of the wrong size; parts above count are dropped. A retried
//                completion finds the NAR stored (200).
//   DELETE /_api/v1/multipart/nar?uploadId=<id>     → 204   abort
//
// The handles of the two kinds are not interchangeable (400 says which URL to use).
//
// <file> is `<filehash52>.nar[.ext]` as for a single PUT. The NAR appears under nar/ only
// when the upload completes, with bytes R2 checked against its name, and only if nothing
// is stored there yet: no writer can replace a stored NAR or squat a name with other
// bytes. The uploadId is opaque to clients (storage/multipart.ts: `<writer>~<slot>:<R2 id>`);
// one naming another token's upload gets 403 before anything is read. The bookkeeping is
// rows in D1, the bytes are in R2. Part bodies are streamed into R2 (no Worker CPU spent
// on them); a part costs two D1 calls and one R2 call, a completion two D1 calls and five
// R2 operations, one of them R2 reading and re-writing the whole NAR to verify it. The
// answers' shapes are src/api/multipart.ts, shared with the uploader.
// 404 means "no such upload (any more): start again"; 409 "another upload of this NAR (or
// name) by this token replaced this one".

import { Hono, type Context } from "hono";
import {
  parseCompleteRequest,
  parseUnnamedStartRequest,
  type CompleteAnswer,
  type LimitsAnswer,
  type Parsed,
  type PartAnswer,
  type StartAnswer,
  type StartRequest,
  type UnnamedUploadStarted,
} from "../api/multipart.ts";
import { toHex } from "../nix/encoding.ts";
import { SHA256_BYTES } from "../nix/hash.ts";
import { decodeNix32 } from "../nix/nix32.ts";
import { settingsOf, type Settings, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { contentEncoding, readText, requireLength } from "../http/body.ts";
import { requireWrite, writerOf } from "../middleware/auth.ts";
import { headObject } from "../storage/bucket.ts";
import { edgeInvalidate } from "../storage/edge-cache.ts";
import { narKey, parseNarFileName } from "../storage/keys.ts";
import {
  discardUpload,
  finishUpload,
  handleOf,
  layoutOf,
  MAX_VERIFIED_BYTES,
  maxPartsOf,
  MULTIPART_MAX_AGE_MS,
  parseHandle,
  readUpload,
  readUploadWithParts,
  receivePart,
  startUpload,
  type MultipartStores,
  type RecordedPart,
  type TrackedUpload,
  type UploadHandle,
} from "../storage/multipart.ts";
import { DEFAULT_PART_BYTES, expectedPartSize, layoutFor, MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES, partCountOf, type PartLayout } from "../ingest/part-layout.ts";

type Ctx = Context<{ Bindings: WorkerEnv }>;

export const multipart = new Hono<{ Bindings: WorkerEnv }>();

const BASE = "/_api/v1/multipart/nar";
/** Largest start request body: `{"size": …, "partSize": …}` is ~50 bytes. */
const MAX_START_BODY_BYTES = 4096;
/** Longest accepted upload id (a writer's name, a slot, and R2's id of a few hundred characters). */
const MAX_UPLOAD_ID_CHARS = 1024;

const PART_TOO_LARGE_HINT = "send parts of the partSize the start of the upload returned (the uploader does)";

/** The NAR named by the route's :file, with the sha256 its name carries; 400 otherwise. */
function narOf(c: Ctx): { file: string; key: string; sha256Hex: string } {
  return narOfFile(c.req.param("file") ?? "");
}

/** The NAR `file` names, with the sha256 its name carries; 400 otherwise. */
function narOfFile(file: string): { file: string; key: string; sha256Hex: string } {
  const name = parseNarFileName(file);
  if (name === null) {
    throw fail("bad_request", "a multipart upload is for nar/<52-char nix32 sha256 of the file>.nar[.xz|.bz2|.zst|.br|.lz4|.lzip]");
  }
  try {
    return { file, key: narKey(file), sha256Hex: toHex(decodeNix32(name.fileHash, SHA256_BYTES)) };
  } catch {
    throw fail("bad_request", "the NAR file name is not a valid nix32 sha256 (it must start with 0 or 1)");
  }
}

/** The upload the request's ?uploadId names: 400 when malformed, 403 when another token started it. */
function handleOfRequest(c: Ctx): UploadHandle {
  const id = c.req.query("uploadId");
  const handle = id === undefined || id.length > MAX_UPLOAD_ID_CHARS ? null : parseHandle(id);
  if (handle === null) throw fail("bad_request", "pass the uploadId the start of the upload returned: ?uploadId=<id>");
  if (handle.writer !== writerOf(c.req.raw)) {
    throw fail("forbidden", "this upload was started by another token; a token can only continue its own uploads (start one with POST on this URL without the uploadId)");
  }
  return handle;
}

/** A part upload's number (1 to MAX_PARTS), its upload's handle, and its body with the body's length. */
function partRequest(c: Ctx): { partNumber: number; handle: UploadHandle; request: Request; length: number } {
  const partText = c.req.param("part") ?? "";
  const partNumber = /^[1-9][0-9]{0,4}$/.test(partText) ? Number(partText) : 0;
  if (partNumber < 1 || partNumber > MAX_PARTS) throw fail("bad_request", `part numbers go from 1 to ${MAX_PARTS}`);
  const handle = handleOfRequest(c);
  const request = c.req.raw;
  contentEncoding(request, [], "NAR part");
  return { partNumber, handle, request, length: requireLength(request, settingsOf(c.env).maxNarUploadBytes, PART_TOO_LARGE_HINT) };
}

function storesOf(c: Ctx): MultipartStores {
  return { bucket: c.env.CACHE, db: c.env.DB };
}

/** This token's upload the handle names, if it is (still) an upload of `nar`; 409 when another one replaced it. */
function checkTracked<T extends { upload: TrackedUpload }>(found: T | null, nar: { file: string; key: string }, handle: UploadHandle): T | null {
  if (found === null || found.upload.nar !== nar.file) return null;
  if (found.upload.uploadId !== handle.uploadId) {
    throw fail("conflict", `another upload of ${nar.key} by this token replaced this one (it was too old, or declared another size); start again`);
  }
  return found;
}

async function trackedUpload(c: Ctx, nar: { file: string; key: string }, handle: UploadHandle): Promise<TrackedUpload | null> {
  const upload = await readUpload(c.env.DB, handle);
  return checkTracked(upload === null ? null : { upload }, nar, handle)?.upload ?? null;
}

/** The upload with its recorded parts (for completion). */
async function trackedWithParts(c: Ctx, nar: { file: string; key: string }, handle: UploadHandle): Promise<{ upload: TrackedUpload; parts: RecordedPart[] } | null> {
  return checkTracked(await readUploadWithParts(c.env.DB, handle), nar, handle);
}

/** The layout of an upload started with its NAR's name (always known). */
function fixedLayout(upload: TrackedUpload): PartLayout {
  const layout = layoutOf(upload);
  if (layout === null) throw fail("conflict", "this upload is not of a named NAR; complete it with POST /_api/v1/multipart/nar/complete");
  return layout;
}

function noUpload(key: string): never {
  throw fail("not_found", `no multipart upload of ${key} is in progress (never started, completed, aborted or expired); start one with POST ${BASE}/${key.slice("nar/".length)}`);
}

function parseStart(text: string): StartRequest {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw fail("bad_request", 'the body is not JSON; send {"size": <bytes of the compressed NAR>}');
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw fail("bad_request", 'send {"size": <bytes of the compressed NAR>}');
  const { size, partSize } = body as { size?: unknown; partSize?: unknown };
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 1) throw fail("bad_request", "size must be a positive whole number of bytes");
  if (partSize === undefined) return { size };
  if (typeof partSize !== "number" || !Number.isSafeInteger(partSize) || partSize < 1) throw fail("bad_request", "partSize must be a positive whole number of bytes");
  return { size, partSize };
}

/** Whether a tracked upload can be continued by a start declaring `size` (and `partSize`). */
function resumable(upload: TrackedUpload, size: number, partSize: number | undefined, settings: Settings, now: number): boolean {
  return (
    upload.size === size &&
    (partSize === undefined || partSize === upload.partSize) &&
    upload.partSize <= settings.maxNarUploadBytes &&
    now - upload.started < MULTIPART_MAX_AGE_MS
  );
}

multipart.get("/_api/v1/limits", requireWrite, (c) => {
  const settings = settingsOf(c.env);
  const limits: LimitsAnswer = {
    maxRequestBytes: settings.maxNarUploadBytes,
    minPartBytes: MIN_PART_BYTES,
    maxParts: MAX_PARTS,
    defaultPartBytes: DEFAULT_PART_BYTES,
    multipartVerify: settings.multipartVerify,
  };
  return c.json(limits);
});

// Uploads named at completion (no <file> in the URL): see the header.

/** The part size of an upload named at completion: the client's, or the default within the request limit. */
function unnamedPartSize(requested: number | undefined, requestLimit: number): number {
  const ceiling = Math.min(requestLimit, MAX_PART_BYTES);
  if (ceiling < MIN_PART_BYTES) {
    throw fail(
      "payload_too_large",
      `this cache takes at most ${requestLimit} bytes per request (MAX_NAR_UPLOAD_BYTES), less than R2's minimum part size of ${MIN_PART_BYTES} bytes, so it cannot take uploads in parts`,
    );
  }
  if (requested === undefined) return Math.min(DEFAULT_PART_BYTES, ceiling);
  if (requested > ceiling) throw fail("payload_too_large", `partSize ${requested} is over this cache's limit of ${ceiling} bytes per request`);
  if (requested < MIN_PART_BYTES) throw fail("bad_request", `partSize must be at least ${MIN_PART_BYTES} bytes (R2's minimum part size)`);
  return requested;
}

function parsedOrFail<T>(parsed: Parsed<T>): T {
  if (!parsed.ok) throw fail("bad_request", parsed.error);
  return parsed.value;
}

function jsonBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw fail("bad_request", "the body is not JSON");
  }
}

/** This token's upload named at completion that the handle names; 404 when there is none, 409 when another replaced it. */
async function unnamedUpload<T extends { upload: TrackedUpload }>(found: T | null, handle: UploadHandle): Promise<T | null> {
  if (found === null) return null;
  if (found.upload.nar !== null) {
    throw fail("bad_request", `this upload was started for nar/${found.upload.nar}: continue it under ${BASE}/${found.upload.nar}`);
  }
  if (found.upload.uploadId !== handle.uploadId) {
    throw fail("conflict", `another upload named ${found.upload.name ?? "?"} by this token replaced this one (it was too old, or had another part size); start again`);
  }
  return found;
}

function noUnnamedUpload(): never {
  throw fail("not_found", `no such multipart upload is in progress (never started, completed, aborted or expired); start one with POST ${BASE} {"name": …}`);
}

multipart.post(BASE, requireWrite, async (c) => {
  const request = parsedOrFail(parseUnnamedStartRequest(jsonBody(await readText(c.req.raw, MAX_START_BODY_BYTES, "the request body"))));
  const settings = settingsOf(c.env);
  const partSize = unnamedPartSize(request.partSize, settings.maxNarUploadBytes);
  const now = Date.now();
  const { upload, resumed, parts } = await startUpload(
    storesOf(c),
    writerOf(c.req.raw),
    { nar: null, name: request.name },
    { partSize, size: null, partCount: null },
    now,
    (u) => (request.partSize === undefined || u.partSize === request.partSize) && u.partSize <= settings.maxNarUploadBytes && now - u.started < MULTIPART_MAX_AGE_MS,
  );
  const body: UnnamedUploadStarted = {
    stored: false,
    name: request.name,
    uploadId: handleOf(upload),
    partSize: upload.partSize,
    maxParts: maxPartsOf(upload.partSize),
    parts: parts.map((p) => ({ partNumber: p.partNumber, size: p.size })),
    maxRequestBytes: settings.maxNarUploadBytes,
    verify: settings.multipartVerify,
  };
  return c.json(body, resumed ? 200 : 201);
});

multipart.put(`${BASE}/:part{[0-9]+}`, requireWrite, async (c) => {
  const { partNumber, handle, request, length } = partRequest(c);
  const found = await unnamedUpload(await readUpload(c.env.DB, handle).then((u) => (u === null ? null : { upload: u })), handle);
  if (found === null) noUnnamedUpload();
  const { upload } = found;
  if (partNumber > maxPartsOf(upload.partSize)) {
    throw fail("bad_request", `this upload takes parts 1 to ${maxPartsOf(upload.partSize)} (a NAR of at most ${MAX_VERIFIED_BYTES} bytes in parts of ${upload.partSize})`);
  }
  if (length < 1 || length > upload.partSize) {
    throw fail("bad_request", `part ${partNumber} cannot have ${length} bytes: every part has ${upload.partSize} bytes but the last, which has 1 to ${upload.partSize}`);
  }
  const part = await receivePart(storesOf(c), upload, partNumber, request.body, length);
  return c.json({ partNumber: part.partNumber, size: part.size } satisfies PartAnswer);
});

multipart.post(`${BASE}/complete`, requireWrite, async (c) => {
  const handle = handleOfRequest(c);
  const request = parsedOrFail(parseCompleteRequest(jsonBody(await readText(c.req.raw, MAX_START_BODY_BYTES, "the request body"))));
  const nar = narOfFile(request.nar);
  if (request.size > MAX_VERIFIED_BYTES) {
    throw fail("payload_too_large", `this cache checks every NAR's sha256 as it stores it, in one R2 put, which takes at most ${MAX_VERIFIED_BYTES} bytes; this NAR has ${request.size}`);
  }
  const found = await unnamedUpload(await readUploadWithParts(c.env.DB, handle), handle);
  if (found === null) {
    // A retried completion whose first attempt succeeded finds the NAR stored.
    const stored = await headObject(c.env.CACHE, nar.key);
    if (stored === null) noUnnamedUpload();
    return c.json({ key: nar.key, size: stored.size, stored: true } satisfies CompleteAnswer);
  }
  const { upload, parts } = found;
  const partCount = partCountOf(request.size, upload.partSize);
  if (request.parts !== partCount) {
    throw fail("bad_request", `a NAR of ${request.size} bytes in parts of ${upload.partSize} is ${partCount} parts, not ${request.parts}`);
  }
  if (partCount > maxPartsOf(upload.partSize)) throw fail("bad_request", `this upload takes at most ${maxPartsOf(upload.partSize)} parts`);
  const layout: PartLayout = { size: request.size, partSize: upload.partSize, partCount };
  for (const p of parts) {
    const expected = expectedPartSize(layout, p.partNumber);
    if (expected !== null && expected !== p.size) {
      throw fail("unprocessable", `part ${p.partNumber} has ${p.size} bytes where this NAR's part ${p.partNumber} has ${expected}: send it again with ${expected} bytes`);
    }
  }
  const finished = await finishUpload(storesOf(c), upload, parts, nar.file, layout, nar.sha256Hex);
  if (finished.storedBefore) return c.json({ key: nar.key, size: finished.size, stored: true } satisfies CompleteAnswer);
  await edgeInvalidate(new URL(c.req.url), nar.key);
  return c.json({ key: nar.key, size: finished.size } satisfies CompleteAnswer, 201);
});

multipart.delete(BASE, requireWrite, async (c) => {
  const handle = handleOfRequest(c);
  const upload = await readUpload(c.env.DB, handle);
  const found = await unnamedUpload(upload === null ? null : { upload }, handle);
  if (found !== null) await discardUpload(storesOf(c), found.upload);
  return new Response(null, { status: 204 });
});

multipart.post(`${BASE}/:file`, requireWrite, async (c) => {
  const nar = narOf(c);
  const { size, partSize } = parseStart(await readText(c.req.raw, MAX_START_BODY_BYTES, "the request body"));
  const settings = settingsOf(c.env);
  const layout = layoutFor(size, settings.maxNarUploadBytes, partSize);
  if (size > MAX_VERIFIED_BYTES) {
    throw fail(
      "payload_too_large",
      `this cache checks every NAR's sha256 as it stores it, in one R2 put, which takes at most ${MAX_VERIFIED_BYTES} bytes; this NAR has ${size} (compress it harder, or keep it out of the cache)`,
    );
  }
  const bucket = c.env.CACHE;
  const stored = await headObject(bucket, nar.key);
  if (stored !== null) {
    if (stored.size !== size) throw fail("bad_request", `this NAR is stored with ${stored.size} bytes; a file of ${size} bytes cannot hash to its name`);
    return c.json({ key: nar.key, stored: true, size } satisfies StartAnswer);
  }
  const now = Date.now();
  const { upload, resumed, parts } = await startUpload(storesOf(c), writerOf(c.req.raw), { nar: nar.file, name: null }, layout, now, (u) =>
    resumable(u, size, partSize, settings, now),
  );
  const body: StartAnswer = {
    key: nar.key,
    stored: false,
    uploadId: handleOf(upload),
    ...fixedLayout(upload),
    parts: parts.map((p) => ({ partNumber: p.partNumber, size: p.size })),
    maxRequestBytes: settings.maxNarUploadBytes,
    verify: settings.multipartVerify,
  };
  return c.json(body, resumed ? 200 : 201);
});

multipart.put(`${BASE}/:file/:part{[0-9]+}`, requireWrite, async (c) => {
  const nar = narOf(c);
  const { partNumber, handle, request, length } = partRequest(c);
  const upload = (await trackedUpload(c, nar, handle)) ?? noUpload(nar.key);
  const layout = fixedLayout(upload);
  const expected = expectedPartSize(layout, partNumber);
  if (expected === null) throw fail("bad_request", `this upload has ${layout.partCount} parts; there is no part ${partNumber}`);
  if (length !== expected) {
    const which = partNumber === layout.partCount ? "the last part" : `every part but the last (${layout.partCount})`;
    throw fail("bad_request", `part ${partNumber} must have ${expected} bytes, not ${length}: ${which} has ${expected} bytes in this upload`);
  }
  const part = await receivePart(storesOf(c), upload, partNumber, request.body, length);
  return c.json({ partNumber: part.partNumber, size: part.size } satisfies PartAnswer);
});

multipart.post(`${BASE}/:file/complete`, requireWrite, async (c) => {
  const nar = narOf(c);
  const handle = handleOfRequest(c);
  const found = await trackedWithParts(c, nar, handle);
  if (found === null) {
    // A retried completion whose first attempt succeeded finds the NAR stored.
    const stored = await headObject(c.env.CACHE, nar.key);
    if (stored === null) noUpload(nar.key);
    return c.json({ key: nar.key, size: stored.size, stored: true } satisfies CompleteAnswer);
  }
  const finished = await finishUpload(storesOf(c), found.upload, found.parts, nar.file, fixedLayout(found.upload), nar.sha256Hex);
  if (finished.storedBefore) return c.json({ key: nar.key, size: finished.size, stored: true } satisfies CompleteAnswer);
  await edgeInvalidate(new URL(c.req.url), nar.key);
  return c.json({ key: nar.key, size: finished.size } satisfies CompleteAnswer, 201);
});

multipart.delete(`${BASE}/:file`, requireWrite, async (c) => {
  const nar = narOf(c);
  const handle = handleOfRequest(c);
  const upload = await trackedUpload(c, nar, handle);
  if (upload !== null) await discardUpload(storesOf(c), upload);
  return new Response(null, { status: 204 });
});
