// The uploader's one HTTP client: every request to the cache goes through `HttpClient`.
//
// It adds `Authorization: Bearer <token>`, sends bodies with an exact Content-Length (the
// Worker refuses NAR uploads without one, and never chunked), keeps connections alive, and
// retries with exponential backoff and jitter on network errors, 408, 429 and 5xx,
// honouring Retry-After. Every request the uploader makes is idempotent (PUTs of
// content-addressed objects and of multipart parts, a read-only POST, multipart starts that
// resume and completions that answer "stored" when repeated, aborts), so retrying any of
// them is safe.
// Statuses that mean "do something else" become typed errors with a hint saying what.
//
// It uses node:http rather than fetch: fetch cannot stream a request body with a fixed
// Content-Length (it switches to chunked encoding), and NARs must never be held in memory.
import * as http from "node:http";
import * as https from "node:https";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import { AuthError, HttpError, NetworkError, TooLargeError, UsageError, messageOf } from "./errors.ts";

/** Attempts per request, the first one included (Nix 2.8 also tries 5 times). */
export const DEFAULT_MAX_ATTEMPTS = 5;
/** First backoff delay; doubled on each retry (Nix uses 250 ms too). */
export const DEFAULT_RETRY_BASE_MS = 250;
/** Longest wait between attempts, also the cap applied to a server's Retry-After. */
export const MAX_RETRY_DELAY_MS = 30_000;
/**
 * A connection with no traffic in either direction for this long is given up (and the
 * request retried). Generous, because the Worker only answers a NAR upload once R2 has
 * stored the whole body.
 */
export const IDLE_TIMEOUT_MS = 120_000;
/** Response bodies are error messages, narinfos or small JSON: keep at most this much. */
const MAX_RESPONSE_BYTES = 1 << 20;
/** Server messages are quoted in errors up to this length. */
const MAX_MESSAGE_CHARS = 500;

/** A request body: its exact length, and how to (re)open it for each attempt. */
export interface RequestBody {
  length: number;
  open: () => Readable | Uint8Array;
}

export interface HttpRequest {
  method: "GET" | "HEAD" | "PUT" | "POST" | "DELETE";
  /** Relative to the cache URL, without a leading slash (the URL may have a path prefix). */
  path: string;
  headers?: Record<string, string>;
  body?: RequestBody;
  /** Statuses that are an answer rather than an error (e.g. 404 on a HEAD). */
  accept?: readonly number[];
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Reported before each retry, for --verbose output. */
export interface RetryEvent {
  method: string;
  url: string;
  attempt: number;
  delayMs: number;
  reason: string;
}

export interface HttpClientOptions {
  /** The cache's base URL, http(s), possibly with a path prefix. */
  baseUrl: string;
  token?: string | undefined;
  maxAttempts?: number;
  retryBaseMs?: number;
  /** Parallel connections to keep open (the push's -j plus one for planning). */
  maxSockets?: number;
  userAgent?: string;
  onRetry?: (event: RetryEvent) => void;
}

/** A network-level failure of one attempt (no HTTP answer). */
class AttemptFailed extends Error {
  /** What to do, for failures that another attempt would only repeat (TLS, DNS). */
  readonly permanentHint: string | undefined;
  constructor(message: string, options: ErrorOptions & { permanentHint?: string | undefined }) {
    super(message, options);
    this.permanentHint = options.permanentHint;
  }
}

export class HttpClient {
  readonly baseUrl: URL;
  readonly #token: string | undefined;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  readonly #userAgent: string;
  readonly #onRetry: ((event: RetryEvent) => void) | undefined;
  readonly #agent: http.Agent;

  constructor(options: HttpClientOptions) {
    this.baseUrl = parseCacheUrl(options.baseUrl);
    this.#token = options.token;
    this.#maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    this.#retryBaseMs = options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
    this.#userAgent = options.userAgent ?? "nix-edge-cache-uploader";
    this.#onRetry = options.onRetry;
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 8 };
    this.#agent = this.baseUrl.protocol === "https:" ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  }

  /** The absolute URL of a cache-relative path. */
  url(path: string): URL {
    return new URL(path, this.baseUrl);
  }

  /** Sends a request, retrying transient failures; throws a typed error for the rest. */
  async request(req: HttpRequest): Promise<HttpResponse> {
    const url = this.url(req.path);
    for (let attempt = 1; ; attempt++) {
      let res: HttpResponse;
      try {
        res = await this.#attempt(url, req);
      } catch (err) {
        if (!(err instanceof AttemptFailed)) throw err;
        if (err.permanentHint !== undefined) {
          throw new NetworkError(`${req.method} ${url}: ${err.message}`, { cause: err.cause, hint: err.permanentHint });
        }
        if (attempt >= this.#maxAttempts) {
          throw new NetworkError(`${req.method} ${url}: ${err.message} (after ${attempt} attempts)`, { cause: err.cause });
        }
        await this.#wait(req.method, url, attempt, this.#backoff(attempt), err.message);
        continue;
      }
      if ((res.status >= 200 && res.status < 300) || req.accept?.includes(res.status)) return res;
      if (isRetryable(res.status) && attempt < this.#maxAttempts) {
        const delay = retryAfterMs(res.headers["retry-after"]) ?? this.#backoff(attempt);
        await this.#wait(req.method, url, attempt, delay, `HTTP ${res.status}`);
        continue;
      }
      throw this.#errorFor(req.method, url, res);
    }
  }

  /** Closes idle keep-alive connections so the process can exit. */
  close(): void {
    this.#agent.destroy();
  }

  #attempt(url: URL, req: HttpRequest): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      const headers: Record<string, string> = {
        "user-agent": this.#userAgent,
        accept: "*/*",
        ...req.headers,
      };
      if (this.#token) headers.authorization = `Bearer ${this.#token}`;
      if (req.body) headers["content-length"] = String(req.body.length);
      const send = url.protocol === "https:" ? https.request : http.request;
      const r = send(url, { method: req.method, headers, agent: this.#agent, timeout: IDLE_TIMEOUT_MS }, (res) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        res.on("data", (chunk: Buffer) => {
          if (kept < MAX_RESPONSE_BYTES) {
            chunks.push(chunk);
            kept += chunk.length;
          }
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", (err) => reject(new AttemptFailed(`connection lost while reading the answer: ${err.message}`, { cause: err })));
      });
      r.on("timeout", () => r.destroy(new Error(`no traffic for ${IDLE_TIMEOUT_MS / 1000} s`)));
      // Once the response has been read this is a no-op (the promise is settled).
      r.on("error", (err) => reject(new AttemptFailed(describeNetworkError(err), { cause: err, permanentHint: permanentFailureHint(err, url) })));
      if (!req.body) {
        r.end();
        return;
      }
      let data: Readable | Uint8Array;
      try {
        data = req.body.open();
      } catch (err) {
        r.destroy();
        reject(err);
        return;
      }
      if (data instanceof Uint8Array) {
        r.end(data);
      } else {
        // A failing body source (e.g. an unreadable temp file) aborts the request; the
        // server may also answer early (413) and close, which surfaces here too.
        pipeline(data, r).catch((err: unknown) => r.destroy(err instanceof Error ? err : new Error(String(err))));
      }
    });
  }

  #backoff(attempt: number): number {
    return backoffMs(attempt, this.#retryBaseMs);
  }

  async #wait(method: string, url: URL, attempt: number, delayMs: number, reason: string): Promise<void> {
    this.#onRetry?.({ method, url: String(url), attempt, delayMs, reason });
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }

  #errorFor(method: string, url: URL, res: HttpResponse): HttpError {
    const message = serverMessage(res);
    const where = String(url);
    switch (res.status) {
      case 401:
        return new AuthError(
          method,
          where,
          401,
          message,
          this.#token
            ? "the cache did not accept the token: check --token / NIX_CACHE_TOKEN against the Worker's WRITE_TOKEN secrets"
            : "no token given: pass --token or set NIX_CACHE_TOKEN to one of the Worker's WRITE_TOKEN secrets",
        );
      case 403:
        // The Worker answers 403 to a token that touches another token's multipart upload;
        // its message says so. Anything else in front of it (an access policy) says its own.
        return new AuthError(
          method,
          where,
          403,
          message,
          /another token/.test(message)
            ? "another pipeline's token started this upload: run the push again (it starts its own upload)"
            : "the cache refused this token for this request: check that it is a write token (WRITE_TOKEN or WRITE_TOKEN_*)",
        );
      case 413:
        return new TooLargeError(
          method,
          where,
          413,
          message,
          "the cache refused a body this large (Cloudflare accepts at most 100 MB per request on the Free and Pro plans): " +
            "try a stronger compression (--compression xz, or a higher --compression-level), or raise the limit",
        );
      default:
        return new HttpError(method, where, res.status, message);
    }
  }
}

/** Checks and normalises a cache URL so relative paths resolve below it. */
export function parseCacheUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`the cache URL "${raw}" is not a URL`, "give it as http(s)://host[:port][/prefix]");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`the cache URL must be http or https, got "${url.protocol}"`);
  }
  if (url.search || url.hash) {
    throw new UsageError(`the cache URL must not have a query or fragment: ${raw}`);
  }
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

/** Exponential backoff with "equal jitter": half fixed, half random, capped. */
export function backoffMs(attempt: number, baseMs: number = DEFAULT_RETRY_BASE_MS): number {
  const ceiling = Math.min(MAX_RETRY_DELAY_MS, baseMs * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** 408, 429 and 5xx are worth retrying; 501, 505 and 511 will not change (as in Nix). */
export function isRetryable(status: number): boolean {
  if (status === 408 || status === 429) return true;
  return status >= 500 && status !== 501 && status !== 505 && status !== 511;
}

/** Retry-After as delta-seconds or an HTTP date, capped; undefined when absent or bad. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  let ms: number;
  if (/^\d+$/.test(trimmed)) {
    ms = Number(trimmed) * 1000;
  } else {
    const date = Date.parse(trimmed);
    if (Number.isNaN(date)) return undefined;
    ms = date - now;
  }
  return Math.min(MAX_RETRY_DELAY_MS, Math.max(0, ms));
}

/** The server's explanation: `{"error": "..."}` or plain text, shortened. */
function serverMessage(res: HttpResponse): string {
  const text = res.body.toString("utf8").trim();
  if (!text) return "";
  // Not a cache's answer (a proxy's or a web server's error page): name it, not its markup.
  if (/^text\/html\b/i.test(String(res.headers["content-type"] ?? "")) || /^<(!doctype|html)/i.test(text)) {
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(text)?.[1]?.trim();
    return `an HTML page${title ? ` ("${title.slice(0, 100)}")` : ""}, not a cache's answer: is the URL the cache's?`;
  }
  let message = text;
  if (text.startsWith("{")) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === "object" && "error" in parsed && typeof parsed.error === "string") {
        message = parsed.error;
      }
    } catch {
      // not JSON after all: quote it as text
    }
  }
  message = message.replace(/\s+/g, " ");
  return message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
}

/** TLS handshakes, certificates and HTTP parsing fail the same way on every attempt. */
const TLS_ERROR = /^(EPROTO|ERR_SSL_|ERR_TLS_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_)/;

/**
 * What to do about a network failure that retrying would only repeat, or undefined for
 * the ones worth retrying (refused or reset connections, timeouts: a server restarting).
 */
export function permanentFailureHint(err: Error, url: URL): string | undefined {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  const plain = new URL(url.href);
  plain.protocol = "http:";
  if (url.protocol === "https:" && (/wrong version number|packet length too long|EPROTO/i.test(`${code} ${err.message}`))) {
    return `the server does not speak TLS on this port: if the cache is served over plain HTTP, use ${plain.origin}`;
  }
  if (TLS_ERROR.test(code)) return `the TLS connection to ${url.host} failed (${code}): check the URL's host name and the server's certificate`;
  if (code === "ENOTFOUND") return `no host named ${url.hostname}: check the cache URL's spelling`;
  if (code.startsWith("HPE_")) {
    return url.protocol === "http:" ? `the server did not answer in HTTP: if the cache is served over TLS, use https://${url.host}` : "the server did not answer in HTTP: is this the cache's URL?";
  }
  return undefined;
}

function describeNetworkError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ECONNREFUSED") return "connection refused (is the cache running at this address?)";
  if (code === "ENOTFOUND") return "host not found";
  if (code === "EPROTO") return "EPROTO: the TLS handshake failed (the answer is not TLS)";
  return code ? `${code}: ${messageOf(err)}` : messageOf(err);
}
