// HTTP requests to an aggregated upstream: its credentials, a timeout, the request's
// subrequest budget, and redirects followed by hand so credentials never leave the
// directory of the object asked for (a NAR may redirect to a presigned object-storage URL).
//
// Credentials of a private upstream (AGGREGATE_UPSTREAMS_NETRC) go only to URLs under the
// upstream's base URL plus the object's directory: `<base>/nar/` for NARs, `<base>/` for
// narinfos. A redirect anywhere else (another origin, or the same origin outside that
// directory) is still followed, without them, and once a chain has left the directory
// no later hop gets them back: the upstream's other paths, and whoever it redirects to,
// never see the token.
//
// The outcome is a value, never an exception: "response" (any HTTP status) or "failed"
// (timeout, network error, too many redirects, budget exhausted), which the callers turn
// into "try the next upstream" or a 404, never a 5xx.

import { readBounded } from "../http/body.ts";
import { NAR_PREFIX } from "../storage/keys.ts";
import type { SubrequestBudget } from "./budget.ts";
import { ENCODED_SEPARATOR } from "./nar-url.ts";
import type { Upstream } from "./settings.ts";

/** Redirects followed per request; each costs a subrequest. Caches redirect NARs once. */
export const MAX_REDIRECTS = 2;

const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

export type UpstreamOutcome =
  | { kind: "response"; response: Response }
  /** No usable answer; `budgetExhausted` when the request was never sent for lack of budget. */
  | { kind: "failed"; reason: string; budgetExhausted?: boolean };

/**
 * The directory, under the upstream's base URL, of the object a request is for: where its
 * credentials may go. "cache" is the base itself (narinfos), "nar" its `nar/` directory.
 */
export type CredentialScope = "cache" | "nar";

export interface UpstreamRequest {
  method: "GET" | "HEAD";
  /** Where credentials may be sent, on the first request and after redirects. */
  scope: CredentialScope;
  /** Headers to send besides credentials (e.g. Range). */
  headers?: Record<string, string>;
  /**
   * Milliseconds before giving up. "whole" bounds the request and the body read (narinfos,
   * write-through); "headers" bounds only the wait for the response headers (NARs streamed
   * to a client, whose own stall timeout covers the body).
   */
  timeoutMs: number;
  timeoutCovers: "whole" | "headers";
  budget: SubrequestBudget;
}

/**
 * True when `url` lies in the upstream's directory for `scope`: same origin, a path under
 * `<base path>/` (plus `nar/`), no credentials of its own, and nothing a server might
 * decode into a step out of the directory (an encoded slash or backslash, a dot segment).
 */
export function inCredentialScope(upstream: Upstream, url: URL, scope: CredentialScope): boolean {
  const base = new URL(upstream.url + "/");
  if (url.origin !== base.origin || url.username !== "" || url.password !== "") return false;
  const dir = base.pathname + (scope === "nar" ? NAR_PREFIX : "");
  if (!url.pathname.startsWith(dir)) return false;
  const rest = url.pathname.slice(dir.length);
  if (ENCODED_SEPARATOR.test(rest)) return false;
  for (const segment of rest.split("/")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return false;
    }
    if (decoded === "." || decoded === "..") return false;
  }
  return true;
}

/** GET or HEAD `url` (absolute, on the upstream or where it redirects) for `upstream`. */
export async function upstreamFetch(upstream: Upstream, url: string, req: UpstreamRequest): Promise<UpstreamOutcome> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), req.timeoutMs);
  let current = url;
  // Cleared for good by the first hop outside the scope.
  let mayAuthorize = upstream.authorization !== null;
  try {
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      if (!req.budget.take()) return { kind: "failed", reason: "subrequest budget exhausted", budgetExhausted: true };
      const target = new URL(current);
      const headers = new Headers(req.headers);
      // Never a caller's header of that name: the only credentials sent are the upstream's.
      headers.delete("Authorization");
      mayAuthorize &&= inCredentialScope(upstream, target, req.scope);
      if (mayAuthorize) headers.set("Authorization", upstream.authorization!);
      const response = await fetch(target.href, { method: req.method, headers, redirect: "manual", signal: controller.signal });
      const location = response.headers.get("Location");
      if (REDIRECT_STATUSES.has(response.status) && location !== null) {
        await response.body?.cancel();
        const next = new URL(location, target);
        if (next.protocol !== "https:" && next.protocol !== "http:") return { kind: "failed", reason: "redirect to a non-HTTP URL" };
        current = next.href;
        continue;
      }
      if (req.timeoutCovers === "headers") clearTimeout(timer);
      return { kind: "response", response };
    }
    return { kind: "failed", reason: `more than ${MAX_REDIRECTS} redirects` };
  } catch (err) {
    clearTimeout(timer);
    const reason = controller.signal.aborted ? `no answer within ${req.timeoutMs} ms` : `network error (${err instanceof Error ? err.message : String(err)})`;
    return { kind: "failed", reason };
  }
}

export type SmallText =
  | { kind: "text"; text: string }
  /** Larger than the limit, or not UTF-8: the upstream answered, but nonsense. */
  | { kind: "garbage"; reason: string }
  /** The body stream broke off (e.g. the timeout fired mid-body). */
  | { kind: "failed"; reason: string };

/** Reads a small body as UTF-8 text, at most `limit` bytes. */
export async function readSmallText(response: Response, limit: number): Promise<SmallText> {
  const tooLarge: SmallText = { kind: "garbage", reason: `body larger than ${limit} bytes` };
  const declared = response.headers.get("Content-Length");
  if (declared !== null && Number(declared) > limit) {
    await response.body?.cancel();
    return tooLarge;
  }
  if (response.body === null) return { kind: "text", text: "" };
  let bytes: Uint8Array | null;
  try {
    bytes = await readBounded(response.body, limit);
  } catch (err) {
    return { kind: "failed", reason: `the body broke off (${err instanceof Error ? err.message : String(err)})` };
  }
  if (bytes === null) return tooLarge;
  try {
    return { kind: "text", text: new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes) };
  } catch {
    return { kind: "garbage", reason: "body is not UTF-8" };
  }
}
