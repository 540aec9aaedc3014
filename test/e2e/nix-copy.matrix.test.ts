// A real Nix 2.8 pushes to and substitutes from the Worker as `npm start` runs it.
//
// Proves issue 3's promise end to end: plain `nix copy --to http://…` authenticated through
// a netrc file, substitution of the whole closure into an empty store with only the
// cache's public key trusted, a refused push with a wrong token, and a client refusing a
// narinfo whose signature does not verify.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, run, runOk, type Closure } from "./harness.ts";

let cache: LocalCache;
let nix: NixClient;
let closure: Closure;

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  cache = await LocalCache.start();
});

afterAll(async () => {
  await cache?.stop();
  await nix?.cleanup();
});

function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

/** Serialises a path with Nix itself, to compare two stores' copies exactly. */
async function dump(storeRoot: string, storePath: string): Promise<string> {
  const r = await runOk("sh", ["-c", `nix-store --dump '${storeRoot}${storePath}' | sha256sum`]);
  return r.split(" ")[0]!;
}

describe("nix copy and substitution against the local Worker", () => {
  it("refuses a push with a wrong token and stores nothing", async () => {
    const before = await cache.bucketSnapshot();
    const netrc = await nix.netrc("not-the-token");
    const r = await nix.nix([
      "copy", "--to", `${cache.url}?compression=zstd`, closure.dep,
      "--option", "netrc-file", netrc,
    ]);
    expect(r.code).not.toBe(0);
    expect(await cache.bucketSnapshot()).toBe(before);
    const res = await fetch(`${cache.url}/${hashPart(closure.dep)}.narinfo`);
    expect(res.status).toBe(404);
  });

  it("accepts nix copy --to of a closure through the netrc file npm start writes", async () => {
    const netrc = join(cache.stateDir, "netrc");
    await runOk("nix", ["copy", "--to", `${cache.url}?compression=zstd`, closure.top, "--option", "netrc-file", netrc], {
      env: await nix.env(),
    });
    for (const p of [closure.tree, closure.dep, closure.top]) {
      const res = await fetch(`${cache.url}/${hashPart(p)}.narinfo`);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toContain(`StorePath: ${p}\n`);
      expect(text).toContain("Compression: zstd\n");
      // The Worker signs what it stores with the cache's key.
      expect(text).toContain(`Sig: ${cache.publicKey.split(":")[0]}:`);
    }
  });

  it("substitutes the whole closure into an empty store with only the cache's key trusted", async () => {
    const store = await nix.emptyStore();
    await runOk(
      "nix-store",
      [
        "--store", store, "-r", closure.top,
        "--option", "substituters", cache.url,
        "--option", "trusted-public-keys", cache.publicKey,
      ],
      { env: await nix.env() },
    );
    for (const p of [closure.tree, closure.dep, closure.top]) {
      expect(await dump(store, p)).toBe(await dump("", p));
    }
    const show = await runOk("cat", [join(store, closure.top, "bin", "show")]);
    expect(show).toContain(closure.dep);
  });

  it("is refused by a client that trusts a different key under the same name", async () => {
    const [name] = cache.publicKey.split(":");
    const otherKey = `${name}:${Buffer.alloc(32, 7).toString("base64")}`;
    const store = await nix.emptyStore();
    const r = await nix.nixStore([
      "--store", store, "-r", closure.dep,
      "--option", "substituters", cache.url,
      "--option", "trusted-public-keys", otherKey,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not signed by any of the keys|signature is not valid/);
    const listed = await run("ls", [join(store, closure.dep)]);
    expect(listed.code).not.toBe(0);
  });
});
