// The closed set of ways a request can fail, and the one place where a failure becomes an
// HTTP response (called from app.ts's onError).
//
// Handlers and helpers throw `AppError(kind, message)`; the message is written for the
// person running `nix copy` or the uploader (what is wrong, what to do) and is the only
// text that reaches the client. Anything else thrown (a bug, an R2 outage) becomes a
// generic 500 whose body never carries a stack trace, an R2 key or exception text.
//
// Bad input is always a 4xx: Nix disables a substituter for a while after a 5xx, and
// Nix 2.8 answers a 5xx to a PUT by retrying without a body and hanging (PROTOCOL §5.6).

/** Every failure the Worker reports on purpose. */
export type ErrorKind =
  | "bad_request" // malformed input: a path, header, body or document that cannot be right
  | "unauthorized" // missing, malformed or wrong credentials
  | "forbidden" // valid credentials, but for something another token owns (a multipart upload)
  | "not_found" // no such object, or no such route
  | "conflict" // a different narinfo is already stored for this path
  | "length_required" // an upload without Content-Length (R2 needs a known length)
  | "payload_too_large" // over a named body or batch limit
  | "unsupported_media_type" // a request body with a Content-Encoding we do not decode
  | "unprocessable" // well-formed, but refers to objects that are not (yet) in the cache
  | "too_many_requests" // over a per-token quota of things in progress (multipart uploads)
  | "misconfigured" // the deployment's settings are wrong (names the setting)
  | "storage_unavailable"; // R2 failed for a reason that is not the request's fault

const STATUS: Record<ErrorKind, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  length_required: 411,
  payload_too_large: 413,
  unsupported_media_type: 415,
  unprocessable: 422,
  too_many_requests: 429,
  misconfigured: 500,
  storage_unavailable: 503,
};

/** The realm Nix (curl) and browsers see in the 401 challenge. */
export const AUTH_REALM = "nix-edge-cache";

/** Seconds a client should wait before retrying after a storage failure. */
const STORAGE_RETRY_AFTER_SECONDS = 5;

/** An intended failure: a kind (which fixes the status) and a message for the client. */
export class AppError extends Error {
  override name = "AppError";
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

/** Shorthand used by handlers: `throw fail("bad_request", "…")`. */
export function fail(kind: ErrorKind, message: string): AppError {
  return new AppError(kind, message);
}

/** The HTTP status of an error kind. */
export function statusOf(kind: ErrorKind): number {
  return STATUS[kind];
}

function extraHeaders(kind: ErrorKind): Record<string, string> {
  switch (kind) {
    case "unauthorized":
      return { "WWW-Authenticate": `Basic realm="${AUTH_REALM}", charset="UTF-8"` };
    case "storage_unavailable":
      return { "Retry-After": String(STORAGE_RETRY_AFTER_SECONDS) };
    case "bad_request":
    case "forbidden":
    case "not_found":
    case "conflict":
    case "length_required":
    case "payload_too_large":
    case "unsupported_media_type":
    case "unprocessable":
    case "too_many_requests":
    case "misconfigured":
      return {};
  }
}

/**
 * JSON error body `{"error": "..."}`; never cached, since most errors are transient. That
 * includes 404: the typical miss is `nix copy` asking for a narinfo it is about to upload,
 * and Nix itself already remembers misses for an hour.
 */
export function errorResponse(kind: ErrorKind, message: string): Response {
  return new Response(JSON.stringify({ error: message }) + "\n", {
    status: statusOf(kind),
    headers: {
      "Content-Type": "application/json; charset=utf-8",
      "Cache-Control": "no-store",
      ...extraHeaders(kind),
    },
  });
}

/** Turns anything thrown into a response; unexpected errors are logged, not shown. */
export function responseForError(err: unknown): Response {
  if (err instanceof AppError) return errorResponse(err.kind, err.message);
  console.error("unexpected error", err);
  return new Response(JSON.stringify({ error: "internal error; the operator can find details in the Worker logs" }) + "\n", {
    status: 500,
    headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" },
  });
}
