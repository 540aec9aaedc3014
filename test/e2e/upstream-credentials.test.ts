// Credentials of a private upstream never leave the directory of the object asked for.
// The Worker (as `npm start` runs it) aggregates a private upstream at a base path
// (`http://127.0.0.1:<port>/cache`, token from AGGREGATE_UPSTREAMS_NETRC), a real HTTP
// server on loopback that records every request with its Authorization header, and that
// redirects some objects within the same origin:
//
//   in scope      cache/nar/<A>  → cache/nar/moved/<A>      credentials follow: served
//                 cache/<E>.narinfo → cache/mirror/<E>.narinfo
//   out of scope  cache/nar/<B>  → cache/outside/<B>        no credentials: 401 → our 404
//                 cache/nar/<B2> → cache/nar/..%2foutside/<B2>   (the server decodes %2f)
//                 cache/<C>.narinfo → private/<C>.narinfo   (outside the cache root)
//
// Write-through is on with the narinfos' key, so the background copy's NAR fetches are
// covered too. The narinfos and NARs are made with the core (fakeCachePath), no Nix needed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseSecretKey } from "../../src/nix/signature.ts";
import { LocalCache } from "./harness.ts";
import { fakeCachePath, UpstreamServer, type FakeCachePath, type SeenRequest } from "./upstream-server.ts";
import { eventually, serverErrors } from "./upstream-helpers.ts";

const TOKEN = "private-upstream-token";
const FIXTURES = new URL("../fixtures/keys/", import.meta.url).pathname;

type FakePath = FakeCachePath;

async function fakePath(name: string): Promise<FakePath> {
  return fakeCachePath(name, parseSecretKey((await readFile(join(FIXTURES, "test-cache-1.secret"), "utf8")).trim()));
}

let root: string;
let upstream: UpstreamServer;
let cache: LocalCache;
let base: string;
/** Our URL of an upstream NAR, as the narinfos we serve name it. */
let narUrl: (p: FakePath) => string;
const paths: Record<"a" | "b" | "b2" | "c" | "e", FakePath> = {} as never;

async function put(rel: string, body: Uint8Array | string): Promise<void> {
  const file = join(root, rel);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, body);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nec-private-upstream-"));
  for (const name of ["a", "b", "b2", "c", "e"] as const) paths[name] = await fakePath(`creds-${name}`);
  const { a, b, b2, c, e } = paths;
  await put("cache/nix-cache-info", "StoreDir: /nix/store\n");
  for (const p of [a, b, b2, c, e]) await put(`cache/${p.hash}.narinfo`, p.narinfo);
  // Where the redirects point: every file is there, so only the token decides.
  await put(`cache/nar/moved/${a.fileName}`, a.file);
  await put(`cache/outside/${b.fileName}`, b.file);
  await put(`cache/outside/${b2.fileName}`, b2.file);
  await put(`cache/nar/${c.fileName}`, c.file);
  await put(`cache/nar/${e.fileName}`, e.file);
  await put(`cache/mirror/${e.hash}.narinfo`, e.narinfo);
  await put(`private/${c.hash}.narinfo`, c.narinfo);

  upstream = await UpstreamServer.start({
    kind: "serve",
    root,
    token: TOKEN,
    redirects: {
      [`/cache/nar/${a.fileName}`]: `/cache/nar/moved/${a.fileName}`,
      [`/cache/nar/${b.fileName}`]: `/cache/outside/${b.fileName}`,
      [`/cache/nar/${b2.fileName}`]: `/cache/nar/..%2foutside/${b2.fileName}`,
      [`/cache/${c.hash}.narinfo`]: `/private/${c.hash}.narinfo`,
      [`/cache/${e.hash}.narinfo`]: `/cache/mirror/${e.hash}.narinfo`,
    },
  });
  base = `${upstream.url}/cache`;
  narUrl = (p) => `${cache.url}/upstream/127.0.0.1:${upstream.port}/cache/nar/${p.fileName}`;
  const publicKey = (await readFile(join(FIXTURES, "test-cache-1.public"), "utf8")).trim();
  cache = await LocalCache.start({
    AGGREGATE_UPSTREAMS: base,
    AGGREGATE_UPSTREAMS_NETRC: `machine 127.0.0.1:${upstream.port} login nix password ${TOKEN}`,
    AGGREGATE_WRITE_THROUGH_KEYS: publicKey,
  });
});

afterAll(async () => {
  await cache?.stop();
  await upstream?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

function requestsTo(path: string): SeenRequest[] {
  return upstream.requests.filter((r) => r.path === path);
}

/** True when the bucket holds the path's NAR and narinfo (write-through copied it). */
async function inBucket(p: FakePath): Promise<boolean> {
  const nar = await fetch(`${cache.url}/nar/${p.fileName}`, { method: "HEAD" });
  const info = await fetch(`${cache.url}/${p.hash}.narinfo`, { method: "HEAD" });
  return nar.status === 200 && info.status === 200 && info.headers.get("X-Upstream-Cache") === null;
}

const AUTHORIZATION = `Basic ${Buffer.from(`nix:${TOKEN}`).toString("base64")}`;

/** Request paths that may carry the token: the base's narinfos and its nar/ directory. */
function inScope(path: string): boolean {
  return /^\/cache\/[^/]+\.narinfo$/.test(path) || /^\/cache\/mirror\/[^/]+\.narinfo$/.test(path) || /^\/cache\/nar\/(?!.*(%2f|%5c|\.\.))/i.test(path);
}

describe("credentials of a private upstream and redirects", () => {
  it("follow a redirect within nar/: the NAR is served and copied", async () => {
    const { a } = paths;
    const info = await fetch(`${cache.url}/${a.hash}.narinfo`);
    expect(info.status).toBe(200);
    expect(info.headers.get("X-Upstream-Cache")).toBe(base);
    await info.arrayBuffer();
    const res = await fetch(narUrl(a));
    expect(res.status).toBe(200);
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(a.file);
    for (const path of [`/cache/nar/${a.fileName}`, `/cache/nar/moved/${a.fileName}`]) {
      expect(requestsTo(path).length).toBeGreaterThan(0);
      for (const r of requestsTo(path)) expect(r.authorization).toBe(AUTHORIZATION);
    }
    // The write-through copy followed the same redirect with the token.
    expect(await eventually(async () => inBucket(a), 20_000)).toBe(true);
  });

  it.each([
    ["b", "the same origin outside nar/", (p: FakePath) => `/cache/outside/${p.fileName}`],
    ["b2", "an encoded slash stepping out of nar/", (p: FakePath) => `/cache/nar/..%2foutside/${p.fileName}`],
  ] as const)("never follow a redirect to %s (%s): the upstream refuses, the client gets a 404", async (name, _label, target) => {
    const p = paths[name];
    const info = await fetch(`${cache.url}/${p.hash}.narinfo`);
    expect(info.status).toBe(200);
    await info.arrayBuffer();
    const res = await fetch(narUrl(p));
    expect(res.status).toBe(404);
    await res.arrayBuffer();
    // The redirect was followed (by the NAR route and by the write-through copy), bare.
    const outside = requestsTo(target(p));
    expect(outside.length).toBeGreaterThan(0);
    for (const r of outside) expect(r.authorization).toBeUndefined();
    for (const r of requestsTo(`/cache/nar/${p.fileName}`)) expect(r.authorization).toBe(AUTHORIZATION);
    // Nothing of it reached the bucket.
    await new Promise((r) => setTimeout(r, 500));
    expect(await inBucket(p)).toBe(false);
  });

  it("follow a narinfo redirect within the cache root", async () => {
    const { e } = paths;
    const res = await fetch(`${cache.url}/${e.hash}.narinfo`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain(`StorePath: /nix/store/${e.hash}-creds-e\n`);
    for (const r of requestsTo(`/cache/mirror/${e.hash}.narinfo`)) expect(r.authorization).toBe(AUTHORIZATION);
    expect(requestsTo(`/cache/mirror/${e.hash}.narinfo`).length).toBeGreaterThan(0);
  });

  // Last: the upstream's 401 marks it as down for a while.
  it("never follow a narinfo redirect out of the cache root", async () => {
    const { c } = paths;
    const res = await fetch(`${cache.url}/${c.hash}.narinfo`);
    expect(res.status).toBe(404);
    await res.arrayBuffer();
    const outside = requestsTo(`/private/${c.hash}.narinfo`);
    expect(outside.length).toBeGreaterThan(0);
    for (const r of outside) expect(r.authorization).toBeUndefined();
  });

  it("sent the token to nothing but the base's narinfos and its nar/ directory, and never answered a 5xx", () => {
    const authorised = upstream.requests.filter((r) => r.authorization !== undefined).map((r) => r.path);
    expect(authorised.length).toBeGreaterThan(0);
    expect(authorised.filter((path) => !inScope(path))).toEqual([]);
    expect(serverErrors(cache)).toEqual([]);
  });
});
