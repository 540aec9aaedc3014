// /<hash32>.narinfo: the metadata Nix asks for first for every store path.
//
// GET/HEAD stream the stored document. PUT (routes below) validates the document against
// the cache before storing it; see upload/narinfo-acceptance.ts for the rules.

import { Hono } from "hono";
import type { WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { serveObject } from "../http/object-response.ts";
import { requireRead } from "../middleware/auth.ts";
import { keyFromUrl, type ObjectKey } from "../storage/keys.ts";

export const narinfo = new Hono<{ Bindings: WorkerEnv }>();

/** Route pattern: one path segment ending in .narinfo (the key shape is checked after). */
const NARINFO_ROUTE = "/:file{[^/]+\\.narinfo}";

function narInfoKeyOf(request: Request): ObjectKey | null {
  const object = keyFromUrl(new URL(request.url));
  return object !== null && object.kind === "narinfo" ? object : null;
}

narinfo.get(NARINFO_ROUTE, requireRead, (c) => {
  const object = narInfoKeyOf(c.req.raw);
  if (object === null) throw fail("not_found", "no such narinfo in this cache");
  return serveObject(c.req.raw, c.env, c.executionCtx, object);
});
