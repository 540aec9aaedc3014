// Reads without the Worker with every Nix version of the matrix (2.8, 2.26, 2.34, each in its
// Debian chroot): what one version pushes with `nix copy`, it substitutes through a Worker
// with NAR_BASE_URL (the narinfo's URL absolute, the NAR from the bucket's public domain)
// and directly from the bucket's domain, the local stand-in reading the cache's own R2
// (dev/public-bucket.ts). Nix 2.8 and 2.26 pass an absolute URL through makeRequest,
// 2.34 resolves it with parseURLRelative: both must fetch it from the bucket, not the Worker.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { PublicBucket } from "../../dev/public-bucket.ts";
import { ChrootNix, matrixChroots } from "./chroot-nix.ts";
import { freePort, LocalCache, type Closure } from "./harness.ts";

const chroots = await matrixChroots();

let cache: LocalCache;
let narBase: LocalCache;
let bucket: PublicBucket;
const clients = new Map<string, ChrootNix>();
const closures = new Map<string, Closure>();

/** NAR and narinfo requests wrangler logged after `from` characters of output. */
function perPath(logs: string, from: number): string[] {
  return [...logs.slice(from).matchAll(/\[wrangler:info\] GET (\/[0-9a-z]{32}\.narinfo|\/nar\/[0-9a-z]{52}\.nar\S*) \d{3}/g)].map((m) => m[1]!);
}

beforeAll(async () => {
  cache = await LocalCache.start();
  const port = await freePort();
  [narBase, bucket] = await Promise.all([
    LocalCache.start({ NAR_BASE_URL: `http://127.0.0.1:${port}` }, { sharing: cache }),
    PublicBucket.start(join(cache.stateDir, "r2"), port),
  ]);
  for (const c of chroots) {
    const nix = await ChrootNix.create(c);
    clients.set(c.name, nix);
    closures.set(c.name, await nix.buildClosure());
  }
});

afterAll(async () => {
  await bucket?.stop();
  await narBase?.stop();
  await cache?.stop();
  for (const nix of clients.values()) await nix.cleanup();
});

describe.each(chroots.map((c) => [c.name]))("Nix %s", (name) => {
  it("substitutes what it pushed through NAR_BASE_URL (NARs from the bucket) and directly from the bucket", async () => {
    const nix = clients.get(name)!;
    const closure = closures.get(name)!;
    const paths = [closure.tree, closure.dep, closure.top];
    await nix.nixOk(["copy", "--to", `${cache.url}?compression=zstd`, closure.top, "--option", "netrc-file", await nix.netrc(cache.token)]);
    for (const substituter of [narBase.url, bucket.url]) {
      const marks = [narBase.logs.length, bucket.logs.length] as const;
      const store = await nix.emptyStore();
      const r = await nix.nixStore(["--store", store, "-r", closure.top, "--option", "substituters", substituter, "--option", "trusted-public-keys", cache.publicKey]);
      expect(r.code, `[Nix ${name} from ${substituter}] ${r.stderr}`).toBe(0);
      for (const p of paths) expect(await nix.dumpHash(p, store), p).toBe(await nix.dumpHash(p));
      await new Promise((resolve) => setTimeout(resolve, 500));
      const fromWorker = perPath(narBase.logs, marks[0]);
      const fromBucket = perPath(bucket.logs, marks[1]);
      // Every NAR from the bucket; narinfos from the Worker, or from the bucket when read directly.
      expect(fromBucket.filter((r) => r.startsWith("/nar/")), substituter).toHaveLength(paths.length);
      expect(fromWorker.filter((r) => r.startsWith("/nar/")), substituter).toEqual([]);
      expect(fromWorker.length + fromBucket.filter((r) => r.endsWith(".narinfo")).length, substituter).toBe(paths.length);
      expect(fromWorker.length, substituter).toBe(substituter === narBase.url ? paths.length : 0);
    }
  });
});
