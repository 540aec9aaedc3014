// Planning: the references-first order (property-tested over random DAGs), upstream
// skipping by key name, and the missing query against a plain binary cache written by
// `nix copy --to file://` and served over HTTP (which has no batch endpoint, so the
// planner falls back to one HEAD per narinfo). The query against the Worker's batch
// endpoint is exercised by push.test.ts.
import { createReadStream, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import type { MissingRequest } from "../../src/api/missing.ts";
import { HttpClient } from "../../uploader/http.ts";
import { isSignedBy, planPush, referencesFirst } from "../../uploader/plan.ts";
import { RemoteCache } from "../../uploader/remote-cache.ts";
import { queryClosure, type StorePathInfo } from "../../uploader/store.ts";
import { NixSandbox } from "./helpers.ts";

function fakeInfo(i: number, refs: number[], sigs: string[] = []): StorePathInfo {
  const hash = i.toString().padStart(32, "0");
  const path = (n: number): string => `/nix/store/${n.toString().padStart(32, "0")}-p${n}`;
  return { path: path(i), hashPart: hash, narHash: "", narSize: 1, references: refs.map(path), sigs };
}

describe("referencesFirst", () => {
  test("every path comes after its references, none lost, same order for any input order", () => {
    const dag = fc
      .integer({ min: 1, max: 40 })
      .chain((n) =>
        fc.tuple(
          // Node i may reference only nodes below i (and itself), so the graph is acyclic.
          fc.tuple(...Array.from({ length: n }, (_, i) => fc.subarray(Array.from({ length: i + 1 }, (_, j) => j)))),
          fc.array(fc.nat(), { minLength: n, maxLength: n }),
        ),
      );
    fc.assert(
      fc.property(dag, ([refLists, keys]) => {
        const infos = refLists.map((refs, i) => fakeInfo(i, refs));
        const shuffled = infos.map((info, i) => [keys[i]!, info] as const).sort((a, b) => a[0] - b[0]).map(([, info]) => info);
        const order = referencesFirst(shuffled);
        expect(order.map((p) => p.path).sort()).toEqual(infos.map((p) => p.path).sort());
        const position = new Map(order.map((p, i) => [p.path, i]));
        for (const p of order) {
          for (const r of p.references) {
            if (r !== p.path) expect(position.get(r)!).toBeLessThan(position.get(p.path)!);
          }
        }
        expect(referencesFirst(infos).map((p) => p.path)).toEqual(order.map((p) => p.path));
      }),
    );
  });

  test("references outside the list (already cached, upstream) do not hold a path back", () => {
    const order = referencesFirst([fakeInfo(2, [1, 0]), fakeInfo(1, [0, 99])]);
    expect(order.map((p) => p.path)).toEqual([fakeInfo(1, []).path, fakeInfo(2, []).path]);
  });
});

describe("isSignedBy", () => {
  test("matches the key name before the first colon", () => {
    const info = fakeInfo(1, [], ["cache.nixos.org-1:abc==", "mine-1:def=="]);
    expect(isSignedBy(info, ["cache.nixos.org-1"])).toBe(true);
    expect(isSignedBy(info, ["mine-1"])).toBe(true);
    expect(isSignedBy(info, ["cache.nixos.org"])).toBe(false);
    expect(isSignedBy(info, [])).toBe(false);
    expect(isSignedBy(fakeInfo(1, [], ["nocolon"]), ["nocolon"])).toBe(false);
  });
});

describe("planPush against a plain binary cache (nix copy --to file://, served over HTTP)", () => {
  let nix: NixSandbox;
  let server: Server;
  let url: string;
  let closure: { tree: string; dep: string; top: string };

  beforeAll(async () => {
    nix = await NixSandbox.create();
    closure = await nix.buildClosure();
    const cacheDir = await nix.tempDir("cache-");
    await nix.nix(["copy", "--to", `file://${cacheDir}?compression=none`, closure.dep]);
    // A static file server: 404 for anything absent, POST included.
    server = createServer((req, res) => {
      const file = normalize(join(cacheDir, decodeURIComponent(new URL(req.url!, "http://x").pathname)));
      let size: number | undefined;
      try {
        size = file.startsWith(cacheDir) ? statSync(file).size : undefined;
      } catch {
        size = undefined;
      }
      if (req.method === "POST" || size === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-length": size });
      if (req.method === "HEAD") res.end();
      else createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    await nix?.cleanup();
  });

  test("cached paths are recognised, the rest ordered references first", async () => {
    const infos = await queryClosure([closure.top], { env: nix.env });
    const http = new HttpClient({ baseUrl: url });
    const plan = await planPush(infos, new RemoteCache(http), { upstreamKeys: ["cache.nixos.org-1"] });
    http.close();
    expect(plan.alreadyCached.map((p) => p.path)).toEqual([closure.dep]);
    expect(plan.toUpload.map((p) => p.path)).toEqual([closure.tree, closure.top]);
    expect(plan.skippedUpstream).toEqual([]);
  });

  test("paths signed by an upstream key are skipped; none with no upstream keys", async () => {
    const keys = await nix.tempDir();
    await nix.nixStore(["--generate-binary-cache-key", "upstream-test-1", join(keys, "sk"), join(keys, "pk")]);
    await nix.nix(["store", "sign", "--key-file", join(keys, "sk"), closure.tree]);
    const infos = await queryClosure([closure.top], { env: nix.env });
    const http = new HttpClient({ baseUrl: url });
    const cache = new RemoteCache(http);
    const skipping = await planPush(infos, cache, { upstreamKeys: ["upstream-test-1"] });
    const all = await planPush(infos, cache, { upstreamKeys: [] });
    http.close();
    expect(skipping.skippedUpstream.map((p) => p.path)).toEqual([closure.tree]);
    expect(skipping.toUpload.map((p) => p.path)).toEqual([closure.top]);
    expect(all.toUpload.map((p) => p.path)).toEqual([closure.tree, closure.top]);
  });
});

describe("the missing query while the cache's index is being adopted (answers with unchecked hashes)", () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
  });

  /**
   * A loopback server answering `POST /_api/v1/missing` as src/api/missing.ts describes: of
   * the asked hashes, it looks up `lookups` per request in its store and leaves the rest
   * unchecked (listed in `missing` too); `unchecked: false` answers as a Worker from before
   * the field did. Returns the client and the bodies asked.
   */
  async function cacheServer(stored: ReadonlySet<string>, lookups: number, withUnchecked = true): Promise<{ cache: RemoteCache; http: HttpClient; asked: string[][] }> {
    const asked: string[][] = [];
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const { hashes } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as MissingRequest;
        asked.push(hashes);
        const unchecked = hashes.slice(lookups);
        const missing = hashes.filter((h, i) => i >= lookups || !stored.has(h));
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(withUnchecked ? { missing, unchecked } : { missing }));
      });
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const http = new HttpClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, token: "tok", retryBaseMs: 5 });
    return { cache: new RemoteCache(http), http, asked };
  }

  const hashes = Array.from({ length: 10 }, (_, i) => `${"0".repeat(31)}${"0123456789"[i]}`);
  const stored = new Set(hashes.filter((_, i) => i % 3 === 0));
  const absent = hashes.filter((h) => !stored.has(h));

  test("unchecked hashes are asked again until every one is settled", async () => {
    const { cache, http, asked } = await cacheServer(stored, 4);
    const missing = await cache.missing(hashes);
    http.close();
    expect([...missing].sort()).toEqual(absent);
    expect(asked).toEqual([hashes, hashes.slice(4), hashes.slice(8)]);
  });

  test("an answer without unchecked (an older Worker) is taken as it is", async () => {
    const { cache, http, asked } = await cacheServer(stored, 4, false);
    const missing = await cache.missing(hashes);
    http.close();
    expect([...missing].sort()).toEqual([...absent, ...hashes.slice(4).filter((h) => stored.has(h))].sort());
    expect(asked).toHaveLength(1);
  });

  test("a cache that settles nothing: its unchecked hashes count as missing, no endless asking", async () => {
    const { cache, http, asked } = await cacheServer(stored, 0);
    const missing = await cache.missing(hashes);
    http.close();
    expect([...missing].sort()).toEqual(hashes);
    expect(asked).toHaveLength(1);
  });
});
