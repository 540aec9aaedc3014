// Multipart uploads of NARs larger than one request may carry (Cloudflare's Free and Pro
// plans refuse request bodies over 100 MB), on top of R2's multipart uploads. Writers only.
//
//   GET    /_api/v1/limits
//          → 200 {"maxRequestBytes", "minPartBytes", "maxParts", "defaultPartBytes",
//                 "multipartVerify"}          what a client needs to choose single or multipart
//   POST   /_api/v1/multipart/nar/<file>            body {"size": <FileSize>, "partSize"?: n}
//          → 201 {"key", "stored": false, "uploadId", "size", "partSize", "partCount",
//                 "parts": [], "maxRequestBytes", "verify"}                    a new upload
//          → 200 the same with the parts already received, [{"partNumber", "size"}]: the
//                upload of this NAR in progress, resumed (same size, verify mode and
//                request limit, started less than MULTIPART_MAX_AGE_MS ago; otherwise the
//                old one is aborted and a new one begun)
//          → 200 {"key", "stored": true, "size"}      the NAR is already stored
//   PUT    /_api/v1/multipart/nar/<file>/<partNumber>?uploadId=<id>   (Content-Length)
//          → 200 {"partNumber", "size"}     part n of the layout: partSize bytes, the last
//                                            one the rest; sending a part again replaces it
//   POST   /_api/v1/multipart/nar/<file>/complete?uploadId=<id>
//          → 201 {"key", "size"}   every part received with its size, adding up to the
//                                  declared size (else 422 naming the missing parts); with
//                                  MULTIPART_VERIFY=sha256 also the file's sha256
//          → 200 {"key", "size", "stored": true}   completed already (a retried request)
//   DELETE /_api/v1/multipart/nar/<file>?uploadId=<id>     → 204   abort
//
// <file> is `<filehash52>.nar[.ext]` as for a single PUT. The NAR appears under nar/ only
// when the upload completes, so a narinfo cannot point at it before. Part bodies are
// streamed into R2 (no Worker CPU spent on them); completion costs a few R2 operations.
// 404 means "no such upload (any more): start again"; 409 "another upload replaced this one".

import { Hono, type Context } from "hono";
import { toHex } from "../nix/encoding.ts";
import { SHA256_BYTES } from "../nix/hash.ts";
import { decodeNix32 } from "../nix/nix32.ts";
import { settingsOf, type Settings, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { contentEncoding, readText, requireLength } from "../http/body.ts";
import { requireWrite } from "../middleware/auth.ts";
import { headObject } from "../storage/bucket.ts";
import { edgeInvalidate } from "../storage/edge-cache.ts";
import { narKey, parseNarFileName } from "../storage/keys.ts";
import {
  beginUpload,
  discardUpload,
  finishUpload,
  MAX_VERIFIED_BYTES,
  MULTIPART_MAX_AGE_MS,
  readUpload,
  receivePart,
  recordedParts,
  type TrackedUpload,
} from "../storage/multipart.ts";
import { checkComplete, DEFAULT_PART_BYTES, expectedPartSize, layoutFor, MAX_PARTS, MIN_PART_BYTES } from "../upload/part-layout.ts";

type Ctx = Context<{ Bindings: WorkerEnv }>;

export const multipart = new Hono<{ Bindings: WorkerEnv }>();

const BASE = "/_api/v1/multipart/nar";
/** Largest start request body: `{"size": …, "partSize": …}` is ~50 bytes. */
const MAX_START_BODY_BYTES = 4096;
/** Longest accepted upload id (R2's are a few hundred characters). */
const MAX_UPLOAD_ID_CHARS = 1024;

const PART_TOO_LARGE_HINT = "send parts of the partSize the start of the upload returned (the uploader does)";

/** The NAR named by the route's :file, with the sha256 its name carries; 400 otherwise. */
function narOf(c: Ctx): { key: string; sha256Hex: string } {
  const file = c.req.param("file") ?? "";
  const name = parseNarFileName(file);
  if (name === null) {
    throw fail("bad_request", "a multipart upload is for nar/<52-char nix32 sha256 of the file>.nar[.xz|.bz2|.zst|.br|.lz4|.lzip]");
  }
  try {
    return { key: narKey(file), sha256Hex: toHex(decodeNix32(name.fileHash, SHA256_BYTES)) };
  } catch {
    throw fail("bad_request", "the NAR file name is not a valid nix32 sha256 (it must start with 0 or 1)");
  }
}

function uploadIdOf(c: Ctx): string {
  const id = c.req.query("uploadId");
  if (id === undefined || id === "" || id.length > MAX_UPLOAD_ID_CHARS) {
    throw fail("bad_request", "pass the uploadId the start of the upload returned: ?uploadId=<id>");
  }
  return id;
}

/** The tracked upload `uploadId` of `key`; 404 when there is none, 409 when another one replaced it. */
async function trackedUpload(c: Ctx, key: string, uploadId: string): Promise<TrackedUpload | null> {
  const upload = await readUpload(c.env.CACHE, key);
  if (upload !== null && upload.uploadId !== uploadId) {
    throw fail("conflict", `another upload of ${key} replaced this one (it was too old, or declared another size); start again`);
  }
  return upload;
}

function noUpload(key: string): never {
  throw fail("not_found", `no multipart upload of ${key} is in progress (never started, completed, aborted or expired); start one with POST ${BASE}/${key.slice("nar/".length)}`);
}

function parseStart(text: string): { size: number; partSize?: number } {
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
    upload.verify === settings.multipartVerify &&
    upload.partSize <= settings.maxNarUploadBytes &&
    now - upload.started < MULTIPART_MAX_AGE_MS
  );
}

multipart.get("/_api/v1/limits", requireWrite, (c) => {
  const settings = settingsOf(c.env);
  return c.json({
    maxRequestBytes: settings.maxNarUploadBytes,
    minPartBytes: MIN_PART_BYTES,
    maxParts: MAX_PARTS,
    defaultPartBytes: DEFAULT_PART_BYTES,
    multipartVerify: settings.multipartVerify,
  });
});

multipart.post(`${BASE}/:file`, requireWrite, async (c) => {
  const nar = narOf(c);
  const { size, partSize } = parseStart(await readText(c.req.raw, MAX_START_BODY_BYTES, "the request body"));
  const settings = settingsOf(c.env);
  const layout = layoutFor(size, settings.maxNarUploadBytes, partSize);
  if (settings.multipartVerify === "sha256" && size > MAX_VERIFIED_BYTES) {
    throw fail(
      "payload_too_large",
      `this cache verifies multipart NARs by their sha256 (MULTIPART_VERIFY=sha256), which works up to ${MAX_VERIFIED_BYTES} bytes (one R2 put); this one has ${size}`,
    );
  }
  const bucket = c.env.CACHE;
  const stored = await headObject(bucket, nar.key);
  if (stored !== null) {
    if (stored.size !== size) throw fail("bad_request", `this NAR is stored with ${stored.size} bytes; a file of ${size} bytes cannot hash to its name`);
    return c.json({ key: nar.key, stored: true, size });
  }
  const now = Date.now();
  let upload = await readUpload(bucket, nar.key);
  if (upload !== null && !resumable(upload, size, partSize, settings, now)) {
    await discardUpload(bucket, upload);
    upload = null;
  }
  const resumed = upload !== null;
  upload ??= await beginUpload(bucket, nar.key, layout, settings.multipartVerify, now);
  const parts = resumed ? await recordedParts(bucket, upload) : [];
  const body = {
    key: nar.key,
    stored: false,
    uploadId: upload.uploadId,
    size: upload.size,
    partSize: upload.partSize,
    partCount: upload.partCount,
    parts: parts.filter((p) => expectedPartSize(upload, p.partNumber) === p.size).map((p) => ({ partNumber: p.partNumber, size: p.size })),
    maxRequestBytes: settings.maxNarUploadBytes,
    verify: upload.verify,
  };
  return c.json(body, resumed ? 200 : 201);
});

multipart.put(`${BASE}/:file/:part{[0-9]+}`, requireWrite, async (c) => {
  const nar = narOf(c);
  const partText = c.req.param("part");
  const partNumber = /^[1-9][0-9]{0,4}$/.test(partText) ? Number(partText) : 0;
  if (partNumber < 1 || partNumber > MAX_PARTS) throw fail("bad_request", `part numbers go from 1 to ${MAX_PARTS}`);
  const uploadId = uploadIdOf(c);
  const request = c.req.raw;
  contentEncoding(request, [], "NAR part");
  const length = requireLength(request, settingsOf(c.env).maxNarUploadBytes, PART_TOO_LARGE_HINT);
  const upload = (await trackedUpload(c, nar.key, uploadId)) ?? noUpload(nar.key);
  const expected = expectedPartSize(upload, partNumber);
  if (expected === null) throw fail("bad_request", `this upload has ${upload.partCount} parts; there is no part ${partNumber}`);
  if (length !== expected) {
    const which = partNumber === upload.partCount ? "the last part" : `every part but the last (${upload.partCount})`;
    throw fail("bad_request", `part ${partNumber} must have ${expected} bytes, not ${length}: ${which} has ${expected} bytes in this upload`);
  }
  const part = await receivePart(c.env.CACHE, upload, partNumber, request.body, length);
  return c.json({ partNumber: part.partNumber, size: part.size });
});

multipart.post(`${BASE}/:file/complete`, requireWrite, async (c) => {
  const nar = narOf(c);
  const uploadId = uploadIdOf(c);
  const bucket = c.env.CACHE;
  const upload = await trackedUpload(c, nar.key, uploadId);
  if (upload === null) {
    // A retried completion whose first attempt succeeded finds the NAR stored.
    const stored = await headObject(bucket, nar.key);
    if (stored === null) noUpload(nar.key);
    return c.json({ key: nar.key, size: stored.size, stored: true });
  }
  const parts = checkComplete(upload, await recordedParts(bucket, upload));
  const size = await finishUpload(bucket, upload, parts, nar.sha256Hex);
  await edgeInvalidate(new URL(c.req.url), nar.key);
  return c.json({ key: nar.key, size }, 201);
});

multipart.delete(`${BASE}/:file`, requireWrite, async (c) => {
  const nar = narOf(c);
  const uploadId = uploadIdOf(c);
  const upload = await trackedUpload(c, nar.key, uploadId);
  if (upload !== null) await discardUpload(c.env.CACHE, upload);
  return new Response(null, { status: 204 });
});
