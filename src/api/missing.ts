// The wire contract of `POST /_api/v1/missing`: which of many store paths the cache lacks,
// in one request, so a pusher plans its upload without one GET per path. The Worker's route
// (src/routes/missing.ts) answers it, the uploader (uploader/remote-cache.ts) asks it, both
// with these types and limits.
//
//   request   {"hashes": ["<hash32>", ...]}      at most MAX_MISSING_BATCH, writers only
//   response  {"missing": ["<hash32>", ...]}     absent ones, each once, in request order

/** The path below the cache's URL (relative: caches may live under a prefix). */
export const MISSING_PATH = "_api/v1/missing";

/**
 * Most hashes per request: the index answers any number in one query, but the request body
 * and the answer grow with it, and while the index is incomplete each unindexed hash costs
 * an R2 HEAD, which must stay well inside the free plan's ~1000 operations per request.
 * The uploader splits larger sets into batches of this size.
 */
export const MAX_MISSING_BATCH = 500;

/** Largest request body: 500 quoted 32-char hashes are ~18 KB; room for whitespace. */
export const MAX_MISSING_BODY_BYTES = 64 * 1024;

export interface MissingRequest {
  /** Store path hash parts (32 chars of the nix32 alphabet). */
  hashes: string[];
}

export interface MissingAnswer {
  /** The asked hashes the cache has no narinfo for. */
  missing: string[];
}

/** The answer's hashes, or null when `doc` is not a missing query's answer. */
export function parseMissingAnswer(doc: unknown): string[] | null {
  if (typeof doc !== "object" || doc === null || !("missing" in doc)) return null;
  const missing = doc.missing;
  if (!Array.isArray(missing) || !missing.every((h: unknown) => typeof h === "string")) return null;
  return missing as string[];
}
