// Token authentication for reads (when READ_TOKEN is set) and writes (always).
//
//   Authorization: Bearer <token>
//   Authorization: Basic base64(<any user>:<token>)     what Nix sends from a netrc file
//
// Every WRITE_TOKEN / WRITE_TOKEN_<name> secret is a valid write token, so one leaked CI
// token can be revoked alone. Reads accept READ_TOKEN or any write token (`nix copy`
// reads narinfos with the same netrc credentials it uploads with). Comparison hashes both
// sides with SHA-256 and compares the digests with a loop that never exits early, against
// every configured token, so timing reveals neither a token's prefix nor which matched.
// Missing, malformed or wrong credentials all get the same 401 with a Basic challenge.
// ADMIN_TOKEN, when set, is the only token that runs garbage collection and changes pins
// (both decide what gets deleted); it is not a write token. Listing pins takes either.
// requireWrite records which write token it was (the name of its secret) as the request's
// `writer`, so that what one token starts (a multipart upload) only that token continues.

import type { MiddlewareHandler } from "hono";
import { fromBase64 } from "../nix/encoding.ts";
import { settingsOf, type Settings, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";

/** read: READ_TOKEN or a write token (nothing for a public cache); write: a write token;
 * admin: ADMIN_TOKEN (garbage collection, pins); manage: a write token or ADMIN_TOKEN. */
type Access = "read" | "write" | "admin" | "manage";

/** How the 401 message names what was attempted. */
const WHAT_NEEDS: Record<Access, string> = {
  read: "reads",
  write: "uploads",
  admin: "garbage collection and pins",
  manage: "pin listings",
};

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

/** The token carried by an Authorization header; null when absent or malformed. */
export function presentedToken(header: string | null | undefined): string | null {
  if (header === null || header === undefined) return null;
  const m = /^([A-Za-z]+) +(\S+) *$/.exec(header);
  if (m === null) return null;
  const scheme = m[1]!.toLowerCase();
  const value = m[2]!;
  if (scheme === "bearer") return value;
  if (scheme !== "basic") return null;
  let decoded: string;
  try {
    decoded = UTF8_STRICT.decode(fromBase64(value));
  } catch {
    return null;
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return null;
  const password = decoded.slice(colon + 1);
  return password === "" ? null : password;
}

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", ENCODER.encode(s)));
}

/**
 * The index in `valid` of the token equal to `token`, or -1; constant time in the token's
 * content (every candidate is compared in full, whichever matches).
 */
export async function matchingToken(token: string, valid: readonly string[]): Promise<number> {
  const presented = await digest(token);
  let matched = -1;
  for (let n = 0; n < valid.length; n++) {
    const expected = await digest(valid[n]!);
    let diff = 0;
    for (let i = 0; i < expected.length; i++) diff |= expected[i]! ^ presented[i]!;
    // (diff - 1) >>> 31 is 1 exactly when diff is 0, without a data-dependent branch.
    const equal = (diff - 1) >>> 31;
    matched = equal === 1 ? n : matched;
  }
  return matched;
}

/** True when `token` equals one of `valid`; constant time in the token's content. */
export async function tokenMatches(token: string, valid: readonly string[]): Promise<boolean> {
  return (await matchingToken(token, valid)) >= 0;
}

const ADMIN = "ADMIN_TOKEN";
const READ = "READ_TOKEN";

/** The tokens allowed `access`, named after their secrets; null when no token is needed. */
function tokensFor(access: Access, settings: Settings): Array<{ name: string; token: string }> | null {
  if (access === "write") return settings.writeTokens;
  const admin = settings.adminToken === null ? [] : [{ name: ADMIN, token: settings.adminToken }];
  if (access === "admin") return admin;
  if (access === "manage") return [...settings.writeTokens, ...admin];
  if (settings.readToken === null) return null; // a public cache: reads need nothing
  return [{ name: READ, token: settings.readToken }, ...settings.writeTokens];
}

/**
 * Throws `unauthorized` unless the request may perform `access`; returns the name of the
 * secret whose token it presented (null when none is needed).
 */
export async function authorise(request: Request, env: WorkerEnv, access: Access): Promise<string | null> {
  const valid = tokensFor(access, settingsOf(env));
  if (valid === null) return null;
  if (valid.length === 0) {
    throw fail("unauthorized", "garbage collection and pins need ADMIN_TOKEN, which this cache does not set (wrangler secret put ADMIN_TOKEN)");
  }
  const token = presentedToken(request.headers.get("Authorization"));
  if (token === null) {
    throw fail("unauthorized", `${WHAT_NEEDS[access]} need a token: Authorization: Bearer <token>, or HTTP Basic with the token as password (a netrc entry for Nix)`);
  }
  const index = await matchingToken(token, valid.map((t) => t.token));
  if (index < 0) throw fail("unauthorized", "the token is not valid for this cache");
  return valid[index]!.name;
}

/** The write token (its secret's name) requireWrite admitted, per request. */
const writers = new WeakMap<Request, string>();

/** Middleware: the request needs a write token; records which one (writerOf). */
export const requireWrite: MiddlewareHandler<{ Bindings: WorkerEnv }> = async (c, next) => {
  writers.set(c.req.raw, (await authorise(c.req.raw, c.env, "write"))!);
  await next();
};

/** The name of the write token's secret (`WRITE_TOKEN`, `WRITE_TOKEN_CI`…) behind a request requireWrite admitted. */
export function writerOf(request: Request): string {
  const writer = writers.get(request);
  if (writer === undefined) throw new Error("writerOf: the route does not use requireWrite");
  return writer;
}

/** Middleware: the request needs ADMIN_TOKEN. */
export const requireAdmin: MiddlewareHandler<{ Bindings: WorkerEnv }> = async (c, next) => {
  await authorise(c.req.raw, c.env, "admin");
  await next();
};

/** Middleware: the request needs a write token or ADMIN_TOKEN. */
export const requireWriteOrAdmin: MiddlewareHandler<{ Bindings: WorkerEnv }> = async (c, next) => {
  await authorise(c.req.raw, c.env, "manage");
  await next();
};

/** Middleware: the request needs a read token when the cache is private. */
export const requireRead: MiddlewareHandler<{ Bindings: WorkerEnv }> = async (c, next) => {
  await authorise(c.req.raw, c.env, "read");
  await next();
};

/** True when responses to reads may be cached by shared caches (no READ_TOKEN). */
export function isPublicCache(env: WorkerEnv): boolean {
  return settingsOf(env).readToken === null;
}
