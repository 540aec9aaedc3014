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

import { Hono } from "hono";
import { STORE_DIR } from "../nix/store-path.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { CACHE_INFO_CACHE_CONTROL, CONTENT_TYPE } from "../http/representation.ts";
import { requireWrite } from "../middleware/auth.ts";
import { aggregatedUpstreams } from "../upstream/settings.ts";

export const cacheInfo = new Hono<{ Bindings: WorkerEnv }>();

/** The document, from the settings. `WantMassQuery: 1`: lookups here are cheap HEADs. */
export function cacheInfoText(priority: number, upstreams: readonly string[] = []): string {
  const aggregated = upstreams.length === 0 ? "" : `Upstreams: ${upstreams.join(" ")}\n`;
  return `StoreDir: ${STORE_DIR}\nWantMassQuery: 1\nPriority: ${priority}\n${aggregated}`;
}

cacheInfo.get("/nix-cache-info", (c) => {
  const settings = settingsOf(c.env);
  return new Response(cacheInfoText(settings.priority, aggregatedUpstreams(c.env)), {
    headers: { "Content-Type": CONTENT_TYPE.cacheInfo, "Cache-Control": CACHE_INFO_CACHE_CONTROL },
  });
});

cacheInfo.put("/nix-cache-info", requireWrite, () => new Response(null, { status: 204 }));
