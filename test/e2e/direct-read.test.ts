// Reads without the Worker, end to end with the real Nix (2.8 on the host): a closure pushed
// with the uploader is substituted into empty stores in the three read modes, and the
// Worker's requests are counted per substituted path (from wrangler's one log line per
// request):
//   Worker        substituter = the Worker                               2 per path
//   NAR_BASE_URL  substituter = a second Worker on the same bucket whose  1 per path
//                 narinfos point at the bucket's public domain
//   direct        substituter = the bucket's public domain itself         0
// The public domain is the local stand-in (dev/public-bucket.ts): a Worker bound to
// the same local R2 the cache's Worker writes (the same persisted bucket, not a copy), which
// serves objects by key with their stored headers and computes nothing. What the bucket
// offers by itself (nix-cache-info, headers, no listing) is checked through it too.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { PublicBucket } from "../../dev/public-bucket.ts";
import { buildClosure, freePort, LocalCache, NixClient, PROJECT_ROOT, runOk, type Closure } from "./harness.ts";

let nix: NixClient;
let closure: Closure;
let worker: LocalCache;
let narBase: LocalCache;
let bucket: PublicBucket;

const CLI = join(PROJECT_ROOT, "uploader", "cli.ts");

function pathsOf(c: Closure): string[] {
  return [c.tree, c.dep, c.top];
}

function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

/** The requests wrangler logged after `from` characters of output, as "METHOD /path". */
function requestsIn(logs: string, from: number): string[] {
  return [...logs.slice(from).matchAll(/\[wrangler:info\] (GET|HEAD|PUT|POST|DELETE) (\S+) \d{3}/g)].map((m) => `${m[1]} ${m[2]}`);
}

/** Store paths and narinfo/NAR requests only (what each substituted path costs). */
function perPath(requests: string[]): string[] {
  return requests.filter((r) => / \/[0-9a-z]{32}\.narinfo$| \/nar\/[0-9a-z]{52}\.nar/.test(r));
}

async function dump(storeRoot: string, storePath: string): Promise<string> {
  return (await runOk("sh", ["-c", `nix-store --dump '${storeRoot}${storePath}' | sha256sum`])).split(" ")[0]!;
}

/**
 * Substitutes the closure from `substituter` into an empty store, trusting only the
 * cache's key, checks every path byte for byte, and returns the requests each server got.
 */
async function substitute(substituter: string): Promise<{ worker: string[]; narBase: string[]; bucket: string[] }> {
  const marks = [worker.logs.length, narBase.logs.length, bucket.logs.length] as const;
  const store = await nix.emptyStore();
  const r = await nix.nixStore([
    "--store", store, "-r", closure.top,
    "--option", "substituters", substituter,
    "--option", "trusted-public-keys", worker.publicKey,
  ]);
  expect(r.code, r.stderr).toBe(0);
  for (const p of pathsOf(closure)) expect(await dump(store, p)).toBe(await dump("", p));
  // wrangler prints a request's line when it has answered it: give the last one a moment.
  await new Promise((resolve) => setTimeout(resolve, 500));
  return { worker: requestsIn(worker.logs, marks[0]), narBase: requestsIn(narBase.logs, marks[1]), bucket: requestsIn(bucket.logs, marks[2]) };
}

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  worker = await LocalCache.start();
  await runOk(process.execPath, [CLI, "push", "--cache", worker.url, closure.top], { env: { ...(await nix.env()), NIX_CACHE_TOKEN: worker.token } });
  const port = await freePort();
  [narBase, bucket] = await Promise.all([
    LocalCache.start({ NAR_BASE_URL: `http://127.0.0.1:${port}` }, { sharing: worker }),
    PublicBucket.start(join(worker.stateDir, "r2"), port),
  ]);
}, 300_000);

afterAll(async () => {
  await bucket?.stop();
  await narBase?.stop();
  await worker?.stop();
  await nix?.cleanup();
});

describe("the bucket on its public domain (the local stand-in)", () => {
  it("is a binary cache by itself: nix-cache-info is an object, narinfos and NARs carry their headers", async () => {
    const info = await fetch(`${bucket.url}/nix-cache-info`);
    expect(info.status).toBe(200);
    expect(await info.text()).toBe(await (await fetch(`${worker.url}/nix-cache-info`)).text());
    const narinfo = await fetch(`${bucket.url}/${hashPart(closure.top)}.narinfo`);
    expect(narinfo.status).toBe(200);
    const fromWorker = await fetch(`${worker.url}/${hashPart(closure.top)}.narinfo`);
    expect(await narinfo.text()).toBe(await fromWorker.text());
    for (const name of ["Content-Type", "Cache-Control"]) expect(narinfo.headers.get(name), name).toBe(fromWorker.headers.get(name));
    const url = /^URL: (.*)$/m.exec(await (await fetch(`${worker.url}/${hashPart(closure.top)}.narinfo`)).text())![1]!;
    const nar = await fetch(`${bucket.url}/${url}`, { method: "HEAD" });
    expect(nar.status).toBe(200);
    expect(nar.headers.get("Cache-Control")).toMatch(/immutable/);
    expect(nar.headers.get("Content-Type")).toBe("application/x-nix-nar");
  });

  it("computes nothing: no listing, no landing page, no API", async () => {
    for (const path of ["/", "/_api/v1/stats", "/nar/"]) expect((await fetch(`${bucket.url}${path}`)).status, path).toBe(404);
  });
});

describe("a real Nix substituting in each read mode", () => {
  it("through the Worker: two Worker requests per path (narinfo and NAR)", async () => {
    const got = await substitute(worker.url);
    expect(perPath(got.worker).sort()).toHaveLength(2 * pathsOf(closure).length);
    expect(perPath(got.worker).filter((r) => r.includes("/nar/"))).toHaveLength(pathsOf(closure).length);
    expect(perPath(got.bucket)).toEqual([]);
  });

  it("with NAR_BASE_URL: one Worker request per path, the NARs come from the bucket's domain", async () => {
    const got = await substitute(narBase.url);
    expect(perPath(got.narBase)).toHaveLength(pathsOf(closure).length);
    expect(perPath(got.narBase).every((r) => r.endsWith(".narinfo"))).toBe(true);
    expect(perPath(got.bucket)).toHaveLength(pathsOf(closure).length);
    expect(perPath(got.bucket).every((r) => r.startsWith("GET /nar/"))).toBe(true);
  });

  it("directly from the bucket's domain: no Worker request at all", async () => {
    const got = await substitute(bucket.url);
    expect(got.worker).toEqual([]);
    expect(got.narBase).toEqual([]);
    expect(got.bucket).toContain("GET /nix-cache-info");
    expect(perPath(got.bucket)).toHaveLength(2 * pathsOf(closure).length);
  });
});
