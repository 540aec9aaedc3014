// The wire contract of the multipart upload API (routes/multipart.ts, whose header lists
// the requests and statuses) and of `GET /_api/v1/limits`: what the Worker answers and the
// uploader (uploader/multipart.ts) reads. Pure and shared like src/nix/: the route builds
// its answers with these types, the uploader checks them with the parsers below, so
// neither side re-declares the other's shape.

/** The path of the limits, below the cache's URL (relative: caches may live under a prefix). */
export const LIMITS_PATH = "_api/v1/limits";

/** Multipart uploads of NARs: `<this>/<file>` for an upload of nar/<file>. */
export const MULTIPART_NAR_PATH = "_api/v1/multipart/nar";

/** `GET /_api/v1/limits`: what a client needs to choose between one PUT and parts. */
export interface LimitsAnswer {
  /** Largest request body: a NAR PUT, or one part. */
  maxRequestBytes: number;
  /** R2's smallest part (every part but the last). */
  minPartBytes: number;
  /** R2's most parts per upload. */
  maxParts: number;
  /** The part size the Worker chooses when the client does not ask for one. */
  defaultPartBytes: number;
  /** What completion checks: R2 checks the sha256 in the NAR's name (the only mode). */
  multipartVerify: "sha256";
}

/** `POST /_api/v1/multipart/nar/<file>`: the whole file's size, and optionally the part size. */
export interface StartRequest {
  size: number;
  partSize?: number;
}

/** A part the Worker has received for an upload. */
export interface ReceivedPart {
  partNumber: number;
  size: number;
}

/** The start of an upload begun (201) or resumed (200). */
export interface UploadStarted {
  /** `nar/<file>`. */
  key: string;
  stored: false;
  /** Opaque to clients: passed back as `?uploadId=` on every later request. */
  uploadId: string;
  size: number;
  /** Every part but the last has this many bytes; the last has the rest. */
  partSize: number;
  partCount: number;
  /** Parts already received (a resumed upload): only the others need sending. */
  parts: ReceivedPart[];
  maxRequestBytes: number;
  verify: "sha256";
}

/** The start of an upload of a NAR the cache already has (200): nothing to send. */
export interface AlreadyStored {
  key: string;
  stored: true;
  size: number;
}

export type StartAnswer = UploadStarted | AlreadyStored;

/** `PUT …/<partNumber>?uploadId=`: the part received. */
export type PartAnswer = ReceivedPart;

/** `POST …/complete?uploadId=`: 201 stored now, or 200 with `stored: true` when it was stored before. */
export interface CompleteAnswer {
  key: string;
  size: number;
  stored?: true;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A positive safe integer. */
export function isCount(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x > 0;
}

/** The request limit from a limits answer; null when the document is not one (another kind of cache). */
export function parseLimitsAnswer(doc: unknown): Pick<LimitsAnswer, "maxRequestBytes"> | null {
  return isObject(doc) && isCount(doc.maxRequestBytes) ? { maxRequestBytes: doc.maxRequestBytes } : null;
}

function parseParts(v: unknown): ReceivedPart[] | null {
  if (!Array.isArray(v)) return null;
  const parts: ReceivedPart[] = [];
  for (const p of v) {
    if (!isObject(p) || !isCount(p.partNumber) || !isCount(p.size)) return null;
    parts.push({ partNumber: p.partNumber, size: p.size });
  }
  return parts;
}

/**
 * A start answer for a file of `size` bytes, checked: a layout that cuts exactly `size`
 * bytes, parts with numbers and sizes. Null when the document is not one.
 */
export function parseStartAnswer(doc: unknown, size: number): StartAnswer | null {
  if (!isObject(doc) || typeof doc.key !== "string") return null;
  if (doc.stored === true) return isCount(doc.size) ? { key: doc.key, stored: true, size: doc.size } : null;
  if (doc.stored !== false || typeof doc.uploadId !== "string" || doc.uploadId === "" || doc.size !== size) return null;
  if (!isCount(doc.partSize) || !isCount(doc.partCount) || doc.partCount !== Math.ceil(size / doc.partSize) || !isCount(doc.maxRequestBytes)) return null;
  const parts = parseParts(doc.parts);
  if (parts === null) return null;
  return {
    key: doc.key,
    stored: false,
    uploadId: doc.uploadId,
    size,
    partSize: doc.partSize,
    partCount: doc.partCount,
    parts,
    maxRequestBytes: doc.maxRequestBytes,
    verify: "sha256",
  };
}

// Uploads named at completion: the client compresses and sends parts at once, so the NAR's
// file name (the sha256 of the compressed bytes) and its size are known only at the end.

/** What a client may call an upload named at completion: printable, no slash, at most 200 characters. */
export const UPLOAD_NAME_PATTERN = /^[A-Za-z0-9._+=:@-]{1,200}$/;

/** `POST /_api/v1/multipart/nar` (no file): the client's name for the upload, and optionally the part size. */
export interface UnnamedStartRequest {
  /**
   * The client's name for the upload, unique among its token's uploads: a start with the
   * same name resumes it. It should name the bytes (e.g. the store path's hash part, its
   * narHash and the compression), so that resumed parts are parts of the same file.
   */
  name: string;
  partSize?: number;
}

/** The start of an upload named at completion, begun (201) or resumed (200). */
export interface UnnamedUploadStarted {
  stored: false;
  name: string;
  uploadId: string;
  /** Every part but the last must have exactly this many bytes; the last one 1..partSize. */
  partSize: number;
  /** Highest part number the upload takes. */
  maxParts: number;
  /** Parts already received (a resumed upload), with their sizes. */
  parts: ReceivedPart[];
  maxRequestBytes: number;
  verify: "sha256";
}

/** `POST /_api/v1/multipart/nar/complete?uploadId=`: the NAR the parts make, its size and number of parts. */
export interface CompleteRequest {
  /** `<filehash52>.nar[.ext]`: the parts are stored at nar/<this> if they hash to it. */
  nar: string;
  size: number;
  /** ceil(size / partSize): parts 1..parts make the NAR. */
  parts: number;
}

/** A parsed request body, or what is wrong with it. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** Checks the body of a start without a file name. */
export function parseUnnamedStartRequest(doc: unknown): Parsed<UnnamedStartRequest> {
  if (!isObject(doc)) return { ok: false, error: 'send {"name": <your name for the upload>, "partSize"?: <bytes>}' };
  const { name, partSize } = doc;
  if (typeof name !== "string" || !UPLOAD_NAME_PATTERN.test(name)) {
    return { ok: false, error: "name must be 1 to 200 characters of A-Z a-z 0-9 . _ + = : @ - (e.g. <hash part>-<narHash>-<compression>)" };
  }
  if (partSize === undefined) return { ok: true, value: { name } };
  if (!isCount(partSize)) return { ok: false, error: "partSize must be a positive whole number of bytes" };
  return { ok: true, value: { name, partSize } };
}

/** Checks the body of a completion that names the NAR (the file name's form is the route's to check). */
export function parseCompleteRequest(doc: unknown): Parsed<CompleteRequest> {
  const shape = 'send {"nar": "<filehash52>.nar[.ext]", "size": <bytes>, "parts": <number of parts>}';
  if (!isObject(doc)) return { ok: false, error: shape };
  const { nar, size, parts } = doc;
  if (typeof nar !== "string") return { ok: false, error: shape };
  if (!isCount(size)) return { ok: false, error: "size must be a positive whole number of bytes" };
  if (!isCount(parts)) return { ok: false, error: "parts must be a positive whole number" };
  return { ok: true, value: { nar, size, parts } };
}

/** The answer to a start without a file name, checked; null when the document is not one. */
export function parseUnnamedStartAnswer(doc: unknown): UnnamedUploadStarted | null {
  if (!isObject(doc) || doc.stored !== false || typeof doc.name !== "string" || typeof doc.uploadId !== "string" || doc.uploadId === "") return null;
  if (!isCount(doc.partSize) || !isCount(doc.maxParts) || !isCount(doc.maxRequestBytes)) return null;
  const parts = parseParts(doc.parts);
  if (parts === null) return null;
  return {
    stored: false,
    name: doc.name,
    uploadId: doc.uploadId,
    partSize: doc.partSize,
    maxParts: doc.maxParts,
    parts,
    maxRequestBytes: doc.maxRequestBytes,
    verify: "sha256",
  };
}
