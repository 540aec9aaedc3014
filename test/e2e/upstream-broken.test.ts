// Broken upstreams never break the cache. Listed before the one good upstream: one that
// accepts connections and never answers, one that answers 500, one that answers 200 with
// something that is no narinfo, and one that answers every narinfo request with a valid,
// correctly signed narinfo of another path. The good upstream is private (it wants a
// token, which the Worker has from AGGREGATE_UPSTREAMS_NETRC for that host:port only), and
// write-through is on with the good upstream's key.
//
// Real Nix substitutes the closure through the Worker alone; the Worker never answers a 5xx;
// the broken upstreams cost one timeout and are then skipped for a while; and what ends up
// in the bucket is exactly what the good upstream served.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, runOk, type Closure } from "./harness.ts";
import { UpstreamServer } from "./upstream-server.ts";
import {
  copyToFileCache, dump, eventually, fileNarInfo, generateKey, hashPart, r2Snapshot, requestLog, serverErrors, substitute, urlOf, withoutUrl,
  type KeyPair,
} from "./upstream-helpers.ts";

/** The Worker's per-upstream narinfo timeout (src/upstream/lookup.ts NARINFO_TIMEOUT_MS). */
const NARINFO_TIMEOUT_MS = 3000;
const UPSTREAM_TOKEN = "upstream-secret-token";

let nix: NixClient;
let closure: Closure;
let key: KeyPair;
let goodDir: string;
let hang: UpstreamServer;
let error: UpstreamServer;
let garbage: UpstreamServer;
let wrongPath: UpstreamServer;
let good: UpstreamServer;
let broken: UpstreamServer[];
let cache: LocalCache;

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  key = await generateKey(nix, "upstream-test-1");
  goodDir = await mkdtemp(join(nix.dir, "good-cache-"));
  await copyToFileCache(nix, goodDir, key, [closure.top]);

  // A real, correctly signed narinfo, but of a path nobody asks for.
  const decoyFile = join(nix.dir, `decoy-${randomBytes(4).toString("hex")}`);
  await writeFile(decoyFile, "decoy\n");
  const decoy = (await runOk("nix-store", ["--add", decoyFile], { env: await nix.env() })).trim();
  const decoyDir = await mkdtemp(join(nix.dir, "decoy-cache-"));
  await copyToFileCache(nix, decoyDir, key, [decoy]);

  hang = await UpstreamServer.start({ kind: "hang" });
  error = await UpstreamServer.start({ kind: "error" });
  garbage = await UpstreamServer.start({ kind: "garbage" });
  wrongPath = await UpstreamServer.start({ kind: "wrong-path", narinfo: await fileNarInfo(decoyDir, decoy) });
  good = await UpstreamServer.start({ kind: "serve", root: goodDir, token: UPSTREAM_TOKEN });
  broken = [hang, error, garbage, wrongPath];
  cache = await LocalCache.start({
    AGGREGATE_UPSTREAMS: [...broken, good].map((u) => u.url).join(" "),
    AGGREGATE_UPSTREAMS_NETRC: `machine 127.0.0.1:${good.port} login nix password ${UPSTREAM_TOKEN}`,
    AGGREGATE_WRITE_THROUGH_KEYS: key.publicKey,
  });
});

afterAll(async () => {
  await cache?.stop();
  for (const u of [hang, error, garbage, wrongPath, good]) await u?.stop();
  await nix?.cleanup();
});

async function timed(url: string): Promise<{ status: number; ms: number }> {
  const start = Date.now();
  const res = await fetch(url);
  await res.arrayBuffer();
  return { status: res.status, ms: Date.now() - start };
}

describe("aggregation with broken upstreams listed first", () => {
  it("answers 404 for a path only broken upstreams claim, remembers the hanging and failing ones, stores nothing", async () => {
    const before = await r2Snapshot(cache);
    const first = "1".repeat(32);
    const second = "2".repeat(32);

    const a = await timed(`${cache.url}/${first}.narinfo`);
    expect(a.status).toBe(404);
    expect(a.ms).toBeGreaterThanOrEqual(NARINFO_TIMEOUT_MS - 100);
    for (const u of [...broken, good]) expect(u.seen(`/${first}.narinfo`)).toHaveLength(1);
    // Memos are written after the response.
    await new Promise((r) => setTimeout(r, 500));

    // The hanging and the 500 upstream are skipped for a while: no second timeout.
    const b = await timed(`${cache.url}/${second}.narinfo`);
    expect(b.status).toBe(404);
    expect(b.ms).toBeLessThan(NARINFO_TIMEOUT_MS / 2);
    expect(hang.seen(`/${second}.narinfo`)).toHaveLength(0);
    expect(error.seen(`/${second}.narinfo`)).toHaveLength(0);
    // Garbage is a property of an answer, not of the upstream: those are still asked.
    expect(garbage.seen(`/${second}.narinfo`)).toHaveLength(1);
    expect(wrongPath.seen(`/${second}.narinfo`)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 500));

    // A miss is remembered too: asking again costs no upstream request.
    const asked = [...broken, good].map((u) => u.requests.length);
    expect((await timed(`${cache.url}/${first}.narinfo`)).status).toBe(404);
    expect([...broken, good].map((u) => u.requests.length)).toEqual(asked);

    expect(await r2Snapshot(cache)).toEqual(before);
  });

  it("lets a real Nix substitute the closure from the remaining upstream, with no 5xx anywhere", async () => {
    const store = await substitute(nix, cache, closure.top, [key.publicKey]);
    for (const p of [closure.tree, closure.dep, closure.top]) {
      expect(await dump(store, p)).toBe(await dump("", p));
    }
    expect(requestLog(cache).some((l) => l.includes(`GET /${hashPart(closure.top)}.narinfo 200`))).toBe(true);
    expect(serverErrors(cache)).toEqual([]);
    // Credentials went to the private upstream, and to no other.
    expect(good.seen(".narinfo").every((r) => r.authorization !== undefined)).toBe(true);
    for (const u of broken) expect(u.requests.every((r) => r.authorization === undefined)).toBe(true);
  });

  it("stores in the bucket exactly what the good upstream served, once write-through is done", async () => {
    const fromBucket = async (p: string): Promise<string | null> => {
      const res = await fetch(`${cache.url}/${hashPart(p)}.narinfo`);
      const text = await res.text();
      return res.status === 200 && res.headers.get("X-Upstream-Cache") === null ? text : null;
    };
    const paths = [closure.tree, closure.dep, closure.top];
    expect(await eventually(async () => (await Promise.all(paths.map(fromBucket))).every((t) => t !== null), 20_000)).toBe(true);
    for (const p of paths) {
      const stored = (await fromBucket(p))!;
      const original = await fileNarInfo(goodDir, p);
      expect(withoutUrl(stored)).toEqual(withoutUrl(original));
      expect(urlOf(stored)).toBe(urlOf(original));
      const nar = await fetch(`${cache.url}/${urlOf(stored)}`);
      expect(nar.status).toBe(200);
      expect(nar.headers.get("Content-Length")).toBe(/^FileSize: (\d+)$/m.exec(original)![1]);
    }
    // Three narinfos, three NARs and the stored nix-cache-info (storage/cache-info-object.ts);
    // nothing else (the day's write-through counters are in D1, storage/write-through-budget.ts).
    expect(await r2Snapshot(cache)).toHaveLength(7);
    expect(serverErrors(cache)).toEqual([]);
  });
});
