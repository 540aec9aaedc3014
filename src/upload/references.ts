// Which references of an uploaded narinfo are not available to a client of this cache:
// neither stored here (a HEAD of `<hash>.narinfo` in R2) nor served by one of the
// upstream caches (a HEAD of `<upstream>/<hash>.narinfo`, with the credentials configured
// for an aggregated upstream; upstream/settings.ts referenceCaches). A narinfo is only
// accepted when this list is empty, so the cache never holds a closure with holes.
//
// Budget (free plan, per request): about 1000 operations on Cloudflare services (R2 calls
// included) and 50 subrequests (fetch and Cache API calls), 6 connections at a time.

import { mapConcurrent } from "../concurrency.ts";
import { fail } from "../errors.ts";
import { existsMany, R2_CONCURRENCY } from "../storage/bucket.ts";
import { narInfoKey } from "../storage/keys.ts";
import { HASH_PART_LENGTH } from "../nix/store-path.ts";
import type { ReferenceCache } from "../upstream/settings.ts";

/**
 * Most references one narinfo may have: one R2 HEAD each must fit the ~1000 operations a
 * free-plan request may make, next to the few the upload itself needs (stored narinfo,
 * NAR HEAD, the write). Real paths rarely come close; the few that do (NixOS system
 * closures, big language environments) need a plan with a larger budget.
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

async function servedUpstream(upstreams: readonly ReferenceCache[], hash: string): Promise<boolean> {
  for (const { url, authorization } of upstreams) {
    try {
      const res = await fetch(`${url}/${narInfoKey(hash)}`, {
        method: "HEAD",
        signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
        // Credentials go to the upstream only, never to where it might redirect.
        ...(authorization === null ? {} : { headers: { Authorization: authorization }, redirect: "manual" as const }),
      });
      if (res.status === 200) return true;
    } catch {
      // Timeout or network failure: this upstream does not vouch for the path.
    }
  }
  return false;
}

/**
 * The references (base names, the path's own excluded by the caller) that are neither in
 * the bucket nor upstream, in input order. Throws `payload_too_large` past the budgets.
 */
export async function missingReferences(bucket: R2Bucket, references: readonly string[], upstreams: readonly ReferenceCache[]): Promise<string[]> {
  if (references.length > MAX_REFERENCES) {
    throw fail("payload_too_large", `the narinfo has ${references.length} references; this cache checks at most ${MAX_REFERENCES} per upload`);
  }
  const hashes = references.map((ref) => ref.slice(0, HASH_PART_LENGTH));
  const present = await existsMany(bucket, hashes.map(narInfoKey));
  const absent = references.filter((_, i) => !present[i]);
  if (absent.length === 0 || upstreams.length === 0) return absent;
  if (absent.length * upstreams.length > MAX_UPSTREAM_LOOKUPS) {
    throw fail(
      "unprocessable",
      `${absent.length} references are not in this cache (e.g. ${absent.slice(0, NAMED_IN_ERRORS).join(", ")}); ` +
        `upload them first (at most ${MAX_UPSTREAM_LOOKUPS} lookups in upstream caches fit in one upload)`,
    );
  }
  const served = await mapConcurrent(absent, R2_CONCURRENCY, (ref) => servedUpstream(upstreams, ref.slice(0, HASH_PART_LENGTH)));
  return absent.filter((_, i) => !served[i]);
}

/** The 422 message for missing references. */
export function missingReferencesMessage(missing: readonly string[], upstreams: readonly unknown[]): string {
  const named = missing.slice(0, NAMED_IN_ERRORS).join(", ");
  const more = missing.length > NAMED_IN_ERRORS ? ` and ${missing.length - NAMED_IN_ERRORS} more` : "";
  const where = upstreams.length === 0 ? "in this cache" : "in this cache or its upstream caches";
  return `references not ${where}: ${named}${more}; upload references before the paths that use them`;
}
