// Upstream aggregation end to end: the Worker (as `npm start` runs it) aggregates an
// upstream that is a real binary cache (written by `nix copy --to file://…`, served by a
// real HTTP server on loopback), and a real Nix 2.8 substitutes a closure whose paths live
// partly in our bucket and partly upstream, with only our URL as substituter.
//
// The closure: top → dep, top → tree. dep and tree are only upstream, signed by the
// upstream's key; top is pushed to us with plain `nix copy`, which finds dep and tree
// already served by us (through aggregation), uploads top alone, and the Worker accepts
// top's references because the aggregated upstream serves them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp } from "node:fs/promises";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, runOk, type Closure } from "./harness.ts";
import { UpstreamServer } from "./upstream-server.ts";
import {
  copyToFileCache, dump, fileNarInfo, generateKey, hashPart, r2Snapshot, serverErrors, substitute, urlOf, withoutUrl, type KeyPair,
} from "./upstream-helpers.ts";

let nix: NixClient;
let closure: Closure;
let upstreamKey: KeyPair;
let upstreamDir: string;
let upstream: UpstreamServer;
let cache: LocalCache;
/** Bucket contents right after the push: substitution must not change them. */
let afterPush: string[];

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  upstreamKey = await generateKey(nix, "upstream-test-1");
  upstreamDir = await mkdtemp(join(nix.dir, "upstream-cache-"));
  await copyToFileCache(nix, upstreamDir, upstreamKey, [closure.dep, closure.tree]);
  upstream = await UpstreamServer.start({ kind: "serve", root: upstreamDir });
  cache = await LocalCache.start({ AGGREGATE_UPSTREAMS: upstream.url });
  const netrc = await nix.netrc(cache.token);
  await runOk("nix", ["copy", "--to", `${cache.url}?compression=zstd`, closure.top, "--option", "netrc-file", netrc], {
    env: await nix.env(),
  });
  afterPush = await r2Snapshot(cache);
});

afterAll(async () => {
  await cache?.stop();
  await upstream?.stop();
  await nix?.cleanup();
});

describe("aggregating an upstream cache", () => {
  it("announces the aggregated upstream in nix-cache-info", async () => {
    const text = await (await fetch(`${cache.url}/nix-cache-info`)).text();
    expect(text).toBe(`StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\nUpstreams: ${upstream.url}\n`);
  });

  it("let nix copy upload only the path the upstream lacks, and accepted its references from the upstream", async () => {
    const top = await fetch(`${cache.url}/${hashPart(closure.top)}.narinfo`);
    expect(top.status).toBe(200);
    expect(top.headers.get("X-Upstream-Cache")).toBeNull();
    expect(urlOf(await top.text())).toMatch(/^nar\/[0-9a-z]{52}\.nar\.zst$/);
    // Our bucket got top only: no NAR of dep or tree was ever PUT to us.
    const puts = cache.logs.split("\n").filter((l) => /PUT \/nar\//.test(l));
    expect(puts).toHaveLength(1);
    for (const p of [closure.dep, closure.tree]) {
      expect(upstream.seen(`/${hashPart(p)}.narinfo`).length).toBeGreaterThan(0);
    }
  });

  it("serves an upstream narinfo with every line but URL as the upstream wrote it, signatures included", async () => {
    for (const p of [closure.dep, closure.tree]) {
      const res = await fetch(`${cache.url}/${hashPart(p)}.narinfo`);
      expect(res.status).toBe(200);
      expect(res.headers.get("X-Upstream-Cache")).toBe(upstream.url);
      const served = await res.text();
      const original = await fileNarInfo(upstreamDir, p);
      expect(withoutUrl(served)).toEqual(withoutUrl(original));
      expect(served).toContain("Sig: upstream-test-1:");
      expect(urlOf(served)).toBe(`upstream/127.0.0.1:${upstream.port}/${urlOf(original)}`);
    }
  });

  it("streams the upstream's NAR through our URL, byte for byte, and answers HEAD", async () => {
    const served = await (await fetch(`${cache.url}/${hashPart(closure.dep)}.narinfo`)).text();
    const original = await fileNarInfo(upstreamDir, closure.dep);
    const res = await fetch(`${cache.url}/${urlOf(served)}`);
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    const file = await readFile(join(upstreamDir, urlOf(original)));
    expect(createHash("sha256").update(body).digest("hex")).toBe(createHash("sha256").update(file).digest("hex"));
    const head = await fetch(`${cache.url}/${urlOf(served)}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Length")).toBe(String(file.length));
  });

  it("lets a real Nix substitute the whole closure naming only our URL, and writes nothing to the bucket", async () => {
    const store = await substitute(nix, cache, closure.top, [cache.publicKey, upstreamKey.publicKey]);
    for (const p of [closure.tree, closure.dep, closure.top]) {
      expect(await dump(store, p)).toBe(await dump("", p));
    }
    expect(await runOk("cat", [join(store, closure.top, "bin", "show")])).toContain(closure.dep);
    expect(await r2Snapshot(cache)).toEqual(afterPush);
    expect(serverErrors(cache)).toEqual([]);
  });

  it("does not re-sign upstream paths: a client trusting only our key refuses them", async () => {
    const store = await nix.emptyStore();
    const r = await nix.nixStore([
      "--store", store, "-r", closure.dep,
      "--option", "substituters", cache.url,
      "--option", "trusted-public-keys", cache.publicKey,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not signed by any of the keys/);
  });

  it("answers 404, not a 5xx, for a path neither we nor the upstream have, and for NARs it does not have", async () => {
    const absent = "0".repeat(32);
    expect((await fetch(`${cache.url}/${absent}.narinfo`)).status).toBe(404);
    expect((await fetch(`${cache.url}/${absent}.narinfo`, { method: "HEAD" })).status).toBe(404);
    const nar = `upstream/127.0.0.1:${upstream.port}/nar/${"1".repeat(52)}.nar.zst`;
    expect((await fetch(`${cache.url}/${nar}`)).status).toBe(404);
    // Only configured upstreams, and only their nar/ directory, are reachable.
    expect((await fetch(`${cache.url}/upstream/127.0.0.1:1/nar/x.nar`)).status).toBe(404);
    expect((await fetch(`${cache.url}/upstream/127.0.0.1:${upstream.port}/nix-cache-info`)).status).toBe(404);
    expect((await fetch(`${cache.url}/upstream/127.0.0.1:${upstream.port}/nar/..%2f${hashPart(closure.dep)}.narinfo`)).status).toBe(404);
    expect(serverErrors(cache)).toEqual([]);
  });
});
