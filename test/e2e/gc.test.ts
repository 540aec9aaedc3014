// Garbage collection end to end: real Nix 2.8 pushes three closures with `nix copy`, one is
// pinned with `uploader pin`, one is pushed after a cutoff time, and `uploader gc` (against
// the Worker as `npm start` runs it) collects everything pushed before the cutoff. A real
// Nix then substitutes every kept closure completely into empty stores, and cannot get the
// collected one. Unpinning and collecting again removes the pinned closure too.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, PROJECT_ROOT, run, runOk, type Closure } from "./harness.ts";

let cache: LocalCache;
let nix: NixClient;
let pinned: Closure;
let old: Closure;
let young: Closure;
let cutoff: number;
let adminToken: string;

const CLI = join(PROJECT_ROOT, "uploader", "cli.ts");

function pathsOf(c: Closure): string[] {
  return [c.tree, c.dep, c.top];
}

function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

function uploader(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return run(process.execPath, [CLI, ...args], {
    env: { ...process.env, NIX_CACHE_URL: cache.url, NIX_CACHE_ADMIN_TOKEN: adminToken, NIX_CACHE_TOKEN: cache.token },
  });
}

async function push(c: Closure): Promise<void> {
  const netrc = await nix.netrc(cache.token);
  await runOk("nix", ["copy", "--to", `${cache.url}?compression=zstd`, c.top, "--option", "netrc-file", netrc], { env: await nix.env() });
}

async function narinfoStatus(storePath: string): Promise<number> {
  return (await fetch(`${cache.url}/${hashPart(storePath)}.narinfo`)).status;
}

/** Substitutes `top` into a fresh store with only the cache (and its key) configured. */
async function substitute(top: string): Promise<{ code: number; store: string; stderr: string }> {
  const store = await nix.emptyStore();
  const r = await nix.nixStore([
    "--store", store, "-r", top,
    "--option", "substituters", cache.url,
    "--option", "trusted-public-keys", cache.publicKey,
  ]);
  return { code: r.code, store, stderr: r.stderr };
}

async function dump(storeRoot: string, storePath: string): Promise<string> {
  return (await runOk("sh", ["-c", `nix-store --dump '${storeRoot}${storePath}' | sha256sum`])).split(" ")[0]!;
}

beforeAll(async () => {
  nix = await NixClient.create();
  [pinned, old, young] = [await buildClosure(nix), await buildClosure(nix), await buildClosure(nix)];
  // A one-second upload window keeps the collection's wait short (the default is a minute).
  // No NAR grace period: the NARs of the collected closure go in the same collection.
  cache = await LocalCache.start({ GC_UPLOAD_WINDOW_SECONDS: "1", GC_NAR_GRACE_HOURS: "0" });
  adminToken = /^ADMIN_TOKEN=(.*)$/m.exec(await readFile(join(cache.stateDir, "dev.vars"), "utf8"))![1]!;
  await push(pinned);
  await push(old);
  const pin = await uploader(["pin", "release", pinned.top]);
  expect(pin.code, pin.stderr).toBe(0);
  // Everything pushed so far is older than the cutoff; the young closure is pushed after it.
  await new Promise((r) => setTimeout(r, 1000));
  cutoff = Date.now();
  await new Promise((r) => setTimeout(r, 1000));
  await push(young);
}, 300_000);

afterAll(async () => {
  await cache?.stop();
  await nix?.cleanup();
});

describe("garbage collection with a real Nix client", () => {
  it("lists the pin", async () => {
    const r = await uploader(["pins"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`release\t${pinned.top}\t`);
  });

  it("a dry run lists exactly the unpinned old closure and deletes nothing", async () => {
    const r = await uploader(["gc", "--dry-run", "--before", String(cutoff), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { paths: Array<{ path: string }>; files: Array<{ key: string }>; narBytes: number };
    expect(out.paths.map((p) => p.path).sort()).toEqual(pathsOf(old).sort());
    expect(out.files.filter((f) => f.key.startsWith("nar/"))).toHaveLength(3);
    expect(out.narBytes).toBeGreaterThan(0);
    for (const p of [...pathsOf(pinned), ...pathsOf(old), ...pathsOf(young)]) expect(await narinfoStatus(p)).toBe(200);
  }, 120_000);

  it("uploader gc deletes the old closure and keeps the pinned and the young ones", async () => {
    const r = await uploader(["gc", "--before", String(cutoff)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/deleted 3 paths and 3 NARs, freed/);
    for (const p of pathsOf(old)) expect(await narinfoStatus(p)).toBe(404);
    for (const p of [...pathsOf(pinned), ...pathsOf(young)]) expect(await narinfoStatus(p)).toBe(200);
    const stats = (await (await fetch(`${cache.url}/_api/v1/stats`)).json()) as { paths: number; lastGc: { deletedPaths: number } };
    expect(stats.paths).toBe(6);
    expect(stats.lastGc.deletedPaths).toBe(3);
  }, 120_000);

  it("a real Nix still substitutes every kept closure completely", async () => {
    for (const c of [pinned, young]) {
      const got = await substitute(c.top);
      expect(got.code, got.stderr).toBe(0);
      for (const p of pathsOf(c)) expect(await dump(got.store, p)).toBe(await dump("", p));
    }
  }, 120_000);

  it("a real Nix cannot get the collected closure", async () => {
    const got = await substitute(old.top);
    expect(got.code).not.toBe(0);
    const listed = await run("ls", [join(got.store, old.top)]);
    expect(listed.code).not.toBe(0);
  }, 120_000);

  it("after unpinning, the next collection takes the formerly pinned closure and keeps the young one", async () => {
    const unpin = await uploader(["unpin", "release"]);
    expect(unpin.code, unpin.stderr).toBe(0);
    const r = await uploader(["gc", "--before", String(cutoff), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { result: { deletedPaths: number } }).result.deletedPaths).toBe(3);
    for (const p of pathsOf(pinned)) expect(await narinfoStatus(p)).toBe(404);
    const got = await substitute(young.top);
    expect(got.code, got.stderr).toBe(0);
    for (const p of pathsOf(young)) expect(await dump(got.store, p)).toBe(await dump("", p));
  }, 120_000);

  it("refuses garbage collection and pin changes without the admin token", async () => {
    const gc = await run(process.execPath, [CLI, "gc", "--dry-run", "--cache", cache.url, "--admin-token", cache.token]);
    expect(gc.code).toBe(4);
    expect(gc.stderr).toMatch(/ADMIN_TOKEN/);
    const pin = await run(process.execPath, [CLI, "pin", "x", young.top, "--cache", cache.url, "--admin-token", "wrong"]);
    expect(pin.code).toBe(4);
  });
});
