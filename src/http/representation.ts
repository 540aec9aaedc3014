// How each kind of stored object is presented over HTTP: its Content-Type and how long
// browsers, proxies and the edge may cache it. Nix ignores both headers; they matter to
// the caches between Nix and the Worker (and to the Worker's own edge cache, whose TTL
// comes from s-maxage), and to the CDN in front of a bucket read on its public domain,
// which sends the headers stored on each object (storedCacheControlOf).

import { CONTENT_TYPE } from "../api/media-types.ts";
import type { ObjectKind } from "../storage/keys.ts";

/** Content-Type served for each kind of object. */
export function contentTypeOf(kind: ObjectKind): string {
  switch (kind) {
    case "narinfo":
      return CONTENT_TYPE.narinfo;
    case "nar":
      return CONTENT_TYPE.nar;
    case "log":
      return CONTENT_TYPE.log;
    case "listing":
    case "realisation":
    case "build-trace":
    case "debuginfo":
      return CONTENT_TYPE.json;
  }
}

/** A year: the conventional "forever" for immutable responses. */
const ONE_YEAR_SECONDS = 365 * 24 * 3600;
/**
 * Shared caches (the edge included) keep a NAR a day at most. Its bytes can never change
 * (the name is their sha256, which R2 checks on upload), so the only staleness is serving
 * a NAR that retention deleted, which is harmless and bounded by this.
 */
const NAR_SHARED_SECONDS = 24 * 3600;
/**
 * narinfos change when signatures are merged and disappear when retention deletes a path:
 * private caches may keep one 5 minutes, shared caches (the edge) one minute.
 */
const NARINFO_PRIVATE_SECONDS = 300;
const NARINFO_SHARED_SECONDS = 60;
/**
 * The longest any cache may serve a narinfo (clients' max-age, shared caches' s-maxage),
 * also after retention deleted it: the collector keeps the NARs it deletes this long
 * after the narinfos (gc/collector.ts), so no copy still served names a missing NAR.
 */
export const NARINFO_MAX_AGE_SECONDS = Math.max(NARINFO_PRIVATE_SECONDS, NARINFO_SHARED_SECONDS);
/** Listings, logs, realisations and debuginfo links can be re-uploaded: 5 minutes. */
const DOCUMENT_SECONDS = 300;
/** nix-cache-info changes only with the deployment's settings; Nix caches it 7 days anyway. */
const CACHE_INFO_SECONDS = 3600;

/**
 * Cache-Control for a stored object. A private cache (READ_TOKEN set) says `private`, so
 * no shared cache stores a response that needed credentials.
 */
export function cacheControlOf(kind: ObjectKind, isPrivate: boolean): string {
  const scope = isPrivate ? "private" : "public";
  switch (kind) {
    case "nar":
      return isPrivate
        ? `private, max-age=${ONE_YEAR_SECONDS}, immutable`
        : `public, max-age=${ONE_YEAR_SECONDS}, s-maxage=${NAR_SHARED_SECONDS}, immutable`;
    case "narinfo":
      return isPrivate
        ? `private, max-age=${NARINFO_PRIVATE_SECONDS}`
        : `public, max-age=${NARINFO_PRIVATE_SECONDS}, s-maxage=${NARINFO_SHARED_SECONDS}`;
    case "listing":
    case "log":
    case "realisation":
    case "build-trace":
    case "debuginfo":
      return `${scope}, max-age=${DOCUMENT_SECONDS}`;
  }
}

/** Cache-Control for /nix-cache-info (always public: it reveals nothing but the settings). */
export const CACHE_INFO_CACHE_CONTROL = `public, max-age=${CACHE_INFO_SECONDS}`;

/**
 * Cache-Control stored on each object (R2 httpMetadata), which R2 sends when the bucket is
 * read directly on its public domain (README "Reads without the Worker"): the public one,
 * since such a bucket is readable by anyone. The Worker sets its own per response.
 */
export function storedCacheControlOf(kind: ObjectKind): string {
  return cacheControlOf(kind, false);
}
