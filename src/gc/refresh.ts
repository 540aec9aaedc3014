// Refreshing push times: a push that finds paths already cached tells the cache they are
// still in use, so retention counts from this push. `uploader push` asks
// `POST /_api/v1/missing` about its whole closure; the paths it finds present are refreshed
// there (a re-PUT of an identical narinfo refreshes it too, in upload/narinfo-store.ts).
//
// A refresh rewrites the narinfo's bytes unchanged with a new push time (a GET and a
// conditional PUT: R2 cannot change metadata alone), so it is done sparingly:
//   - only paths pushed longer ago than REFRESH_AGE (at most a day, a quarter of the
//     retention) are refreshed: a closure pushed by every CI run costs one rewrite per path
//     and day at most;
//   - only the *roots* of what was asked: present paths that no other present path of the
//     same request references. Every path of the request is in the closure of one of them,
//     so they keep the whole request alive through references; a typical closure has few;
//   - stalest first, at most MAX_REFRESHES_PER_REQUEST per request, so a request of 500
//     hashes (500 HEADs) stays within the free plan's ~1000 operations.

import { mapConcurrent } from "../concurrency.ts";
import { NixFormatError } from "../nix/errors.ts";
import { parseNarInfo } from "../nix/narinfo.ts";
import { narInfoKey } from "../storage/keys.ts";
import { decodeNarInfoMeta, encodeNarInfoMeta } from "../storage/narinfo-meta.ts";
import { getNarInfoObject, putNarInfoObject } from "../storage/narinfo-object.ts";
import type { GcSettings } from "./settings.ts";

/** Most refreshes per request: two operations each, next to one HEAD per asked hash. */
export const MAX_REFRESHES_PER_REQUEST = 200;

/** Parallel refreshes (Workers allow 6 open connections per request). */
const REFRESH_CONCURRENCY = 6;

const DAY_MS = 24 * 3600 * 1000;

/** Paths pushed longer ago than this (ms) are refreshed by a push; null: never. */
export function refreshAge(settings: GcSettings): number | null {
  // Retention off (no automatic collection) or zero (push time never keeps anything): a
  // refresh would change nothing.
  if (settings.retentionMs === null || settings.retentionMs === 0) return null;
  return Math.min(DAY_MS, settings.retentionMs / 4);
}

/** A path a push found present: its hash part and its stored object's metadata. */
export interface PresentPath {
  hash: string;
  object: R2Object;
}

/** Which present paths to refresh: stale roots of the request, stalest first, capped. */
export function pathsToRefresh(present: readonly PresentPath[], staleBefore: number, max: number = MAX_REFRESHES_PER_REQUEST): string[] {
  const referenced = new Set<string>();
  const pushed = new Map<string, number>();
  for (const { hash, object } of present) {
    const meta = decodeNarInfoMeta(object.customMetadata);
    pushed.set(hash, meta?.pushed ?? object.uploaded.getTime());
    for (const ref of meta?.refs ?? []) if (ref !== hash) referenced.add(ref);
  }
  return [...pushed]
    .filter(([hash, time]) => time < staleBefore && !referenced.has(hash))
    .sort((a, b) => a[1] - b[1])
    .slice(0, max)
    .map(([hash]) => hash);
}

/**
 * Rewrites each path's narinfo with push time `now` (skipping any rewritten by someone else
 * meanwhile, or not parseable). Returns how many were refreshed.
 */
export async function refreshPaths(bucket: R2Bucket, hashes: readonly string[], now: number): Promise<number> {
  const done = await mapConcurrent(hashes, REFRESH_CONCURRENCY, async (hash) => {
    const key = narInfoKey(hash);
    try {
      const stored = await getNarInfoObject(bucket, key);
      if (stored === null) return false;
      return await putNarInfoObject(bucket, key, stored.text, encodeNarInfoMeta(parseNarInfo(stored.text), now), { ifEtag: stored.etag });
    } catch (err) {
      // A refresh is a courtesy to retention: a failure must not fail the push asking.
      if (!(err instanceof NixFormatError)) console.warn(`refresh of ${key} failed`, err);
      return false;
    }
  });
  return done.filter(Boolean).length;
}
