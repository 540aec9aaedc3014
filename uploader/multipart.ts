// Large NARs through the Worker's multipart API (src/routes/multipart.ts): start (or
// resume), the missing parts in parallel, complete.
//
// The compressed NAR already waits in a temp file (upload.ts), because its name (the
// FileHash) is known only once it is fully compressed. Each part is read from that file
// when it is sent, so memory is a few stream buffers per part in flight, whatever the
// NAR's size, and a part that fails is re-read and retried alone by the HTTP client.
//
// Resuming needs nothing local: compression is deterministic, so a re-run produces the
// same file under the same name, and the Worker's start answer lists the parts it already
// has of this token's upload of that name (each write token has uploads of its own, so a
// re-run with another token starts afresh). Only the missing ones are sent. The Worker
// stores the NAR only if the assembled file hashes to its name.
//
// When a part or the completion is refused for good (a 4xx: the cache will not take it),
// the upload is aborted so its parts do not linger. When the cache is unreachable or
// failing (network errors, 5xx after the retries), the parts received are kept for a re-run
// to reuse; the Worker aborts uploads nobody finishes after a day.
import { createReadStream } from "node:fs";
import { Transform, pipeline, type Readable } from "node:stream";
import { LIMITS_PATH, parseLimitsAnswer, parseStartAnswer, type StartRequest, type UploadStarted } from "../src/api/multipart.ts";
import { mapConcurrent } from "../src/concurrency.ts";
import { AuthError, HttpError, UploaderError, EXIT_CACHE } from "./errors.ts";
import type { HttpClient } from "./http.ts";
import { READ_CHUNK_BYTES } from "./nar-writer.ts";

/**
 * Parts of one NAR in flight at once. Each part request lasts until R2 has stored the
 * part, so a few in parallel keep a fast uplink busy; memory per part is a few 1 MiB
 * read buffers, not the part.
 */
export const MULTIPART_CONCURRENCY = 4;

/** R2's smallest part: a file this small never needs (nor can use) more than one part. */
const MIN_PART_BYTES = 5 * 1024 * 1024;

/** What the cache accepts per request (GET /_api/v1/limits). */
export interface UploadLimits {
  /** Largest request body: NARs above this go in parts. */
  maxRequestBytes: number;
}

/** What the upload needs of the start's answer (src/api/multipart.ts); `stored` when the cache has the NAR. */
type StartAnswer = Pick<UploadStarted, "uploadId" | "size" | "partSize" | "partCount" | "parts"> & { stored: boolean };

/** Hooks for progress reporting (progress.ts). */
export interface TransferObserver {
  /** Wraps each request body, e.g. a byte counter. */
  sent?: (() => Transform) | undefined;
  /** A message for --verbose. */
  detail?: ((message: string) => void) | undefined;
  /** A message always shown (a resumed upload). */
  log?: ((message: string) => void) | undefined;
}

const limitsOf = new WeakMap<HttpClient, Promise<UploadLimits | null>>();

/**
 * The cache's request limit, asked once per client; null when the cache has no multipart
 * API (another kind of binary cache, or an older Worker): then everything is one PUT.
 */
export function uploadLimits(http: HttpClient): Promise<UploadLimits | null> {
  let limits = limitsOf.get(http);
  if (limits === undefined) {
    limits = fetchLimits(http);
    limitsOf.set(http, limits);
    // A failed query (e.g. a rejected token) is asked again by the next upload.
    limits.catch(() => limitsOf.delete(http));
  }
  return limits;
}

async function fetchLimits(http: HttpClient): Promise<UploadLimits | null> {
  const res = await http.request({ method: "GET", path: LIMITS_PATH, accept: [404, 405] });
  if (res.status !== 200) return null;
  return parseLimitsAnswer(parseJson(res.body));
}

/** Whether a file of `size` bytes goes in parts to a cache with these limits. */
export function needsParts(size: number, limits: UploadLimits | null): boolean {
  return limits !== null && size > limits.maxRequestBytes && size > MIN_PART_BYTES;
}

/**
 * Uploads `file` (`size` bytes) as the NAR `key` (`nar/<file>`) in parts, resuming an
 * upload in progress. Returns the request body bytes sent (0 when the cache had it all).
 */
export async function uploadInParts(http: HttpClient, key: string, file: string, size: number, observe: TransferObserver = {}): Promise<number> {
  const base = `_api/v1/multipart/${key}`;
  const start = await startUpload(http, base, size);
  if (start.stored) {
    observe.detail?.(`${key}: already in the cache`);
    return 0;
  }
  const have = new Set(start.parts.map((p) => p.partNumber));
  const todo = Array.from({ length: start.partCount }, (_, i) => i + 1).filter((n) => !have.has(n));
  if (have.size > 0) (observe.log ?? observe.detail)?.(`${key}: resuming an earlier upload, ${have.size} of ${start.partCount} parts already in the cache`);
  const id = encodeURIComponent(start.uploadId);
  let sent = 0;
  let done = have.size;
  try {
    await mapConcurrent(todo, MULTIPART_CONCURRENCY, async (n) => {
      const offset = (n - 1) * start.partSize;
      const length = Math.min(start.partSize, start.size - offset);
      await http.request({
        method: "PUT",
        path: `${base}/${n}?uploadId=${id}`,
        headers: { "content-type": "application/octet-stream" },
        body: {
          length,
          open: () => {
            const part = createReadStream(file, { start: offset, end: offset + length - 1, highWaterMark: READ_CHUNK_BYTES });
            const counted = counting(part, (bytes) => (sent += bytes));
            // The callback form returns the last stream and destroys them all on error.
            return observe.sent ? pipeline(counted, observe.sent(), () => {}) : counted;
          },
        },
      });
      done++;
      observe.detail?.(`${key}: sent part ${n} (${done}/${start.partCount})`);
    });
    await http.request({ method: "POST", path: `${base}/complete?uploadId=${id}` });
  } catch (err) {
    if (refusedForGood(err)) {
      await http.request({ method: "DELETE", path: `${base}?uploadId=${id}`, accept: [404, 409] }).catch(() => {});
      throw err;
    }
    if (err instanceof UploaderError && !(err instanceof AuthError)) {
      throw new UploaderError(
        `${err.message} (${done} of ${start.partCount} parts are in the cache; a re-run of the push sends only the others)`,
        err.exitCode,
        err.hint,
        { cause: err },
      );
    }
    throw err;
  }
  return sent;
}

async function startUpload(http: HttpClient, base: string, size: number): Promise<StartAnswer> {
  const body = Buffer.from(JSON.stringify({ size } satisfies StartRequest), "utf8");
  const res = await http.request({
    method: "POST",
    path: base,
    headers: { "content-type": "application/json" },
    body: { length: body.length, open: () => body },
  });
  const answer = parseStartAnswer(parseJson(res.body), size);
  if (answer === null) {
    throw new UploaderError(`${http.url(base)}: unexpected answer to the start of a multipart upload`, EXIT_CACHE, "is --cache pointing at a nix-edge-cache Worker?");
  }
  if (answer.stored) return { stored: true, uploadId: "", size, partSize: size, partCount: 0, parts: [] };
  return answer;
}

/**
 * Whether a failed multipart upload should be aborted: a 4xx other than auth, timeouts and
 * rate limits means sending again would be refused again. Anything else (network, 5xx, a
 * rejected token) may pass, so the parts are kept for a re-run.
 */
export function refusedForGood(err: unknown): boolean {
  if (!(err instanceof HttpError) || err instanceof AuthError) return false;
  return err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429;
}

function parseJson(bytes: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(bytes.toString("utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** `source` with every chunk's length reported to `count` as it flows. */
export function counting(source: Readable, count: (bytes: number) => void): Readable {
  return pipeline(
    source,
    new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        count(chunk.length);
        callback(null, chunk);
      },
    }),
    () => {},
  );
}
