// /nix-cache-info: the file Nix reads first from every binary cache (PROTOCOL §5.2).
//
//   StoreDir: /nix/store
//   WantMassQuery: 1
//   Priority: <PRIORITY>
//   Upstreams: <url> <url> …      only with AGGREGATE_UPSTREAMS: the aggregated caches, in
//                                 the order they are asked (Nix ignores unknown keys)
//
// Always public, even for a private cache: it reveals only settings, and Nix 2.35+ treats
// a 401 on it as an error. Nix PUTs it when its GET looked absent; an authorised PUT is
// accepted and ignored, since the Worker generates the file from its settings.
//
// GET /_api/v1/cache: the same settings and more for the uploader (`use`, `login`,
// `doctor`): the public keys, whether reads are private, the Worker's clock, the request
// limit, and what the presented token may do. The shape is src/api/cache-description.ts.
// Public as well; never cached, since `access` depends on the Authorization header.

import { Hono } from "hono";
import { API_VERSION, CACHE_DESCRIPTION_PATH, SERVICE_NAME, type CacheDescription } from "../api/cache-description.ts";
import { STORE_DIR } from "../nix/store-path.ts";
import { formatPublicKey, publicKeyOf } from "../nix/signature.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { AppError } from "../errors.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { CACHE_INFO_CACHE_CONTROL } from "../http/representation.ts";
import { authorise, requireWrite } from "../middleware/auth.ts";
import { aggregatedUpstreams } from "../upstream/settings.ts";
import { keepCacheInfoObject } from "../storage/cache-info-object.ts";

export const cacheInfo = new Hono<{ Bindings: WorkerEnv }>();

/** The document, from the settings. `WantMassQuery: 1`: lookups here are cheap HEADs. */
export function cacheInfoText(priority: number, upstreams: readonly string[] = []): string {
  const aggregated = upstreams.length === 0 ? "" : `Upstreams: ${upstreams.join(" ")}\n`;
  return `StoreDir: ${STORE_DIR}\nWantMassQuery: 1\nPriority: ${priority}\n${aggregated}`;
}

cacheInfo.get("/nix-cache-info", (c) => {
  const settings = settingsOf(c.env);
  // The bucket's own copy, for reads without the Worker (storage/cache-info-object.ts).
  c.executionCtx.waitUntil(keepCacheInfoObject(c.env.CACHE, bucketCacheInfoText(settings.priority)));
  return new Response(cacheInfoText(settings.priority, aggregatedUpstreams(c.env)), {
    headers: { "Content-Type": CONTENT_TYPE.cacheInfo, "Cache-Control": CACHE_INFO_CACHE_CONTROL },
  });
});

/**
 * The `nix-cache-info` object stored in the bucket, for clients reading it directly: no
 * `Upstreams` (the bucket holds only this cache's own paths).
 */
export function bucketCacheInfoText(priority: number): string {
  return cacheInfoText(priority);
}

cacheInfo.put("/nix-cache-info", requireWrite, () => new Response(null, { status: 204 }));

/** Whether the request's credentials allow `access` (a refusal is an answer, not an error). */
async function allows(request: Request, env: WorkerEnv, access: "read" | "write" | "admin"): Promise<boolean> {
  try {
    await authorise(request, env, access);
    return true;
  } catch (err) {
    if (err instanceof AppError && err.kind === "unauthorized") return false;
    throw err;
  }
}

cacheInfo.get(`/${CACHE_DESCRIPTION_PATH}`, async (c) => {
  const settings = settingsOf(c.env);
  const keys = [
    ...(settings.signingKey === null ? [] : [formatPublicKey(publicKeyOf(settings.signingKey))]),
    ...settings.trustedKeys.map(formatPublicKey),
  ];
  const [read, write, admin] = await Promise.all([
    allows(c.req.raw, c.env, "read"),
    allows(c.req.raw, c.env, "write"),
    allows(c.req.raw, c.env, "admin"),
  ]);
  const body: CacheDescription = {
    service: SERVICE_NAME,
    apiVersion: API_VERSION,
    storeDir: STORE_DIR,
    priority: settings.priority,
    publicKeys: [...new Set(keys)],
    private: settings.readToken !== null,
    time: Date.now(),
    maxRequestBytes: settings.maxNarUploadBytes,
    access: { read, write, admin },
  };
  return c.json(body, 200, { "Cache-Control": "private, no-store", Vary: "Authorization" });
});
