// Write-through end to end: with AGGREGATE_WRITE_THROUGH_KEYS set to the upstream's key,
// a closure a real Nix substitutes through the Worker is copied into the bucket in the
// background, so that once the upstream server is stopped a second client, in a fresh
// store with a fresh narinfo cache, still substitutes it, through the same URLs.
//
// Copies are held to closure integrity: a path whose reference cannot be copied (signed
// only by a key that is not trusted for write-through) is served but never stored, and
// neither is anything that refers to it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, type Closure } from "./harness.ts";
import { UpstreamServer } from "./upstream-server.ts";
import {
  copyToFileCache, dump, eventually, fileNarInfo, generateKey, hashPart, r2Snapshot, serverErrors, substitute, urlOf, withoutUrl,
  type KeyPair,
} from "./upstream-helpers.ts";

let nix: NixClient;
/** Entirely upstream, signed by the upstream's key. */
let closure: Closure;
/** Upstream too, but its dep is signed only by a key not trusted for write-through. */
let mixed: Closure;
let key: KeyPair;
let otherKey: KeyPair;
let upstreamDir: string;
let upstream: UpstreamServer;
let cache: LocalCache;

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  mixed = await buildClosure(nix);
  key = await generateKey(nix, "upstream-test-1");
  otherKey = await generateKey(nix, "upstream-other-1");
  upstreamDir = await mkdtemp(join(nix.dir, "upstream-cache-"));
  await copyToFileCache(nix, upstreamDir, key, [closure.top]);
  // dep first, with the other key; then the rest of its closure with the trusted one.
  await copyToFileCache(nix, upstreamDir, otherKey, [mixed.dep]);
  await copyToFileCache(nix, upstreamDir, key, [mixed.top]);
  upstream = await UpstreamServer.start({ kind: "serve", root: upstreamDir });
  cache = await LocalCache.start({ AGGREGATE_UPSTREAMS: upstream.url, AGGREGATE_WRITE_THROUGH_KEYS: key.publicKey });
});

afterAll(async () => {
  await cache?.stop();
  await upstream?.stop();
  await nix?.cleanup();
});

/** The narinfo our bucket serves for a path, or null while it is only upstream. */
async function fromBucket(path: string): Promise<string | null> {
  const res = await fetch(`${cache.url}/${hashPart(path)}.narinfo`);
  const text = await res.text();
  return res.status === 200 && res.headers.get("X-Upstream-Cache") === null ? text : null;
}

describe("write-through", () => {
  /** The narinfo URLs the first client was given, to be fetched again later. */
  const servedUrls = new Map<string, string>();

  it("copies a substituted closure into the bucket, each narinfo as the upstream signed it", async () => {
    const paths = [closure.tree, closure.dep, closure.top];
    for (const p of paths) {
      const res = await fetch(`${cache.url}/${hashPart(p)}.narinfo`, { method: "HEAD" });
      expect(res.headers.get("X-Upstream-Cache")).toBe(upstream.url);
    }
    // HEAD never copies: the bucket holds only the nix-cache-info object the Worker keeps
    // there (storage/cache-info-object.ts), 51 bytes.
    const objects = await r2Snapshot(cache);
    expect(objects).toHaveLength(1);
    expect(objects[0]).toMatch(/ 51$/);

    const store = await substitute(nix, cache, closure.top, [key.publicKey]);
    for (const p of paths) expect(await dump(store, p)).toBe(await dump("", p));

    // The first client's narinfos named NARs through /upstream/…; remember those URLs.
    for (const p of paths) {
      const file = urlOf(await fileNarInfo(upstreamDir, p));
      servedUrls.set(p, `upstream/127.0.0.1:${upstream.port}/${file}`);
    }

    expect(await eventually(async () => (await Promise.all(paths.map(fromBucket))).every((t) => t !== null), 20_000)).toBe(true);
    for (const p of paths) {
      const stored = (await fromBucket(p))!;
      const original = await fileNarInfo(upstreamDir, p);
      expect(withoutUrl(stored)).toEqual(withoutUrl(original));
      expect(urlOf(stored)).toBe(urlOf(original));
      // Not re-signed by the Worker: only the upstream's signature.
      expect(stored.split("\n").filter((l) => l.startsWith("Sig: "))).toEqual([expect.stringMatching(/^Sig: upstream-test-1:/)]);
    }
  });

  it("never stores a path whose reference it cannot copy, nor anything above it", async () => {
    // A client trusting both keys gets the whole closure through the Worker.
    const store = await substitute(nix, cache, mixed.top, [key.publicKey, otherKey.publicKey]);
    for (const p of [mixed.tree, mixed.dep, mixed.top]) expect(await dump(store, p)).toBe(await dump("", p));
    // tree (no references, trusted key) is copied...
    expect(await eventually(async () => (await fromBucket(mixed.tree)) !== null, 20_000)).toBe(true);
    // ...dep (other key) is not, so top (references dep) is not either, however often asked.
    for (let i = 0; i < 3; i++) {
      await fetch(`${cache.url}/${hashPart(mixed.top)}.narinfo`).then((r) => r.arrayBuffer());
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await fromBucket(mixed.dep)).toBeNull();
    expect(await fromBucket(mixed.top)).toBeNull();
  });

  it("keeps serving the closure after the upstream is gone, to a fresh client and through the old NAR URLs", async () => {
    await upstream.stop();

    const store = await substitute(nix, cache, closure.top, [key.publicKey]);
    for (const p of [closure.tree, closure.dep, closure.top]) expect(await dump(store, p)).toBe(await dump("", p));

    // A client that cached a narinfo from before the copy still finds its NAR.
    for (const url of servedUrls.values()) {
      const res = await fetch(`${cache.url}/${url}`);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    // A path that was never copied now depends on a dead upstream: never a 5xx for it.
    const res = await fetch(`${cache.url}/${hashPart(mixed.dep)}.narinfo`);
    expect(res.status).toBeLessThan(500);
    expect(serverErrors(cache)).toEqual([]);
  });
});
