// The uploader against the Worker as the README starts it (`npm start`), run inside each
// Nix version's chroot with the pinned Node (the checkout is mounted there), reading that
// version's store through its own `nix path-info`: a pushed closure is substituted by the
// same Nix into an empty store trusting only the uploader's key, and pushing it again
// uploads nothing in a handful of requests. On Nix 2.34 the uploader asks for
// `--json-format 2`, so Nix prints no deprecation warning; older versions reject that flag
// and get the plain `--json`.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { CHROOT_NODE, ChrootNix, matrixChroots } from "./chroot-nix.ts";
import { LocalCache, PROJECT_ROOT, type Closure } from "./harness.ts";

const chroots = await matrixChroots();

let cache: LocalCache;

beforeAll(async () => {
  cache = await LocalCache.start();
});

afterAll(async () => {
  await cache?.stop();
});

/** The requests wrangler logged (one line each: `[wrangler:info] GET /path 200 OK (3ms)`). */
function requestLines(logs: string): string[] {
  return logs.split("\n").filter((l) => /\b(GET|HEAD|PUT|POST|DELETE) \/\S* \d{3}\b/.test(l));
}

describe.each(chroots.map((c) => [c.name]))("uploader push with Nix %s, to the Worker as npm start runs it", (name) => {
  let nix: ChrootNix;
  let closure: Closure;
  let secretKeyFile: string;
  let publicKey: string;

  beforeAll(async () => {
    nix = await ChrootNix.create(chroots.find((c) => c.name === name)!);
    closure = await nix.buildClosure();
    secretKeyFile = join(nix.dir, `pusher-${name}.secret`);
    const keygen = await nix.uploader(["keygen", "--name", `pusher-${name}`, "--secret-key-file", secretKeyFile]);
    expect(keygen.code, keygen.stderr).toBe(0);
    publicKey = keygen.stdout.trim();
  });

  afterAll(async () => {
    await nix?.cleanup();
  });

  async function push(): Promise<{ uploaded: number; alreadyCached: number; failed: number }> {
    const r = await nix.uploader(["push", "--json", "--cache", cache.url, "--secret-key-file", secretKeyFile, closure.top], {
      env: { NIX_CACHE_TOKEN: cache.token },
    });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { uploaded: number; alreadyCached: number; failed: number };
  }

  it("pushes a closure that the same Nix substitutes into an empty store trusting only the uploader's key", async () => {
    expect(await push()).toMatchObject({ uploaded: 3, alreadyCached: 0, failed: 0 });
    const store = await nix.emptyStore();
    await nix.runOk("nix-store", ["--store", store, "-r", closure.top, "--option", "substituters", cache.url, "--option", "trusted-public-keys", publicKey]);
    expect(await nix.readFile(join(store, closure.dep))).toMatch(/^I am a dependency /);
    expect(await nix.readFile(join(store, closure.top, "refs.txt"))).toContain(closure.tree);
    for (const p of [closure.top, closure.dep, closure.tree]) expect(await nix.dumpHash(p, store)).toBe(await nix.dumpHash(p));
  });

  it("reads the store with --json-format 2 where Nix has it (2.34+), else with the plain --json", async () => {
    const script = `
      import { queryClosure, pathInfoFormatFlags } from ${JSON.stringify(join(PROJECT_ROOT, "uploader", "store.ts"))};
      const infos = await queryClosure([${JSON.stringify(closure.top)}]);
      console.log(JSON.stringify({ paths: infos.map((i) => i.path).sort(), flags: pathInfoFormatFlags() }));`;
    const r = await nix.run(CHROOT_NODE, ["--input-type=module", "-e", script]);
    expect(r.code, r.stderr).toBe(0);
    const [major, minor] = nix.chroot.nixVersion.split(".").map(Number) as [number, number];
    expect(JSON.parse(r.stdout)).toEqual({
      paths: [closure.dep, closure.top, closure.tree].sort(),
      flags: major > 2 || minor >= 34 ? ["--json-format", "2"] : [],
    });
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
