// The Workers Cache API (caches.default) in front of R2, for public GETs of narinfos and
// NARs on a deployed custom domain. It saves R2 reads and latency for popular paths.
//
// Keys are the canonical URL `<origin>/<R2 key>` (no query, no credentials), so every
// spelling of a request shares one entry and the Worker can delete it when it writes the
// key. Staleness is bounded by s-maxage in each response's Cache-Control (representation.ts):
// a NAR can never change (its name is its sha256, verified by R2 on upload), so a day is
// safe; a narinfo can gain signatures or be deleted, so it lives a minute. The cache is
// per data centre and `delete` only purges the local one, hence the short narinfo TTL
// rather than reliance on purging.
//
// Skipped when READ_TOKEN makes the cache private (cached responses are served without a
// credential check) and on loopback hosts, where the Worker runs under `wrangler dev` or
// tests and a cache would only make behaviour harder to observe. On workers.dev the
// Cache API does nothing, which is harmless.

import type { WorkerEnv } from "../env.ts";
import { isPublicCache } from "../middleware/auth.ts";
import type { ObjectKind } from "./keys.ts";

/** What edgeStore needs from the ExecutionContext: work that may outlive the response. */
export interface BackgroundTasks {
  waitUntil(promise: Promise<unknown>): void;
}

/** Kinds worth caching at the edge: what every substitution reads. */
const EDGE_CACHED_KINDS: ReadonlySet<ObjectKind> = new Set(["narinfo", "nar"]);

/**
 * Largest object copied into the edge cache. Filling the cache tees the body, and a tee
 * buffers whatever the slower side has not read yet; 32 MiB keeps that far from the
 * isolate's 128 MB even with a slow client and several requests at once.
 */
export const EDGE_CACHE_MAX_BYTES = 32 * 1024 * 1024;

const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** Headers a cached response should honour when answering (caches.default implements them). */
const FORWARDED_CONDITIONS = ["Range", "If-None-Match"] as const;

/** The edge cache key for an object, or null when this request must not use the cache. */
export function edgeCacheKey(url: URL, env: WorkerEnv, kind: ObjectKind, key: string): string | null {
  if (typeof caches === "undefined" || !EDGE_CACHED_KINDS.has(kind)) return null;
  if (LOOPBACK_HOSTS.has(url.hostname) || !isPublicCache(env)) return null;
  return `${url.origin}/${key}`;
}

/** A cached response for the request (honouring its Range / If-None-Match), if any. */
export async function edgeMatch(cacheKey: string, request: Request): Promise<Response | undefined> {
  const headers = new Headers();
  for (const name of FORWARDED_CONDITIONS) {
    const value = request.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  try {
    return await caches.default.match(new Request(cacheKey, { headers }));
  } catch (err) {
    console.warn("edge cache match failed", err);
    return undefined;
  }
}

/** Copies a full 200 response into the edge cache in the background; returns what to send. */
export function edgeStore(ctx: BackgroundTasks, cacheKey: string, response: Response, size: number): Response {
  if (response.status !== 200 || size > EDGE_CACHE_MAX_BYTES) return response;
  const copy = response.clone();
  ctx.waitUntil(
    caches.default.put(cacheKey, copy).catch((err: unknown) => {
      console.warn("edge cache put failed", err);
    }),
  );
  return response;
}

/** Drops the local data centre's entry for a key the Worker just wrote. */
export async function edgeInvalidate(url: URL, key: string): Promise<void> {
  if (typeof caches === "undefined" || LOOPBACK_HOSTS.has(url.hostname)) return;
  try {
    await caches.default.delete(`${url.origin}/${key}`);
  } catch (err) {
    console.warn("edge cache delete failed", err);
  }
}
