// Refreshing push times: a push that finds paths already cached tells the cache they are
// still in use, so retention counts from this push. `uploader push` asks
// `POST /_api/v1/missing` about its whole closure; the paths it finds present are refreshed
// there (a re-PUT of an identical narinfo refreshes it too, in ingest/narinfo-store.ts).
//
// A refresh is one UPDATE of the index (storage/path-index.ts), but every refreshed row is
// a D1 row written (the free plan allows 100,000 a day), so it is done sparingly:
//   - only paths pushed longer ago than the refresh age (at most a day, a quarter of the
//     retention) are refreshed: a closure pushed by every CI run costs one write per path
//     and day at most;
//   - only the *roots* of what was asked: present paths that no other present path of the
//     same request references. Every path of the request is in the closure of one of them,
//     so they keep the whole request alive through references; a typical closure has few.

import type { IndexedPath } from "../storage/path-index.ts";
import type { GcSettings } from "./settings.ts";

const DAY_MS = 24 * 3600 * 1000;

/** Paths pushed longer ago than this (ms) are refreshed by a push; null: never. */
export function refreshAge(settings: GcSettings): number | null {
  // Retention off (no automatic collection) or zero (push time never keeps anything): a
  // refresh would change nothing.
  if (settings.retentionMs === null || settings.retentionMs === 0) return null;
  return Math.min(DAY_MS, settings.retentionMs / 4);
}

/** Which present paths to refresh: the stale roots of the request. */
export function pathsToRefresh(present: readonly IndexedPath[], staleBefore: number): string[] {
  const referenced = new Set<string>();
  for (const path of present) for (const ref of path.refs) referenced.add(ref);
  return present.filter((p) => p.pushedAt < staleBefore && !referenced.has(p.hash)).map((p) => p.hash);
}
