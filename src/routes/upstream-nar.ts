// GET/HEAD /upstream/<id>/nar/<file>: NARs of aggregated upstreams, which the narinfos
// served from them point to (upstream/nar-url.ts).
//
// When the name has this cache's NAR key shape and the bucket holds that file (write-
// through or a push stored it; the name is its sha256), it is served from the bucket like
// any NAR. Otherwise the upstream's response is streamed through, never buffered, with
// the client's Range. An upstream that does not deliver (absent, 5xx, timeout, garbage
// status) is a 404: a 5xx would make Nix give up on this whole cache for a while, while
// its own paths are fine.

import { Hono } from "hono";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { AppError, fail } from "../errors.ts";
import { serveObject } from "../http/object-response.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { cacheControlOf } from "../http/representation.ts";
import { isPublicCache, requireRead } from "../middleware/auth.ts";
import { SubrequestBudget } from "../upstream/budget.ts";
import { upstreamFetch } from "../upstream/client.ts";
import { parseProxiedNar, type ProxiedNar } from "../upstream/nar-url.ts";

export const upstreamNar = new Hono<{ Bindings: WorkerEnv }>();

/**
 * How long an upstream may take to start answering a NAR request. The body then streams
 * without a deadline of ours: Nix's own stall timeout covers it.
 */
export const NAR_RESPONSE_TIMEOUT_MS = 10_000;

/** Request headers passed on to the upstream: resuming a download needs them. */
const FORWARDED_REQUEST_HEADERS = ["Range", "If-Range"] as const;
/** Response headers passed back to the client. */
const FORWARDED_RESPONSE_HEADERS = ["Content-Range", "Accept-Ranges", "ETag", "Last-Modified"] as const;

function isNotFound(err: unknown): boolean {
  return err instanceof AppError && err.kind === "not_found";
}

async function fromUpstream(request: Request, env: WorkerEnv, target: ProxiedNar): Promise<Response> {
  const headers: Record<string, string> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = request.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  const outcome = await upstreamFetch(target.upstream, target.url, {
    method: request.method === "HEAD" ? "HEAD" : "GET",
    // parseProxiedNar only names URLs in the upstream's nar/ directory.
    scope: "nar",
    headers,
    timeoutMs: NAR_RESPONSE_TIMEOUT_MS,
    timeoutCovers: "headers",
    budget: new SubrequestBudget(),
  });
  if (outcome.kind === "failed") {
    console.warn(`upstream ${target.upstream.url} did not deliver ${target.url}: ${outcome.reason}`);
    throw fail("not_found", `upstream ${target.upstream.url} did not deliver this NAR`);
  }
  const res = outcome.response;
  if (res.status === 416) {
    await res.body?.cancel();
    const range = res.headers.get("Content-Range");
    return new Response(null, { status: 416, headers: { "Cache-Control": "no-store", ...(range === null ? {} : { "Content-Range": range }) } });
  }
  if (res.status !== 200 && res.status !== 206) {
    await res.body?.cancel();
    if (res.status !== 404 && res.status !== 410 && res.status !== 403) {
      console.warn(`upstream ${target.upstream.url} answered HTTP ${res.status} for ${target.url}`);
    }
    throw fail("not_found", `upstream ${target.upstream.url} does not have this NAR`);
  }
  const out = new Headers({
    "Content-Type": CONTENT_TYPE.nar,
    "Cache-Control": cacheControlOf("nar", !isPublicCache(env)),
  });
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = res.headers.get(name);
    if (value !== null) out.set(name, value);
  }
  // fetch() decodes a Content-Encoding the upstream used; the length is then unknown.
  const length = res.headers.get("Content-Length");
  if (length !== null && res.headers.get("Content-Encoding") === null) out.set("Content-Length", length);
  return new Response(request.method === "HEAD" ? null : res.body, { status: res.status, headers: out });
}

upstreamNar.get("/upstream/*", requireRead, async (c) => {
  const request = c.req.raw;
  const target = parseProxiedNar(settingsOf(c.env).aggregation.upstreams, new URL(request.url));
  if (target === null) throw fail("not_found", "no such NAR in this cache or its upstream caches");
  if (target.bucketKey !== null) {
    try {
      return await serveObject(request, c.env, c.executionCtx, { kind: "nar", key: target.bucketKey });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return fromUpstream(request, c.env, target);
});
