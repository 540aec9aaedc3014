// GET requests to a remote source (an HTTP binary cache, an S3 endpoint), with the
// uploader's retry policy (http.ts: network errors, 408, 429 and 5xx, backoff with jitter,
// Retry-After). Uses fetch, whose response body is a stream: a NAR of several GB flows
// through without being held in memory. Requests to S3 are signed per attempt (SigV4
// signatures carry a timestamp).
import { Readable } from "node:stream";
import { DEFAULT_MAX_ATTEMPTS, backoffMs, isRetryable, retryAfterMs, type RetryEvent } from "../http.ts";
import { messageOf } from "../errors.ts";
import { SourceError } from "./cache-source.ts";

/** Error bodies are quoted in messages up to this length. */
const MAX_ERROR_BODY_CHARS = 300;

export interface SourceHttpOptions {
  /** Signs a request (S3); absent for anonymous sources. */
  sign?: ((url: URL) => Promise<Request>) | undefined;
  onRetry?: ((event: RetryEvent) => void) | undefined;
  maxAttempts?: number;
  retryBaseMs?: number;
}

/** A GET's answer: its status, headers and streaming body. */
export interface SourceResponse {
  status: number;
  headers: Headers;
  body: Readable;
  /** The body as text (error bodies, small documents). */
  text(): Promise<string>;
}

export class SourceHttp {
  readonly #sign: SourceHttpOptions["sign"];
  readonly #onRetry: SourceHttpOptions["onRetry"];
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number | undefined;

  constructor(options: SourceHttpOptions = {}) {
    this.#sign = options.sign;
    this.#onRetry = options.onRetry;
    this.#maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    this.#retryBaseMs = options.retryBaseMs;
  }

  /**
   * GETs `url`, retrying transient failures. Resolves with any final answer (the caller
   * decides what 403/404 mean); throws SourceError when the source cannot be reached or
   * keeps failing.
   */
  async get(url: URL): Promise<SourceResponse> {
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        const req = this.#sign ? await this.#sign(url) : new Request(url);
        res = await fetch(req);
      } catch (err) {
        const reason = describeFetchError(err);
        if (attempt >= this.#maxAttempts) {
          throw new SourceError(`GET ${url}: ${reason} (after ${attempt} attempts)`, "check the source's URL and the network", { cause: err });
        }
        await this.#wait(url, attempt, backoffMs(attempt, this.#retryBaseMs), reason);
        continue;
      }
      if (isRetryable(res.status) && attempt < this.#maxAttempts) {
        await res.body?.cancel().catch(() => {});
        await this.#wait(url, attempt, retryAfterMs(res.headers.get("retry-after") ?? undefined) ?? backoffMs(attempt, this.#retryBaseMs), `HTTP ${res.status}`);
        continue;
      }
      return wrap(res);
    }
  }

  async #wait(url: URL, attempt: number, delayMs: number, reason: string): Promise<void> {
    this.#onRetry?.({ method: "GET", url: String(url), attempt, delayMs, reason });
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
}

function wrap(res: Response): SourceResponse {
  const body = res.body ? Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>) : Readable.from([]);
  return {
    status: res.status,
    headers: res.headers,
    body,
    text: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString("utf8");
    },
  };
}

/** A short quote of an error answer's body, for messages. */
export async function errorSnippet(res: SourceResponse): Promise<string> {
  let text = "";
  try {
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString("utf8");
      if (text.length > MAX_ERROR_BODY_CHARS * 4) break;
    }
  } catch {
    // the body is only a courtesy
  }
  res.body.destroy();
  const oneLine = text.replace(/\s+/g, " ").trim();
  return oneLine.length > MAX_ERROR_BODY_CHARS ? `${oneLine.slice(0, MAX_ERROR_BODY_CHARS)}…` : oneLine;
}

function describeFetchError(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : undefined;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ECONNREFUSED") return "connection refused";
  if (code === "ENOTFOUND") return "host not found";
  return cause ? `${code ? `${code}: ` : ""}${messageOf(cause)}` : messageOf(err);
}
