// POST /_api/v1/missing: which of many store paths this cache lacks, in one request, so a
// pusher plans its upload without one GET per path.
//
//   request   {"hashes": ["<hash32>", ...]}      at most MAX_MISSING_BATCH, writers only
//   response  {"missing": ["<hash32>", ...]}     absent ones, each once, in request order
//
// Each distinct hash costs one R2 HEAD of `<hash>.narinfo`, 6 at a time (the connection
// limit). Upstream caches are not consulted: skipping paths they serve is the pusher's call.
// Paths found present count as pushed again for retention: the stale roots among them are
// refreshed (gc/refresh.ts; at most 200, a GET and a PUT each).

import { Hono } from "hono";
import { isHashPart } from "../nix/store-path.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { readText } from "../http/body.ts";
import { requireWrite } from "../middleware/auth.ts";
import { pathsToRefresh, refreshAge, refreshPaths, type PresentPath } from "../gc/refresh.ts";
import { headObjects } from "../storage/narinfo-object.ts";
import { narInfoKey } from "../storage/keys.ts";

export const missing = new Hono<{ Bindings: WorkerEnv }>();

/**
 * Most hashes per request: one R2 HEAD each must stay well inside the free plan's ~1000
 * operations per request. A pusher splits larger closures into several requests.
 */
export const MAX_MISSING_BATCH = 500;

/** Largest request body: 500 quoted 32-char hashes are ~18 KB; room for whitespace. */
const MAX_MISSING_BODY_BYTES = 64 * 1024;

function parseHashes(text: string): string[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw fail("bad_request", 'the body is not JSON; send {"hashes": ["<hash32>", ...]}');
  }
  const hashes = typeof body === "object" && body !== null && !Array.isArray(body) ? (body as { hashes?: unknown }).hashes : undefined;
  if (!Array.isArray(hashes)) throw fail("bad_request", 'send {"hashes": ["<hash32>", ...]}');
  if (hashes.length > MAX_MISSING_BATCH) {
    throw fail("payload_too_large", `${hashes.length} hashes in one request; at most ${MAX_MISSING_BATCH}, split the batch`);
  }
  hashes.forEach((h, i) => {
    if (typeof h !== "string" || !isHashPart(h)) {
      throw fail("bad_request", `hashes[${i}] is not a store path hash part (32 chars of the nix32 alphabet)`);
    }
  });
  return hashes as string[];
}

missing.post("/_api/v1/missing", requireWrite, async (c) => {
  const hashes = [...new Set(parseHashes(await readText(c.req.raw, MAX_MISSING_BODY_BYTES, "the request body")))];
  const objects = await headObjects(c.env.CACHE, hashes.map(narInfoKey));
  const age = refreshAge(settingsOf(c.env).gc);
  if (age !== null) {
    const now = Date.now();
    const present: PresentPath[] = hashes.flatMap((hash, i) => (objects[i] ? [{ hash, object: objects[i] }] : []));
    await refreshPaths(c.env.CACHE, pathsToRefresh(present, now - age), now);
  }
  return c.json({ missing: hashes.filter((_, i) => objects[i] === null) });
});
