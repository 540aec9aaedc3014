// Which references of an uploaded narinfo are not available to a client of this cache as
// that exact store path: neither stored here (one query of the D1 index by hash part and
// name, storage/path-index.ts; only references the index lacks are looked up in R2, a HEAD
// of `<hash>.narinfo` whose metadata names the same path, storage/narinfo-object.ts
// storedPaths, for objects not indexed yet) nor served by one
// of the upstream caches (a GET of `<upstream>/<hash>.narinfo`, with the credentials
// configured for an aggregated upstream, whose StorePath is the reference;
// upstream/settings.ts referenceCaches). A narinfo is only accepted when this list is
// empty, so the cache never holds a closure with holes. Matching the name as well as the
// hash part matters: `<stored hash>-<other name>` is another store path, which nobody
// could substitute.
//
// Budget (free plan, per request): about 1000 operations on Cloudflare services (R2 and D1
// calls included) and 50 subrequests (fetch and Cache API calls), 6 connections at a time.
// An upload whose references are all indexed costs one D1 query, whatever their number.

import { mapConcurrent } from "../concurrency.ts";
import { fail } from "../errors.ts";
import { MAX_NARINFO_LENGTH, parseNarInfo } from "../nix/narinfo.ts";
import { HASH_PART_LENGTH, STORE_DIR } from "../nix/store-path.ts";
import { R2_CONCURRENCY } from "../storage/bucket.ts";
import { narInfoKey } from "../storage/keys.ts";
import { storedPaths } from "../storage/narinfo-object.ts";
import { unindexedPaths } from "../storage/path-index.ts";
import { readSmallText } from "../upstream/client.ts";
import type { ReferenceCache } from "../upstream/settings.ts";

/**
 * Most references one narinfo may have. The index checks any number in one query, but
 * references it lacks cost an R2 HEAD each (objects not indexed yet), which must fit the
 * ~1000 operations a free-plan request may make next to the few the upload itself needs.
 * Real paths rarely come close; the few that do (NixOS system closures, big language
 * environments) need a plan with a larger budget.
 */
export const MAX_REFERENCES = 900;

/**
 * Most upstream lookups (references × upstream caches) per upload: each is a subrequest
 * and the free plan allows 50 per request, a few of which the Cache API may use.
 */
export const MAX_UPSTREAM_LOOKUPS = 40;

/** How long one upstream HEAD may take before it counts as "not served there". */
export const UPSTREAM_TIMEOUT_MS = 5000;

/** At most this many missing references are named in an error message. */
const NAMED_IN_ERRORS = 5;

/** Whether one of the upstreams serves a narinfo for exactly the store path `reference`. */
async function servedUpstream(upstreams: readonly ReferenceCache[], reference: string): Promise<boolean> {
  const hash = reference.slice(0, HASH_PART_LENGTH);
  for (const { url, authorization } of upstreams) {
    try {
      const res = await fetch(`${url}/${narInfoKey(hash)}`, {
        signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
        // Credentials go to the upstream only, never to where it might redirect.
        ...(authorization === null ? {} : { headers: { Authorization: authorization }, redirect: "manual" as const }),
      });
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => {});
        continue;
      }
      const body = await readSmallText(res, MAX_NARINFO_LENGTH);
      if (body.kind === "text" && parseNarInfo(body.text).storePath === `${STORE_DIR}/${reference}`) return true;
    } catch {
      // Timeout, network failure or a narinfo that does not parse: this upstream does not
      // vouch for the path.
    }
  }
  return false;
}

/**
 * The references (base names, the path's own excluded by the caller) that are neither in
 * the bucket nor upstream, in input order. Throws `payload_too_large` past the budgets.
 */
export async function missingReferences(bucket: R2Bucket, db: D1Database, references: readonly string[], upstreams: readonly ReferenceCache[]): Promise<string[]> {
  if (references.length > MAX_REFERENCES) {
    throw fail("payload_too_large", `the narinfo has ${references.length} references; this cache checks at most ${MAX_REFERENCES} per upload`);
  }
  const unindexed = await unindexedPaths(db, references);
  const present = await storedPaths(bucket, unindexed);
  const absent = unindexed.filter((_, i) => !present[i]);
  if (absent.length === 0 || upstreams.length === 0) return absent;
  if (absent.length * upstreams.length > MAX_UPSTREAM_LOOKUPS) {
    throw fail(
      "unprocessable",
      `${absent.length} references are not in this cache (e.g. ${absent.slice(0, NAMED_IN_ERRORS).join(", ")}); ` +
        `upload them first (at most ${MAX_UPSTREAM_LOOKUPS} lookups in upstream caches fit in one upload)`,
    );
  }
  const served = await mapConcurrent(absent, R2_CONCURRENCY, (ref) => servedUpstream(upstreams, ref));
  return absent.filter((_, i) => !served[i]);
}

/** The 422 message for missing references. */
export function missingReferencesMessage(missing: readonly string[], upstreams: readonly unknown[]): string {
  const named = missing.slice(0, NAMED_IN_ERRORS).join(", ");
  const more = missing.length > NAMED_IN_ERRORS ? ` and ${missing.length - NAMED_IN_ERRORS} more` : "";
  const where = upstreams.length === 0 ? "in this cache" : "in this cache or its upstream caches";
  return `references not ${where}: ${named}${more}; upload references before the paths that use them`;
}
