// The uploader against the Worker as the README starts it (`npm start`): a pushed closure
// is substituted by a real Nix into an empty store trusting only the uploader's key, and
// pushing it again uploads nothing in a handful of requests.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, PROJECT_ROOT, runOk, type Closure } from "./harness.ts";

const CLI = join(PROJECT_ROOT, "uploader", "cli.ts");

let nix: NixClient;
let cache: LocalCache;
let closure: Closure;
let secretKeyFile: string;
let publicKey: string;

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  cache = await LocalCache.start();
  secretKeyFile = join(nix.dir, "pusher-1.secret");
  publicKey = (await runOk(process.execPath, [CLI, "keygen", "--name", "pusher-1", "--secret-key-file", secretKeyFile])).trim();
});

afterAll(async () => {
  await cache?.stop();
  await nix?.cleanup();
});

async function push(): Promise<{ uploaded: number; alreadyCached: number; failed: number }> {
  const out = await runOk(process.execPath, [CLI, "push", "--json", "--cache", cache.url, "--secret-key-file", secretKeyFile, closure.top], {
    env: { ...(await nix.env()), NIX_CACHE_TOKEN: cache.token },
  });
  return JSON.parse(out) as { uploaded: number; alreadyCached: number; failed: number };
}

/** The requests wrangler logged (one line each: `[wrangler:info] GET /path 200 OK (3ms)`). */
function requestLines(logs: string): string[] {
  return logs.split("\n").filter((l) => /\b(GET|HEAD|PUT|POST|DELETE) \/\S* \d{3}\b/.test(l));
}

describe("uploader push to the Worker as npm start runs it", () => {
  it("pushes a closure that Nix substitutes into an empty store trusting only the uploader's key", async () => {
    expect(await push()).toMatchObject({ uploaded: 3, alreadyCached: 0, failed: 0 });
    const store = await nix.emptyStore();
    await runOk(
      "nix-store",
      ["--store", store, "-r", closure.top, "--option", "substituters", cache.url, "--option", "trusted-public-keys", publicKey],
      { env: await nix.env() },
    );
    expect(await readFile(join(store, closure.dep), "utf8")).toMatch(/^I am a dependency /);
    expect(await readFile(join(store, closure.top, "refs.txt"), "utf8")).toContain(closure.tree);
  });

  it("uploads nothing the second time, in a handful of requests", async () => {
    const before = requestLines(cache.logs).length;
    expect(await push()).toMatchObject({ uploaded: 0, alreadyCached: 3, failed: 0 });
    // wrangler may flush its last log lines a moment after the response.
    await new Promise((r) => setTimeout(r, 500));
    const requests = requestLines(cache.logs).slice(before);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.length).toBeLessThanOrEqual(3);
    expect(requests.filter((l) => / (PUT|DELETE) /.test(l))).toEqual([]);
  });
});
