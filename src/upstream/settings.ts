// Settings of upstream aggregation: which binary caches this cache serves paths from when
// its own bucket does not have them, with which credentials, and whose paths it may copy
// into its bucket (write-through).
//
// | Env name                      | Kind   | Meaning                                               |
// |-------------------------------|--------|-------------------------------------------------------|
// | AGGREGATE_UPSTREAMS           | var    | space-separated http(s) cache URLs, asked in this     |
// |                               |        | order on a narinfo miss (default: none, no            |
// |                               |        | aggregation)                                          |
// | AGGREGATE_WRITE_THROUGH_KEYS  | var    | space-separated `name:base64` public keys; when set,  |
// |                               |        | paths served from an upstream with a valid signature  |
// |                               |        | by one of them are also stored in the bucket          |
// |                               |        | (default: none, write-through off)                    |
// | AGGREGATE_WRITE_THROUGH_      | var    | bytes write-through may copy per UTC day, NARs and    |
// |   DAILY_BYTES                 |        | narinfos together (default 1073741824, 1 GiB)         |
// | AGGREGATE_WRITE_THROUGH_      | var    | objects (NARs and narinfos) write-through may store   |
// |   DAILY_OBJECTS               |        | per UTC day (default 1000); past either limit, reads  |
// |                               |        | are still served through the upstream, not copied     |
// | AGGREGATE_UPSTREAMS_NETRC     | secret | netrc text (netrc.ts) with credentials for private    |
// |                               |        | upstreams, sent as HTTP Basic to the matching host's  |
// |                               |        | base URL only (client.ts)                             |
//
// Not to be confused with UPSTREAM_CACHES (env.ts), the caches whose paths an upload may
// reference because clients use them directly; aggregated upstreams count for that too,
// since clients get their paths through this cache.
//
// A wrong value fails every request with a 500 naming the setting (env.ts calls
// aggregationOf for its fail-fast check); a secret's value is never echoed.

import { parsePublicKey, type PublicKey } from "../nix/signature.ts";
import { fail } from "../errors.ts";
import { basicAuthorization, netrcEntryFor, NetrcError, parseNetrc, type NetrcEntry } from "./netrc.ts";

/**
 * Most aggregated upstreams. Every narinfo miss may ask each of them, and a request on the
 * free plan has 50 subrequests (fetches and Cache API calls together): per upstream a
 * failure-marker read, a fetch with up to two redirects and a marker write is at most 5,
 * so 8 upstreams fit with room left for the request's own cache lookups.
 */
export const MAX_AGGREGATE_UPSTREAMS = 8;

/**
 * Default daily write-through budget in bytes. Write-through is started by anonymous
 * reads, so this is what anyone can make the bucket store in a day. 1 GiB is four of the
 * largest copyable NARs (MAX_WRITE_THROUGH_NAR_BYTES), plenty for the closures a team
 * misses in a day, and small next to the free plan's 10 GB: even spent every day under
 * the default 30-day retention it adds at most ~30 GiB, some $0.30 a month of storage.
 */
export const DEFAULT_WRITE_THROUGH_DAILY_BYTES = 1024 * 1024 * 1024;

/**
 * Default daily write-through budget in stored objects (a copied path is a NAR and a
 * narinfo). 1000 objects is 500 paths; with the budget's own update per path that is
 * ~1,500 writes a day, about 45,000 a month: under 5 % of the free plan's million class-A
 * operations, and it bounds a flood of tiny paths that the byte budget would not.
 */
export const DEFAULT_WRITE_THROUGH_DAILY_OBJECTS = 1000;

/** Largest daily budget value: what a JavaScript number holds exactly. */
const MAX_BUDGET_VALUE = Number.MAX_SAFE_INTEGER;

/** Prefix of the URL paths under which NARs of aggregated upstreams are served. */
export const UPSTREAM_ROUTE_PREFIX = "upstream/";

/** One aggregated upstream cache. */
export interface Upstream {
  /** Position in AGGREGATE_UPSTREAMS, from 0: the order in which upstreams are asked. */
  index: number;
  /** Base URL as configured, without trailing slash, e.g. `https://cache.nixos.org`. */
  url: string;
  /**
   * How the upstream is named in this cache's URLs, `upstream/<id>/nar/…`: host[:port]
   * plus the base path, percent-encoded as a URL path (e.g. `cache.nixos.org`). Stable
   * when the list is reordered, so narinfos clients cached keep pointing at the right NAR.
   */
  id: string;
  /** `Authorization` header for this upstream (from the netrc secret), or null. */
  authorization: string | null;
}

/** How much write-through may store per UTC day (storage/write-through-budget.ts). */
export interface WriteThroughLimits {
  bytes: number;
  objects: number;
}

/**
 * The vars and secret aggregation reads, all optional (env.ts's WorkerEnv includes them, as
 * it includes gc/settings.ts's GcVars), so this module needs nothing from env.ts.
 */
export interface AggregationVars {
  AGGREGATE_UPSTREAMS?: string;
  AGGREGATE_UPSTREAMS_NETRC?: string;
  AGGREGATE_WRITE_THROUGH_KEYS?: string;
  AGGREGATE_WRITE_THROUGH_DAILY_BYTES?: string;
  AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS?: string;
}

export interface Aggregation {
  /** The upstreams in the order they are asked; empty when aggregation is off. */
  upstreams: Upstream[];
  /** Keys whose signature makes an upstream path eligible for write-through; empty: off. */
  writeThroughKeys: PublicKey[];
  /** The daily budget of write-through. */
  writeThroughLimits: WriteThroughLimits;
  /** Short digest of the upstream list, so edge memos of another configuration never apply. */
  fingerprint: string;
}

/** A cache whose narinfos may vouch for a reference of an uploaded narinfo. */
export interface ReferenceCache {
  url: string;
  authorization: string | null;
}

function words(value: string | undefined): string[] {
  return (value ?? "").split(/\s+/).filter((w) => w !== "");
}

function parseNetrcSecret(value: string | undefined): NetrcEntry[] {
  const text = (value ?? "").trim();
  if (text === "") return [];
  try {
    return parseNetrc(text);
  } catch (e) {
    if (e instanceof NetrcError) throw fail("misconfigured", `AGGREGATE_UPSTREAMS_NETRC is not a netrc file: ${e.message}`);
    throw e;
  }
}

function parseUpstream(word: string, index: number, netrc: readonly NetrcEntry[]): Upstream {
  const which = `AGGREGATE_UPSTREAMS entry ${index + 1}`;
  let url: URL;
  try {
    url = new URL(word);
  } catch {
    throw fail("misconfigured", `${which} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw fail("misconfigured", `${which} must be an http(s) URL`);
  if (url.username !== "" || url.password !== "") {
    throw fail("misconfigured", `${which} must not carry credentials; put them in the AGGREGATE_UPSTREAMS_NETRC secret`);
  }
  if (url.search !== "" || url.hash !== "" || word.includes("?") || word.includes("#")) {
    throw fail("misconfigured", `${which} must not have a query or fragment`);
  }
  const path = url.pathname.replace(/\/+$/, "");
  const entry = netrcEntryFor(netrc, url);
  return {
    index,
    url: url.origin + path,
    // url.host is ASCII (punycode); only IPv6 brackets need encoding in a path.
    id: encodeURI(url.host) + path,
    authorization: entry === null ? null : basicAuthorization(entry),
  };
}

function parseWriteThroughKeys(value: string | undefined): PublicKey[] {
  return words(value).map((word, i) => {
    try {
      return parsePublicKey(word);
    } catch {
      throw fail("misconfigured", `AGGREGATE_WRITE_THROUGH_KEYS entry ${i + 1} is not a Nix public key (name:base64 of 32 bytes)`);
    }
  });
}

function parseDailyLimit(name: string, value: string | undefined, fallback: number): number {
  const text = (value ?? "").trim();
  if (text === "") return fallback;
  // Plain digits only: "1e9" or "1 GiB" would be read differently by different people.
  if (!/^\d{1,16}$/.test(text) || Number(text) > MAX_BUDGET_VALUE) {
    throw fail("misconfigured", `${name} must be a whole number (0 stops write-through copies), e.g. ${fallback}`);
  }
  return Number(text);
}

/** FNV-1a (32 bit) as 8 hex digits: a cheap, synchronous digest for cache keys. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** Parses the aggregation settings; throws `misconfigured` naming the setting. */
export function parseAggregation(env: AggregationVars): Aggregation {
  const netrc = parseNetrcSecret(env.AGGREGATE_UPSTREAMS_NETRC);
  const list = words(env.AGGREGATE_UPSTREAMS);
  if (list.length > MAX_AGGREGATE_UPSTREAMS) {
    throw fail("misconfigured", `AGGREGATE_UPSTREAMS lists ${list.length} caches; at most ${MAX_AGGREGATE_UPSTREAMS} fit in one request's subrequest budget`);
  }
  const upstreams = list.map((word, i) => parseUpstream(word, i, netrc));
  const ids = new Set<string>();
  for (const u of upstreams) {
    if (ids.has(u.id)) throw fail("misconfigured", `AGGREGATE_UPSTREAMS lists ${u.id} twice (entry ${u.index + 1})`);
    ids.add(u.id);
  }
  return {
    upstreams,
    writeThroughKeys: parseWriteThroughKeys(env.AGGREGATE_WRITE_THROUGH_KEYS),
    writeThroughLimits: {
      bytes: parseDailyLimit("AGGREGATE_WRITE_THROUGH_DAILY_BYTES", env.AGGREGATE_WRITE_THROUGH_DAILY_BYTES, DEFAULT_WRITE_THROUGH_DAILY_BYTES),
      objects: parseDailyLimit("AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS", env.AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS, DEFAULT_WRITE_THROUGH_DAILY_OBJECTS),
    },
    fingerprint: fnv1a(upstreams.map((u) => u.url).join(" ")),
  };
}

const parsed = new WeakMap<object, Aggregation>();

/** The aggregation settings of this Env, parsed once per Env object. */
export function aggregationOf(env: AggregationVars): Aggregation {
  let aggregation = parsed.get(env);
  if (aggregation === undefined) {
    aggregation = parseAggregation(env);
    parsed.set(env, aggregation);
  }
  return aggregation;
}

/**
 * The aggregated upstream URLs, in the order they are asked (empty when aggregation is
 * off). For pages that tell users where paths come from; never includes credentials.
 */
export function aggregatedUpstreams(env: AggregationVars): string[] {
  return aggregationOf(env).upstreams.map((u) => u.url);
}

/** True when paths fetched from upstreams are also stored in the bucket. */
export function writeThroughEnabled(aggregation: Aggregation): boolean {
  return aggregation.upstreams.length > 0 && aggregation.writeThroughKeys.length > 0;
}

/**
 * Caches that may vouch for an uploaded narinfo's references: UPSTREAM_CACHES (clients
 * use them directly) and the aggregated upstreams (clients get their paths through this
 * cache), each once, the latter with their credentials.
 */
export function referenceCaches(upstreamCaches: readonly string[], aggregation: Aggregation): ReferenceCache[] {
  const caches: ReferenceCache[] = aggregation.upstreams.map((u) => ({ url: u.url, authorization: u.authorization }));
  for (const url of upstreamCaches) {
    if (!caches.some((c) => c.url === url)) caches.push({ url, authorization: null });
  }
  return caches;
}
