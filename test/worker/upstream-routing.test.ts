// Routing of upstream aggregation inside workerd: how a narinfo's NAR URL is pointed
// through this cache, which request paths reach an upstream's NAR (and which never do),
// what counts as a valid upstream answer, and what the routes do when the bucket already
// has the object or the upstream cannot be reached. Exchanges with live upstream servers
// are in the end-to-end suite (test/e2e/upstream-*.test.ts).
import { reset } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import type { WorkerEnv } from "../../src/env.ts";
import { inCredentialScope } from "../../src/upstream/client.ts";
import { judgeNarInfo } from "../../src/upstream/lookup.ts";
import { replaceNarInfoUrl } from "../../src/nix/narinfo.ts";
import { clientNarUrl, locateNar, parseProxiedNar } from "../../src/upstream/nar-url.ts";
import { parseAggregation, type Upstream } from "../../src/upstream/settings.ts";
import { bytesOf, callWith, keys, push, signed, testPath, TEST_KEY } from "../helpers/worker.ts";

afterEach(() => reset());

function upstreams(list: string): Upstream[] {
  return parseAggregation({ ...env, AGGREGATE_UPSTREAMS: list } as WorkerEnv).upstreams;
}

const [nixos, prefixed] = upstreams("https://cache.nixos.org https://example.com/cache");
const FILE = "0a7qz07h6khgpdr7y9b9n0wnmcdbv9rkfvid6vf4r6pc21lihr1i.nar.xz";
/**
 * Nothing listens on port 1: connections are refused at once. (workerd logs "uncaught
 * exception … Network connection lost" for every refused fetch, even a caught one.)
 */
const DEAD = "http://127.0.0.1:1";

describe("pointing a narinfo's NAR through this cache", () => {
  it.each([
    [`nar/${FILE}`, { kind: "proxied", path: `nar/${FILE}` }],
    [`nar/abc.nar?hash=xyz`, { kind: "proxied", path: "nar/abc.nar?hash=xyz" }],
    [`https://cache.nixos.org/nar/${FILE}`, { kind: "proxied", path: `nar/${FILE}` }],
    [`/nar/${FILE}`, { kind: "proxied", path: `nar/${FILE}` }],
    [`https://cdn.example/nar/${FILE}`, { kind: "direct", url: `https://cdn.example/nar/${FILE}` }],
    [`other/${FILE}`, { kind: "direct", url: `https://cache.nixos.org/other/${FILE}` }],
    [`ftp://x.example/nar/${FILE}`, null],
  ])("from cache.nixos.org, URL %j", (url, expected) => {
    expect(locateNar(nixos!, url)).toEqual(expected);
  });

  it("resolves against an upstream's base path, as current Nix does", () => {
    expect(locateNar(prefixed!, `nar/${FILE}`)).toEqual({ kind: "proxied", path: `nar/${FILE}` });
    // A root-relative URL leaves the base path: the client is sent there directly.
    expect(locateNar(prefixed!, `/nar/${FILE}`)).toEqual({ kind: "direct", url: `https://example.com/nar/${FILE}` });
    expect(clientNarUrl(prefixed!, { kind: "proxied", path: `nar/${FILE}` })).toBe(`upstream/example.com/cache/nar/${FILE}`);
  });

  it("replaces only the URL line, keeping every other byte (signatures, unknown fields, order)", () => {
    const text = `StorePath: /nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x\nNarHash: sha256:${"1".repeat(52)}\nURL: nar/${FILE}\nFoo: bar\nNarSize: 1\nSig: k:${"A".repeat(86)}==\n`;
    const out = replaceNarInfoUrl(text, `upstream/cache.nixos.org/nar/${FILE}`);
    expect(out).toBe(text.replace(`URL: nar/${FILE}\n`, `URL: upstream/cache.nixos.org/nar/${FILE}\n`));
  });
});

describe("request paths that reach an upstream's NAR", () => {
  const parse = (path: string) => parseProxiedNar([nixos!, prefixed!], new URL(`https://our.example${path}`));

  it("names the configured upstream and keeps the query", () => {
    expect(parse(`/upstream/cache.nixos.org/nar/${FILE}`)).toEqual({
      upstream: nixos,
      url: `https://cache.nixos.org/nar/${FILE}`,
      bucketKey: `nar/${FILE}`,
    });
    expect(parse(`/upstream/example.com/cache/nar/abc.nar?hash=xyz`)).toEqual({
      upstream: prefixed,
      url: "https://example.com/cache/nar/abc.nar?hash=xyz",
      bucketKey: null,
    });
  });

  it.each([
    "/upstream/evil.example/nar/x.nar",
    "/upstream/cache.nixos.org/nix-cache-info",
    "/upstream/cache.nixos.org/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo",
    "/upstream/cache.nixos.org/nar/..%2fnix-cache-info",
    "/upstream/cache.nixos.org/nar/%2e%2e/nix-cache-info",
    "/upstream/cache.nixos.org/nar/a%5C..%5Cb",
    "/upstream/cache.nixos.org/nar//x.nar",
    "/upstream/cache.nixos.org/nar/",
    "/upstream/example.com/nar/x.nar",
    "/upstream/cache.nixos.org",
    "/nar/x.nar",
  ])("never %j", (path) => {
    expect(parse(path)).toBeNull();
  });
});

describe("where a private upstream's credentials may go", () => {
  const [root, based] = upstreams("https://private.example https://private.example:8443/cache");
  it.each([
    // [upstream, url, scope, allowed]
    [root, "https://private.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo", "cache", true],
    [root, `https://private.example/nar/${FILE}`, "nar", true],
    [root, `https://private.example/nar/moved/${FILE}?x=1`, "nar", true],
    [root, `https://private.example/other/${FILE}`, "nar", false],
    [root, "https://private.example/nar", "nar", false],
    [root, `https://private.example/nar/..%2f${FILE}`, "nar", false],
    [root, `https://private.example/nar/a%5C..%5C${FILE}`, "nar", false],
    [root, `https://private.example/nar/../secret`, "nar", false],
    [root, `https://private.example/nar/%2e%2e/secret`, "nar", false],
    [root, `https://u:p@private.example/nar/${FILE}`, "nar", false],
    [root, `http://private.example/nar/${FILE}`, "nar", false],
    [root, `https://cdn.example/nar/${FILE}`, "nar", false],
    [root, `https://private.example.evil/nar/${FILE}`, "nar", false],
    [based, "https://private.example:8443/cache/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo", "cache", true],
    [based, `https://private.example:8443/cache/nar/${FILE}`, "nar", true],
    [based, "https://private.example:8443/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo", "cache", false],
    [based, "https://private.example:8443/cachex/a.narinfo", "cache", false],
    [based, `https://private.example:8443/nar/${FILE}`, "nar", false],
    [based, `https://private.example:8443/cache/outside/${FILE}`, "nar", false],
    [based, `https://private.example/cache/nar/${FILE}`, "nar", false],
  ] as const)("%#: %s", (upstream, url, scope, allowed) => {
    expect(inCredentialScope(upstream!, new URL(url), scope)).toBe(allowed);
  });
});

describe("judging an upstream's narinfo", () => {
  it("takes a valid narinfo of the requested path, and nothing else", async () => {
    const p = await testPath("judged");
    const text = formatNarInfo(p.info);
    expect(judgeNarInfo(nixos!, p.hash, text)).toMatchObject({ kind: "hit", hit: { text, nar: { kind: "proxied" } } });
    expect(judgeNarInfo(nixos!, "1".repeat(32), text)).toMatchObject({ kind: "garbage", reason: expect.stringMatching(/not for hash/) });
    expect(judgeNarInfo(nixos!, p.hash, "<html>oops</html>\n")).toMatchObject({ kind: "garbage", reason: expect.stringMatching(/unparseable/) });
    expect(judgeNarInfo(nixos!, p.hash, text.replace(/^URL: .*$/m, "URL: ftp://x/nar/a.nar"))).toMatchObject({ kind: "garbage" });
  });
});

describe("the routes, with an upstream that cannot be reached", () => {
  it("serves a narinfo from the bucket without asking the upstream", async () => {
    const p = await testPath("in-bucket");
    await push(p, await signed(p.info, TEST_KEY));
    const res = await callWith({ AGGREGATE_UPSTREAMS: DEAD }, `/${p.hash}.narinfo`);
    expect(res.status).toBe(200);
    expect(res.headers.get("X-Upstream-Cache")).toBeNull();
    expect(await res.text()).toContain(`StorePath: ${p.storePath}\n`);
  });

  it("answers a miss with 404, not a 5xx, for GET and HEAD", async () => {
    for (const method of ["GET", "HEAD"]) {
      const res = await callWith({ AGGREGATE_UPSTREAMS: DEAD }, `/${"3".repeat(32)}.narinfo`, { method });
      expect(res.status).toBe(404);
      await res.arrayBuffer();
    }
  });

  it("serves an upstream-named NAR from the bucket when the bucket has that file", async () => {
    const p = await testPath("nar-in-bucket");
    await push(p);
    const res = await callWith({ AGGREGATE_UPSTREAMS: DEAD }, `/upstream/127.0.0.1:1/nar/${p.fileName}`);
    expect(res.status).toBe(200);
    expect(await bytesOf(res)).toEqual(p.file);
  });

  it("answers 404 for a NAR the upstream does not deliver, and for paths of unconfigured upstreams", async () => {
    const before = await keys();
    const missing = await callWith({ AGGREGATE_UPSTREAMS: DEAD }, `/upstream/127.0.0.1:1/nar/${FILE}`);
    expect(missing.status).toBe(404);
    const unknown = await callWith({ AGGREGATE_UPSTREAMS: DEAD }, `/upstream/cache.nixos.org/nar/${FILE}`);
    expect(unknown.status).toBe(404);
    expect((await callWith({}, `/upstream/127.0.0.1:1/nar/${FILE}`)).status).toBe(404);
    expect(await keys()).toEqual(before);
  });

  it("still needs the read token for upstream paths of a private cache", async () => {
    const res = await callWith({ AGGREGATE_UPSTREAMS: DEAD, READ_TOKEN: "r" }, `/upstream/127.0.0.1:1/nar/${FILE}`);
    expect(res.status).toBe(401);
    const narinfo = await callWith({ AGGREGATE_UPSTREAMS: DEAD, READ_TOKEN: "r" }, `/${"3".repeat(32)}.narinfo`);
    expect(narinfo.status).toBe(401);
  });
});
