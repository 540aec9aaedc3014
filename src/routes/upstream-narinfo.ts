// GET/HEAD /<hash32>.narinfo when the bucket does not have it and upstreams are
// aggregated (narinfo.ts calls this on a miss): the first upstream's narinfo, byte for
// byte except its URL, which points to the NAR through this cache (upstream/nar-url.ts).
// Signatures stay the upstream's, so clients keep trusting the upstream's key. A GET with
// write-through on also starts copying the path into the bucket after the response, as
// far as the day's write-through budget allows (upstream/write-through.ts); a spent budget
// never changes the answer.
//
// Response header `X-Upstream-Cache: <upstream URL>` says where the narinfo came from
// (narinfos from the bucket have none).

import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { cacheControlOf } from "../http/representation.ts";
import { isPublicCache } from "../middleware/auth.ts";
import type { BackgroundTasks } from "../storage/edge-cache.ts";
import { SubrequestBudget } from "../upstream/budget.ts";
import { lookupNarInfo, type LookupContext } from "../upstream/lookup.ts";
import { clientNarUrl } from "../upstream/nar-url.ts";
import { replaceNarInfoUrl } from "../nix/narinfo.ts";
import { writeThroughEnabled } from "../upstream/settings.ts";
import { writeThrough } from "../upstream/write-through.ts";

/** Names the upstream a narinfo was served from. */
export const UPSTREAM_HEADER = "X-Upstream-Cache";

/** Answers a narinfo request for `hash` from the aggregated upstreams, or throws not_found. */
export async function serveUpstreamNarInfo(request: Request, env: WorkerEnv, ctx: BackgroundTasks, hash: string): Promise<Response> {
  const { aggregation } = settingsOf(env);
  const budget = new SubrequestBudget();
  const lookup: LookupContext = {
    aggregation,
    budget,
    memo: { origin: new URL(request.url).origin, fingerprint: aggregation.fingerprint, budget },
    defer: (work) => ctx.waitUntil(work),
  };
  const hit = await lookupNarInfo(hash, lookup);
  if (hit === null) throw fail("not_found", "no such narinfo in this cache or its upstream caches");

  if (request.method === "GET" && writeThroughEnabled(aggregation)) {
    // The background copy awaits its own memo writes: it already runs inside waitUntil.
    ctx.waitUntil(writeThrough(hit, env.CACHE, env.DB, { ...lookup, defer: undefined }));
  }
  const body = replaceNarInfoUrl(hit.text, clientNarUrl(hit.upstream, hit.nar));
  const headers = new Headers({
    "Content-Type": CONTENT_TYPE.narinfo,
    "Cache-Control": cacheControlOf("narinfo", !isPublicCache(env)),
    "Content-Length": String(new TextEncoder().encode(body).byteLength),
    [UPSTREAM_HEADER]: hit.upstream.url,
  });
  return new Response(request.method === "HEAD" ? null : body, { status: 200, headers });
}
