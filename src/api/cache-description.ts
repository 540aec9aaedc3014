// The wire contract of `GET /_api/v1/cache`: what the cache says about itself to the
// uploader (`use`, `login`, `doctor`, and the preflight of `push`). Pure and shared like
// src/nix/: the Worker builds the document with these types, the uploader parses it with
// `parseCacheDescription`, so neither side re-declares the other's shape.
//
//   {"service": "nix-edge-cache", "apiVersion": 1,
//    "storeDir": "/nix/store", "priority": 50,
//    "publicKeys": ["name:base64", …],     keys its narinfos are signed with (SIGNING_KEY's
//                                          public half, then TRUSTED_PUBLIC_KEYS)
//    "private": false,                     reads need READ_TOKEN (or a write token)
//    "time": <ms since the epoch>,         the Worker's clock
//    "maxRequestBytes": <n>,               largest request body; NARs above go in parts
//    "access": {"read": bool, "write": bool, "admin": bool}}
//                                          what the request's own credentials may do
//
// Public, even for a private cache (like /nix-cache-info it reveals settings, not data), and
// never cached: `access` depends on the Authorization header.

/** The path below the cache's URL (relative: caches may live under a prefix). */
export const CACHE_DESCRIPTION_PATH = "_api/v1/cache";

/** The `service` value that tells a nix-edge-cache Worker from any other server. */
export const SERVICE_NAME = "nix-edge-cache";

/** Bumped when a field changes meaning; new fields may appear without a bump. */
export const API_VERSION = 1;

export interface CacheAccess {
  read: boolean;
  write: boolean;
  admin: boolean;
}

export interface CacheDescription {
  service: typeof SERVICE_NAME;
  apiVersion: number;
  storeDir: string;
  priority: number;
  publicKeys: string[];
  private: boolean;
  time: number;
  maxRequestBytes: number;
  access: CacheAccess;
}

/** The document is not a cache description; `field` names what is wrong. */
export class CacheDescriptionError extends Error {
  override name = "CacheDescriptionError";
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks a parsed JSON document field by field; throws CacheDescriptionError naming the field. */
export function parseCacheDescription(doc: unknown): CacheDescription {
  if (!isObject(doc)) throw new CacheDescriptionError("(document)", "not a JSON object");
  if (doc.service !== SERVICE_NAME) throw new CacheDescriptionError("service", `expected "${SERVICE_NAME}"`);
  const count = (field: string): number => {
    const v = doc[field];
    if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new CacheDescriptionError(field, "expected an integer");
    return v;
  };
  const flag = (obj: Record<string, unknown>, field: string, name = field): boolean => {
    if (typeof obj[field] !== "boolean") throw new CacheDescriptionError(name, "expected true or false");
    return obj[field] as boolean;
  };
  if (typeof doc.storeDir !== "string" || !doc.storeDir.startsWith("/")) throw new CacheDescriptionError("storeDir", "expected an absolute path");
  const keys = doc.publicKeys;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && /^[^:\s]+:[A-Za-z0-9+/]{43}=$/.test(k))) {
    throw new CacheDescriptionError("publicKeys", "expected a list of Nix public keys (name:base64)");
  }
  const access = doc.access;
  if (!isObject(access)) throw new CacheDescriptionError("access", "expected {read, write, admin}");
  return {
    service: SERVICE_NAME,
    apiVersion: count("apiVersion"),
    storeDir: doc.storeDir,
    priority: count("priority"),
    publicKeys: keys as string[],
    private: flag(doc, "private"),
    time: count("time"),
    maxRequestBytes: count("maxRequestBytes"),
    access: { read: flag(access, "read", "access.read"), write: flag(access, "write", "access.write"), admin: flag(access, "admin", "access.admin") },
  };
}
