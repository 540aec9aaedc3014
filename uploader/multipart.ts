// Large NARs through the Worker's multipart API (src/routes/multipart.ts): start (or
// resume), the missing parts in parallel, complete.
//
// Two kinds of upload. A NAR from the store is sent while it is compressed
// (PartsWhileWriting): its name (the FileHash) is known only once it is fully compressed,
// so the upload is started under the uploader's own name for those bytes and named at
// completion. A NAR already compressed into its temp file (`uploader import`, or a cache
// without uploads named at completion) goes by its name (uploadInParts). Either way each
// part is read from the temp file when it is sent, so memory is a few stream buffers per
// part in flight, whatever the NAR's size, and a part that fails is re-read and retried
// alone by the HTTP client.
//
// Resuming needs nothing local: compression is deterministic, so a re-run produces the
// same file under the same names, and the Worker's start answer lists the parts it already
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
import {
  LIMITS_PATH,
  MULTIPART_NAR_PATH,
  parseLimitsAnswer,
  parseStartAnswer,
  parseUnnamedStartAnswer,
  type CompleteRequest,
  type StartRequest,
  type UnnamedStartRequest,
  type UploadStarted,
} from "../src/api/multipart.ts";
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

/**
 * An upload named at completion whose parts leave while the file is still being written
 * (path-upload.ts compresses into the file): the NAR's name, the sha256 of the compressed
 * bytes, is known only at the end, so the upload is started under the client's name for
 * it (`name`, which names the bytes: a re-run with the same name resumes it and sends only
 * the parts the cache does not have) and named by the completion. Each part is read back
 * from the file once it is written; at most MULTIPART_CONCURRENCY are in flight, and
 * `written` waits while that many are, so compression never runs far ahead of the network.
 */
export class PartsWhileWriting {
  readonly #http: HttpClient;
  readonly #file: string;
  readonly #observe: TransferObserver;
  readonly #id: string;
  readonly #partSize: number;
  readonly #maxParts: number;
  /** Parts the cache already holds (a resumed upload), by number: their sizes. */
  readonly #held: Map<number, number>;
  readonly #inFlight = new Set<Promise<void>>();
  #nextPart = 1;
  #failure: unknown = undefined;
  #sent = 0;
  #sentParts = 0;

  private constructor(http: HttpClient, file: string, observe: TransferObserver, id: string, partSize: number, maxParts: number, held: Map<number, number>) {
    this.#http = http;
    this.#file = file;
    this.#observe = observe;
    this.#id = id;
    this.#partSize = partSize;
    this.#maxParts = maxParts;
    this.#held = held;
  }

  /**
   * Starts (or resumes) the upload called `name`; null when the cache has no uploads named
   * at completion (an older Worker: 404/405, or an answer of another shape), so the caller
   * uploads the finished file the other way.
   */
  static async start(http: HttpClient, name: string, file: string, observe: TransferObserver = {}): Promise<PartsWhileWriting | null> {
    const request: UnnamedStartRequest = { name };
    const body = Buffer.from(JSON.stringify(request), "utf8");
    const res = await http.request({
      method: "POST",
      path: MULTIPART_NAR_PATH,
      headers: { "content-type": "application/json" },
      body: { length: body.length, open: () => body },
      accept: [404, 405],
    });
    if (res.status === 404 || res.status === 405) return null;
    const answer = parseUnnamedStartAnswer(parseJson(res.body));
    if (answer === null) return null;
    const held = new Map(answer.parts.map((p) => [p.partNumber, p.size]));
    observe.detail?.(`${name}: sending parts of ${answer.partSize} bytes while compressing (upload ${name}, named at completion)`);
    if (held.size > 0) (observe.log ?? observe.detail)?.(`${name}: resuming an earlier upload, ${held.size} parts already in the cache`);
    return new PartsWhileWriting(http, file, observe, encodeURIComponent(answer.uploadId), answer.partSize, answer.maxParts, held);
  }

  /** Request body bytes sent so far, retries included. */
  get sent(): number {
    return this.#sent;
  }

  /**
   * The file now holds `size` bytes: sends every whole part among them not sent yet, and
   * returns once fewer than MULTIPART_CONCURRENCY parts are in flight. Throws a part's
   * failure.
   */
  async written(size: number): Promise<void> {
    while (this.#nextPart * this.#partSize <= size) this.#send(this.#nextPart++, this.#partSize);
    while (this.#inFlight.size >= MULTIPART_CONCURRENCY) await Promise.race(this.#inFlight);
    if (this.#failure !== undefined) throw this.#failure;
  }

  /**
   * The file is complete (`size` bytes, named `nar/<nar>`): sends the rest, then completes
   * the upload under that name (the Worker stores it only if the bytes hash to it). Returns
   * the request body bytes sent in all.
   */
  async finish(size: number, nar: string): Promise<number> {
    await this.written(size);
    const parts = Math.max(1, Math.ceil(size / this.#partSize));
    if (this.#nextPart <= parts) this.#send(this.#nextPart++, size - (parts - 1) * this.#partSize);
    await this.#settle();
    if (this.#failure !== undefined) throw this.#failure;
    const request: CompleteRequest = { nar, size, parts };
    const body = Buffer.from(JSON.stringify(request), "utf8");
    await this.#http.request({
      method: "POST",
      path: `${MULTIPART_NAR_PATH}/complete?uploadId=${this.#id}`,
      headers: { "content-type": "application/json" },
      body: { length: body.length, open: () => body },
    });
    return this.#sent;
  }

  /** Waits for the parts in flight, then aborts the upload (its parts are dropped). */
  async abort(): Promise<void> {
    await this.#settle();
    await this.#http.request({ method: "DELETE", path: `${MULTIPART_NAR_PATH}?uploadId=${this.#id}`, accept: [404, 409] }).catch(() => {});
  }

  /** Waits for the parts in flight (their failures are kept for finish/written). */
  async #settle(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.race(this.#inFlight);
  }

  #send(n: number, length: number): void {
    if (this.#failure !== undefined) return;
    if (n > this.#maxParts) {
      this.#failure = new UploaderError(`this NAR needs more than the ${this.#maxParts} parts of ${this.#partSize} bytes the cache takes in one upload`, EXIT_CACHE);
      return;
    }
    if (this.#held.get(n) === length) return;
    const offset = (n - 1) * this.#partSize;
    const sending = this.#http
      .request({
        method: "PUT",
        path: `${MULTIPART_NAR_PATH}/${n}?uploadId=${this.#id}`,
        headers: { "content-type": "application/octet-stream" },
        body: {
          length,
          open: () => {
            const part = createReadStream(this.#file, { start: offset, end: offset + length - 1, highWaterMark: READ_CHUNK_BYTES });
            const counted = counting(part, (bytes) => (this.#sent += bytes));
            return this.#observe.sent ? pipeline(counted, this.#observe.sent(), () => {}) : counted;
          },
        },
      })
      .then(
        () => {
          this.#sentParts++;
          this.#observe.detail?.(`sent part ${n} (${this.#sentParts} sent)`);
        },
        (err: unknown) => {
          this.#failure ??= err;
        },
      )
      .finally(() => this.#inFlight.delete(sending));
    this.#inFlight.add(sending);
  }
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
