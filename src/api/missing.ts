// The wire contract of `POST /_api/v1/missing`: which of many store paths the cache lacks,
// in one request, so a pusher plans its upload without one GET per path. The Worker's route
// (src/routes/missing.ts) answers it, the uploader (uploader/remote-cache.ts) asks it, both
// with these types and limits.
//
//   request   {"hashes": ["<hash32>", ...]}      at most MAX_MISSING_BATCH, writers only
//   response  {"missing": ["<hash32>", ...],     absent ones, each once, in request order
//              "unchecked": ["<hash32>", ...]}   of those, the ones not looked up in R2 yet
//
// "unchecked" is there only while the cache's index is being adopted (a bucket filled
// before the index existed): a hash the index lacks may then still be stored, and each
// request looks up at most UNINDEXED_LOOKUPS of them in R2, so that its CPU stays bounded.
// The rest are listed in both arrays: a client that knows "unchecked" asks again for them
// (each request also moves the adoption on); an older client takes them as missing and
// uploads them again, which the cache answers as for any path it already has.

/** The path below the cache's URL (relative: caches may live under a prefix). */
export const MISSING_PATH = "_api/v1/missing";

/**
 * Most hashes per request: the index answers any number in one query, but the request body
 * and the answer grow with it. The uploader splits larger sets into batches of this size.
 */
export const MAX_MISSING_BATCH = 500;

/**
 * Most hashes the index lacks that one request looks up in R2 (a HEAD each, ~0.1 ms of CPU
 * measured inside workerd) while the index is incomplete: 10 keep a request within a few
 * ms next to its page of adoption (25 took 2.7 ms of a 7.5 ms request; 500 took 35 ms and
 * more). The rest are left unchecked; every request moves the adoption on by a page.
 */
export const UNINDEXED_LOOKUPS = 10;

/** Largest request body: 500 quoted 32-char hashes are ~18 KB; room for whitespace. */
export const MAX_MISSING_BODY_BYTES = 64 * 1024;

export interface MissingRequest {
  /** Store path hash parts (32 chars of the nix32 alphabet). */
  hashes: string[];
}

export interface MissingAnswer {
  /** The asked hashes the cache has no narinfo for, as far as this request looked. */
  missing: string[];
  /** Those of `missing` this request could not rule out (see above): ask again for them. */
  unchecked: string[];
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((h: unknown) => typeof h === "string");
}

/**
 * The answer, or null when `doc` is not a missing query's answer. An answer without
 * `unchecked` (a Worker from before it) has none.
 */
export function parseMissingAnswer(doc: unknown): MissingAnswer | null {
  if (typeof doc !== "object" || doc === null || !("missing" in doc)) return null;
  const { missing } = doc;
  const unchecked = "unchecked" in doc ? doc.unchecked : [];
  if (!isStringArray(missing) || !isStringArray(unchecked)) return null;
  return { missing, unchecked };
}
