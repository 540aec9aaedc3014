// Shared steps of the aggregation tests: signing keys and binary caches made by Nix itself,
// reading narinfos back, comparing store paths byte for byte, and scanning the Worker's
// request log for server errors.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { mkdtemp } from "node:fs/promises";
import { runOk, type LocalCache, type NixClient } from "./harness.ts";

export interface KeyPair {
  secretFile: string;
  publicKey: string;
}

/** A fresh Nix signing key pair (nix-store --generate-binary-cache-key). */
export async function generateKey(nix: NixClient, name: string): Promise<KeyPair> {
  const dir = await mkdtemp(join(nix.dir, "key-"));
  const secretFile = join(dir, "secret");
  const publicFile = join(dir, "public");
  await runOk("nix-store", ["--generate-binary-cache-key", name, secretFile, publicFile], { env: await nix.env() });
  return { secretFile, publicKey: (await readFile(publicFile, "utf8")).trim() };
}

/** Writes `paths` (with their closures) into a file:// binary cache, zstd, signed with `key`. */
export async function copyToFileCache(nix: NixClient, dir: string, key: KeyPair, paths: string[]): Promise<void> {
  await runOk("nix", ["copy", "--to", `file://${dir}?compression=zstd&secret-key=${key.secretFile}`, ...paths], { env: await nix.env() });
}

export function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

/** The narinfo a file cache holds for a path. */
export async function fileNarInfo(dir: string, storePath: string): Promise<string> {
  return readFile(join(dir, `${hashPart(storePath)}.narinfo`), "utf8");
}

/** A narinfo's lines other than URL (the one line the Worker may rewrite). */
export function withoutUrl(narinfo: string): string[] {
  return narinfo.split("\n").filter((l) => !l.startsWith("URL: "));
}

export function urlOf(narinfo: string): string {
  const line = narinfo.split("\n").find((l) => l.startsWith("URL: "));
  if (line === undefined) throw new Error(`no URL line in:\n${narinfo}`);
  return line.slice("URL: ".length);
}

/** sha256 of a store path's NAR serialisation, by Nix itself, under a store root ("" = /). */
export async function dump(storeRoot: string, storePath: string): Promise<string> {
  const r = await runOk("sh", ["-c", `nix-store --dump '${storeRoot}${storePath}' | sha256sum`]);
  return r.split(" ")[0]!;
}

/** Substitutes `path` into a fresh store with only `cache` as substituter. */
export async function substitute(nix: NixClient, cache: LocalCache, path: string, trustedKeys: string[]): Promise<string> {
  const store = await nix.emptyStore();
  await runOk(
    "nix-store",
    ["--store", store, "-r", path, "--option", "substituters", cache.url, "--option", "trusted-public-keys", trustedKeys.join(" ")],
    { env: await nix.env() },
  );
  return store;
}

/**
 * The harness's bucketSnapshot restricted to R2 objects: the state directory also holds the
 * Cache API's entries (`v3/cache/…`), where the Worker keeps its upstream memos.
 */
export async function r2Snapshot(cache: LocalCache): Promise<string[]> {
  return (await cache.bucketSnapshot()).split("\n").filter((line) => line.startsWith("/v3/r2/"));
}

/** The request log of wrangler dev: lines like `[wrangler:info] GET /x 200 OK (3ms)`. */
export function requestLog(cache: LocalCache): string[] {
  return cache.logs.split("\n").filter((line) => /\[wrangler:info\] (GET|HEAD|PUT|POST|DELETE) \S+ \d{3}\b/.test(line));
}

/** Logged requests answered with a 5xx; throws if the log shows no requests at all. */
export function serverErrors(cache: LocalCache): string[] {
  const log = requestLog(cache);
  if (log.length === 0) throw new Error("the Worker's request log is empty: cannot tell whether it answered a 5xx");
  return log.filter((line) => /\b(GET|HEAD|PUT|POST|DELETE) \S+ 5\d\d\b/.test(line));
}

/** Polls `check` until it returns true or `ms` pass; returns its last answer. */
export async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 250));
  }
}
