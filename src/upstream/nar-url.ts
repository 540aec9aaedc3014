// Where a client fetches the NAR of a narinfo served from an upstream, and back.
//
// A narinfo's URL is not signed (PROTOCOL §4.1), so the Worker may point it elsewhere
// without touching a signature. NARs under the upstream's `nar/` directory are served
// through this cache, under a prefix naming the upstream:
//
//   upstream URL   https://cache.nixos.org   narinfo URL   nar/<file>[?query]
//   served as      URL: upstream/cache.nixos.org/nar/<file>[?query]
//
// `<id>` is host[:port] plus the upstream's base path (settings.ts), stable when the list
// of upstreams is reordered. Only configured upstreams and only their `nar/` directory can
// be reached this way: the Worker is no open proxy, and credentials for a private upstream
// serve nothing but NARs. A NAR URL elsewhere (another host, or outside `nar/`) is given
// to the client as an absolute URL, fetched directly.
//
// `upstream/<id>/nar/<filehash52>.nar[.ext]` has the shape of this cache's own NAR keys;
// such a NAR is served from the bucket when it is there (write-through put it there, or
// a push), which keeps working when the upstream is gone.

import { narKey, NAR_PREFIX, parseNarFileName } from "../storage/keys.ts";
import { UPSTREAM_ROUTE_PREFIX, type Upstream } from "./settings.ts";

/** How a client gets a NAR an upstream's narinfo names. */
export type NarLocation =
  /** Through this cache: `path` is relative to the upstream's base, `nar/…[?query]`. */
  | { kind: "proxied"; path: string }
  /** Directly from an absolute URL. */
  | { kind: "direct"; url: string };

function basePathOf(upstream: Upstream): string {
  return new URL(upstream.url).pathname.replace(/\/+$/, "") + "/";
}

/** Where the NAR named by `narUrl` (a narinfo URL value) lives; null when it is no http(s) URL. */
export function locateNar(upstream: Upstream, narUrl: string): NarLocation | null {
  let resolved: URL;
  try {
    // Resolved as current Nix does (RFC 3986 against the cache URL with a trailing slash).
    resolved = new URL(narUrl, upstream.url + "/");
  } catch {
    return null;
  }
  if (resolved.protocol !== "https:" && resolved.protocol !== "http:") return null;
  resolved.hash = "";
  const base = basePathOf(upstream);
  if (resolved.origin === new URL(upstream.url).origin && resolved.pathname.startsWith(base + NAR_PREFIX)) {
    return { kind: "proxied", path: resolved.pathname.slice(base.length) + resolved.search };
  }
  return { kind: "direct", url: resolved.href };
}

/** The URL value to put in the narinfo served to clients. */
export function clientNarUrl(upstream: Upstream, location: NarLocation): string {
  return location.kind === "proxied" ? `${UPSTREAM_ROUTE_PREFIX}${upstream.id}/${location.path}` : location.url;
}


/** A request for a NAR of an upstream, parsed from `/upstream/<id>/nar/…`. */
export interface ProxiedNar {
  upstream: Upstream;
  /** Absolute URL of the NAR on the upstream (query kept). */
  url: string;
  /** This cache's R2 key of the same file, when the name has the key layout's shape. */
  bucketKey: string | null;
}

/** An encoded slash or backslash: a server may decode it into a step out of a directory. */
export const ENCODED_SEPARATOR = /%2f|%5c|\\/i;

/** The upstream NAR a request path names; null for anything else (a 404). */
export function parseProxiedNar(upstreams: readonly Upstream[], url: URL): ProxiedNar | null {
  const prefix = "/" + UPSTREAM_ROUTE_PREFIX;
  if (!url.pathname.startsWith(prefix)) return null;
  const after = url.pathname.slice(prefix.length);
  // The longest id wins, so `host/a` is not taken for `host/a/b`.
  const upstream = upstreams
    .filter((u) => after.startsWith(u.id + "/"))
    .sort((a, b) => b.id.length - a.id.length)[0];
  if (upstream === undefined) return null;
  const rest = after.slice(upstream.id.length + 1);
  if (!rest.startsWith(NAR_PREFIX) || ENCODED_SEPARATOR.test(rest)) return null;
  for (const segment of rest.split("/")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return null;
    }
    if (decoded === "" || decoded === "." || decoded === "..") return null;
  }
  const target = new URL(`${upstream.url}/${rest}${url.search}`);
  if (!target.pathname.startsWith(basePathOf(upstream) + NAR_PREFIX)) return null;
  const file = rest.slice(NAR_PREFIX.length);
  const bucketKey = url.search === "" && parseNarFileName(file) !== null ? narKey(file) : null;
  return { upstream, url: target.href, bucketKey };
}
