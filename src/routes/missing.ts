// POST /_api/v1/missing: which of many store paths this cache lacks, in one request, so a
// pusher plans its upload without one GET per path.
//
//   request   {"hashes": ["<hash32>", ...]}      at most MAX_MISSING_BATCH, writers only
//   response  {"missing": ["<hash32>", ...]}     absent ones, each once, in request order
//
// The request and answer types and the limits are the shared contract (src/api/missing.ts).
//
// One query of the D1 index answers it, whatever the number of hashes. While the index is
// not complete yet (a bucket from before the index, still being adopted), hashes it lacks
// may still be stored: each such request first adopts one page of the bucket
// (path-index/adoption.ts); when that ends the pass (always, for a new or small bucket), it
// asks the index again. Otherwise it looks up the first UNINDEXED_LOOKUPS of them in R2 (a
// HEAD each) and answers the rest as "unchecked", for the client to ask again. Upstream caches
// are not consulted: skipping paths they serve is the pusher's call. Paths found present count
// as pushed again for retention: the stale roots among them are refreshed (gc/refresh.ts).

import { Hono } from "hono";
import { MAX_MISSING_BATCH, MAX_MISSING_BODY_BYTES, MISSING_PATH, UNINDEXED_LOOKUPS, type MissingAnswer } from "../api/missing.ts";
import { isHashPart } from "../nix/store-path.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { readText } from "../http/body.ts";
import { requireWrite } from "../middleware/auth.ts";
import { pathsToRefresh, refreshAge } from "../gc/refresh.ts";
import { adoptObjects, isIndexComplete, type AdoptionStep } from "../path-index/adoption.ts";
import { headObjects } from "../storage/narinfo-object.ts";
import { narInfoKey } from "../storage/keys.ts";
import { indexedPaths, refreshPaths } from "../storage/path-index.ts";

export const missing = new Hono<{ Bindings: WorkerEnv }>();

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

/**
 * One page of adoption, or null when it failed (e.g. it took too long to write within a
 * collection's upload window): adoption is this request's side job, never its failure.
 */
async function adoptionStep(bucket: R2Bucket, db: D1Database): Promise<AdoptionStep | null> {
  try {
    return await adoptObjects(bucket, db);
  } catch (err) {
    console.warn("missing query: this request's page of adoption failed; the cron goes on with it", err);
    return null;
  }
}

missing.post(`/${MISSING_PATH}`, requireWrite, async (c) => {
  const hashes = [...new Set(parseHashes(await readText(c.req.raw, MAX_MISSING_BODY_BYTES, "the request body")))];
  const present = await indexedPaths(c.env.DB, hashes);
  const indexed = new Set(present.map((p) => p.hash));
  let absent = hashes.filter((h) => !indexed.has(h));
  let unchecked: string[] = [];
  if (absent.length > 0 && !(await isIndexComplete(c.env.DB))) {
    // Moves the adoption on by a page first (the cron does too, but `wrangler dev` has no
    // cron): a new or small bucket is then complete, and the index alone answers.
    if ((await adoptionStep(c.env.CACHE, c.env.DB))?.complete === true) {
      const adopted = new Set((await indexedPaths(c.env.DB, absent)).map((p) => p.hash));
      absent = absent.filter((h) => !adopted.has(h));
    } else {
      const looked = absent.slice(0, UNINDEXED_LOOKUPS);
      const objects = await headObjects(c.env.CACHE, looked.map(narInfoKey));
      const stored = new Set(looked.filter((_, i) => objects[i] !== null));
      unchecked = absent.slice(UNINDEXED_LOOKUPS);
      absent = absent.filter((h) => !stored.has(h));
    }
  }
  const age = refreshAge(settingsOf(c.env).gc);
  if (age !== null) {
    const now = Date.now();
    await refreshPaths(c.env.DB, pathsToRefresh(present, now - age), now, now - age);
  }
  return c.json({ missing: absent, unchecked } satisfies MissingAnswer);
});
