// `nix-cache-info` as an object at the top of the bucket, so that the bucket read directly
// on its public domain (README "Reads without the Worker") is a complete binary cache: Nix
// reads this file first from every substituter, and R2's public access can only serve
// objects. The Worker keeps it in line with its settings (the caller gives the text): when
// an isolate answers GET /nix-cache-info or runs the cron trigger, and has not looked for
// CACHE_INFO_RECHECK_MS, it reads the object and rewrites it if it differs, so a deployment
// that changes PRIORITY updates it within a minute (the next cron tick, in a new isolate).
// It is written with the public Cache-Control of /nix-cache-info.
//
// Harmless without a public domain: the Worker serves /nix-cache-info itself, and the
// collector and the index ignore top-level keys that are not narinfos or listings.

import { CONTENT_TYPE } from "../api/media-types.ts";
import { CACHE_INFO_CACHE_CONTROL } from "../http/representation.ts";
import { getObject, storageUnavailable } from "./bucket.ts";

/** The object's key: the path Nix requests, without its slash. */
export const CACHE_INFO_KEY = "nix-cache-info";

/**
 * How long an isolate trusts what it last saw in the bucket. Ten minutes: the check is one
 * read, so a busy isolate costs a few hundred Class B operations a month, and an object
 * deleted by hand is back soon.
 */
export const CACHE_INFO_RECHECK_MS = 10 * 60 * 1000;

/** R2 calls a check makes at most: a read, and a write when the object differs. */
export const CACHE_INFO_CHECK_OPERATIONS = 2;

/** Per isolate: the text each bucket was last seen to hold, and when. */
const known = new WeakMap<R2Bucket, { text: string; at: number }>();

/**
 * Makes the bucket's `nix-cache-info` object hold `text` (one read; a write when it
 * differs). Returns whether it wrote. Throws `storage_unavailable` when R2 fails.
 */
export async function syncCacheInfoObject(bucket: R2Bucket, text: string, now: number = Date.now()): Promise<boolean> {
  const seen = known.get(bucket);
  if (seen !== undefined && seen.text === text && now - seen.at < CACHE_INFO_RECHECK_MS) return false;
  const stored = await getObject(bucket, CACHE_INFO_KEY);
  let current: string | null = null;
  try {
    current = stored === null ? null : await stored.text();
  } catch (err) {
    return storageUnavailable(err);
  }
  const sameHeaders = stored?.httpMetadata?.cacheControl === CACHE_INFO_CACHE_CONTROL;
  let wrote = false;
  if (current !== text || !sameHeaders) {
    try {
      await bucket.put(CACHE_INFO_KEY, text, { httpMetadata: { contentType: CONTENT_TYPE.cacheInfo, cacheControl: CACHE_INFO_CACHE_CONTROL } });
    } catch (err) {
      return storageUnavailable(err);
    }
    wrote = true;
  }
  known.set(bucket, { text, at: now });
  return wrote;
}

/** syncCacheInfoObject for background work: failures are logged, and retried next time. */
export async function keepCacheInfoObject(bucket: R2Bucket, text: string): Promise<void> {
  try {
    await syncCacheInfoObject(bucket, text);
  } catch (err) {
    console.warn("nix-cache-info object not updated; the next request or cron tick retries", err);
  }
}
