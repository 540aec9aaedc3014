// The Worker's settings: every binding, variable and secret it reads from Env, parsed once
// per Env object into typed Settings. A setting that is present but wrong makes every
// request fail with a 500 naming it ("fail fast"): Nix's first request to a cache is
// always GET /nix-cache-info, so a misconfigured cache is refused before any upload.
//
// | Env name              | Kind   | Meaning                                                    |
// |-----------------------|--------|------------------------------------------------------------|
// | CACHE                 | R2     | the bucket holding narinfos, NARs, listings, logs, …       |
// | PRIORITY              | var    | `Priority` in /nix-cache-info (integer, default 50)         |
// | TRUSTED_PUBLIC_KEYS   | var    | space-separated `name:base64` keys; when non-empty an      |
// |                       |        | uploaded narinfo needs a valid signature by one of them    |
// | UPSTREAM_CACHES       | var    | space-separated http(s) cache URLs; a narinfo may reference |
// |                       |        | paths they serve without those being in this cache         |
// | MAX_NAR_UPLOAD_BYTES  | var    | optional: largest NAR PUT body (default 100 MiB, the free   |
// |                       |        | plan's request limit; raise it on a plan that allows more) |
// | MULTIPART_VERIFY      | var    | optional: `sha256` (the default and only mode): completing |
// |                       |        | a multipart NAR upload has R2 check its sha256; `size` was |
// |                       |        | removed (it let a writer replace a NAR) and is refused     |
// | WRITE_TOKEN           | secret | a token that may upload                                    |
// | WRITE_TOKEN_<ANY>     | secret | more upload tokens, each revocable alone                   |
// | READ_TOKEN            | secret | optional: reads need it (or a write token), except         |
// |                       |        | /nix-cache-info                                            |
// | SIGNING_KEY           | secret | optional Nix secret key; the Worker signs what it stores   |
// | AGGREGATE_UPSTREAMS   | var    | upstream aggregation: caches served through this one,      |
// | AGGREGATE_WRITE_…KEYS | var    | the keys allowing write-through, credentials for private   |
// | AGGREGATE_…_NETRC     | secret | upstreams (documented in upstream/settings.ts)             |
// | AGGREGATE_WRITE_      | var    | optional: what write-through may store per UTC day, in     |
// | THROUGH_DAILY_BYTES,  |        | bytes (default 1 GiB) and objects (default 1000); reads    |
// | …_DAILY_OBJECTS       |        | past it are served, not copied (upstream/settings.ts)      |
// | ADMIN_TOKEN           | secret | optional: the token for garbage collection and pins        |
// |                       |        | (POST /_api/v1/gc, PUT/DELETE /_api/v1/pins/<name>)        |
// | NAR_BASE_URL          | var    | optional: the bucket's public domain; narinfos are served  |
// |                       |        | with URL: <it>/nar/…, so NARs are downloaded from there    |
// |                       |        | (http/nar-base-url.ts, README "Reads without the Worker")  |
// | GC_RETENTION_DAYS, …  | var    | retention: days a path is kept after its last push, NAR    |
// |                       |        | grace, upload window, interval (documented in gc/settings.ts) |
//
// Token values are trimmed (a secret piped in with `echo` ends in a newline); empty
// values count as unset.

import { parsePublicKey, parseSecretKey, type PublicKey, type SecretKey } from "./nix/signature.ts";
import { fail } from "./errors.ts";
import { aggregationOf, type Aggregation, type AggregationVars } from "./upstream/settings.ts";
import { parseGcSettings, type GcSettings, type GcVars } from "./gc/settings.ts";
import { parseNarBaseUrl } from "./http/nar-base-url.ts";
import type { VerifyMode } from "./storage/multipart.ts";

/** The Env the Worker runs with: generated bindings and vars, secrets (src/secrets.d.ts). */
export type WorkerEnv = Env & GcVars & AggregationVars & {
  MAX_NAR_UPLOAD_BYTES?: string;
  MULTIPART_VERIFY?: string;
  NAR_BASE_URL?: string;
};

/**
 * Default priority. Nix asks substituters in ascending priority and cache.nixos.org
 * announces 40, so 50 lets the official CDN serve everything it has and only this
 * cache's own paths come from here (fewer Worker requests on the free plan).
 */
export const DEFAULT_PRIORITY = 50;

/**
 * Default upper bound for one NAR PUT: Cloudflare's Free and Pro plans reject request
 * bodies above 100 MB before the Worker runs, so a larger default would only promise
 * what the edge refuses. Larger paths go through the uploader (multipart).
 */
export const DEFAULT_MAX_NAR_UPLOAD_BYTES = 100 * 1024 * 1024;

/** Prefix of the open-ended family of write-token secrets. */
const WRITE_TOKEN_PREFIX = "WRITE_TOKEN_";

export interface Settings {
  /** `Priority` announced in /nix-cache-info. */
  priority: number;
  /** Keys of which a narinfo upload needs a valid signature; empty: none needed. */
  trustedKeys: PublicKey[];
  /** Base URLs (no trailing slash) of caches whose paths count as present (UPSTREAM_CACHES). */
  upstreamCaches: string[];
  /** Every accepted write token (at least one), with the name of its secret. */
  writeTokens: WriteToken[];
  /** Token needed for reads, or null for a public cache. */
  readToken: string | null;
  /** Key the Worker signs stored narinfos with, or null. */
  signingKey: SecretKey | null;
  /** Largest accepted NAR PUT body in bytes (also the largest multipart part). */
  maxNarUploadBytes: number;
  /** What completing a multipart upload checks besides part sizes. */
  multipartVerify: VerifyMode;
  /** Upstream aggregation (upstream/settings.ts); no upstreams when off. */
  aggregation: Aggregation;
  /** Token for garbage collection and pins, or null (those endpoints then refuse everyone). */
  adminToken: string | null;
  /** Retention and garbage collection (gc/settings.ts). */
  gc: GcSettings;
  /** Where NARs are downloaded from (no trailing slash), or null: from the Worker. */
  narBaseUrl: string | null;
}

/** A write token and the secret it came from (`WRITE_TOKEN` or `WRITE_TOKEN_<name>`). */
export interface WriteToken {
  /** The secret's name: who wrote, in multipart ownership, logs and error messages. */
  name: string;
  token: string;
}

const parsed = new WeakMap<object, Settings>();

/**
 * The values settings are parsed from, as one string: every entry of the Env that is not an
 * object (bindings are; no setting is), with its name and type.
 */
function valuesKey(env: WorkerEnv): string {
  let key = "";
  for (const [name, value] of Object.entries(env)) {
    if (typeof value !== "object" && typeof value !== "function") key += `${name}\0${typeof value}\0${String(value)}\0`;
  }
  return key;
}

/**
 * The settings last parsed, with the values they came from: workerd hands requests another
 * Env object than the one module evaluation sees (warm-up.ts), with the same values, and an
 * isolate's first request spent ~0.9 ms of CPU parsing them again.
 */
let last: { key: string; settings: Settings } | null = null;

/** Settings for this Env (cached per Env object); throws `misconfigured` naming the setting. */
export function settingsOf(env: WorkerEnv): Settings {
  let settings = parsed.get(env);
  if (settings === undefined) {
    const key = valuesKey(env);
    settings = last !== null && last.key === key ? last.settings : parseSettings(env);
    last = { key, settings };
    parsed.set(env, settings);
  }
  return settings;
}

function words(value: string | undefined): string[] {
  return (value ?? "").split(/\s+/).filter((w) => w !== "");
}

function secret(value: string | undefined): string | null {
  const trimmed = (value ?? "").trim();
  return trimmed === "" ? null : trimmed;
}

function parsePriority(value: string | undefined): number {
  const text = (value ?? "").trim();
  if (text === "") return DEFAULT_PRIORITY;
  // Nix reads the value with std::stoi, so anything but a plain integer breaks clients.
  if (!/^-?\d{1,9}$/.test(text)) throw fail("misconfigured", "PRIORITY must be an integer (e.g. 50)");
  return Number(text);
}

function parseTrustedKeys(value: string | undefined): PublicKey[] {
  return words(value).map((word, i) => {
    try {
      return parsePublicKey(word);
    } catch {
      throw fail("misconfigured", `TRUSTED_PUBLIC_KEYS entry ${i + 1} is not a Nix public key (name:base64 of 32 bytes)`);
    }
  });
}

function parseUpstreams(value: string | undefined): string[] {
  return words(value).map((word, i) => {
    let url: URL;
    try {
      url = new URL(word);
    } catch {
      throw fail("misconfigured", `UPSTREAM_CACHES entry ${i + 1} is not a URL`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw fail("misconfigured", `UPSTREAM_CACHES entry ${i + 1} must be an http(s) URL`);
    }
    if (url.search !== "" || url.hash !== "") {
      throw fail("misconfigured", `UPSTREAM_CACHES entry ${i + 1} must not have a query or fragment`);
    }
    return url.href.replace(/\/+$/, "");
  });
}

function parseWriteTokens(env: WorkerEnv): WriteToken[] {
  const tokens: WriteToken[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (name !== "WRITE_TOKEN" && !name.startsWith(WRITE_TOKEN_PREFIX)) continue;
    const token = typeof value === "string" ? secret(value) : null;
    if (token !== null) tokens.push({ name, token });
  }
  if (tokens.length === 0) {
    throw fail("misconfigured", "no write token is configured: set WRITE_TOKEN (wrangler secret put WRITE_TOKEN)");
  }
  return tokens;
}

function parseSigningKey(value: string | undefined): SecretKey | null {
  const text = secret(value);
  if (text === null) return null;
  try {
    // The public half is checked when the Worker first signs, natively (nix/signature.ts).
    return parseSecretKey(text, { checkPublicHalf: false });
  } catch {
    // Never echo the value: it is a secret.
    throw fail("misconfigured", "SIGNING_KEY is not a Nix secret key (name:base64 of 64 bytes)");
  }
}

function parseMaxNarUploadBytes(value: string | undefined): number {
  const text = (value ?? "").trim();
  if (text === "") return DEFAULT_MAX_NAR_UPLOAD_BYTES;
  if (!/^[1-9]\d{0,15}$/.test(text)) throw fail("misconfigured", "MAX_NAR_UPLOAD_BYTES must be a positive integer");
  return Number(text);
}

function parseMultipartVerify(value: string | undefined): VerifyMode {
  const text = (value ?? "").trim();
  if (text === "" || text === "sha256") return "sha256";
  if (text === "size") {
    throw fail(
      "misconfigured",
      "MULTIPART_VERIFY=size was removed: it stored multipart NARs without checking their sha256, which let any write token replace a NAR with other bytes of the same size; delete the setting (every multipart NAR is now checked against the sha256 in its name)",
    );
  }
  throw fail("misconfigured", "MULTIPART_VERIFY must be sha256 or unset");
}

function parseSettings(env: WorkerEnv): Settings {
  return {
    priority: parsePriority(env.PRIORITY),
    trustedKeys: parseTrustedKeys(env.TRUSTED_PUBLIC_KEYS),
    upstreamCaches: parseUpstreams(env.UPSTREAM_CACHES),
    writeTokens: parseWriteTokens(env),
    readToken: secret(env.READ_TOKEN),
    signingKey: parseSigningKey(env.SIGNING_KEY),
    maxNarUploadBytes: parseMaxNarUploadBytes(env.MAX_NAR_UPLOAD_BYTES),
    multipartVerify: parseMultipartVerify(env.MULTIPART_VERIFY),
    aggregation: aggregationOf(env),
    adminToken: secret(env.ADMIN_TOKEN),
    gc: parseGcSettings(env),
    narBaseUrl: parseNarBaseUrl(env.NAR_BASE_URL),
  };
}
