// `uploader use` and `uploader doctor` with every Nix version of the matrix (2.8, 2.26,
// 2.34), inside its chroot: use reads the cache's key and writes nix.conf so that the
// version's own `nix-store -r`, with no options, substitutes from the cache; doctor reads
// that version's settings (`nix show-config` / `nix config show`) and finds every check ok.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { readFile } from "node:fs/promises";
import { ChrootNix, matrixChroots } from "./chroot-nix.ts";
import { LocalCache, type Closure } from "./harness.ts";

const chroots = await matrixChroots();

let cache: LocalCache;

beforeAll(async () => {
  cache = await LocalCache.start();
});

afterAll(async () => {
  await cache?.stop();
});

describe.each(chroots.map((c) => [c.name]))("use and doctor with Nix %s", (name) => {
  let nix: ChrootNix;
  let closure: Closure;
  let env: Record<string, string>;

  beforeAll(async () => {
    nix = await ChrootNix.create(chroots.find((c) => c.name === name)!);
    closure = await nix.buildClosure();
    env = { NIX_CACHE_URL: cache.url, NIX_CACHE_TOKEN: cache.token, NIX_CACHE_CONFIG: join(nix.dir, "uploader.json") };
    const push = await nix.uploader(["push", closure.top], { env });
    expect(push.code, push.stderr).toBe(0);
  });

  afterAll(async () => {
    await nix?.cleanup();
  });

  it("use writes nix.conf so that a plain nix-store -r substitutes from the cache", async () => {
    const use = await nix.uploader(["use", cache.url], { env });
    expect(use.code, use.stderr).toBe(0);
    expect(use.stderr).toContain("Nix will substitute from");
    const conf = await readFile(nix.host(join(nix.confDir, "nix.conf")), "utf8");
    expect(conf).toContain(`extra-substituters = ${cache.url}\nextra-trusted-public-keys = ${cache.publicKey}\n`);
    const store = await nix.tempDir("store-");
    await nix.runOk("nix-store", ["--store", store, "-r", closure.top]);
    expect(await readFile(nix.host(join(store, closure.dep)), "utf8")).toMatch(/^I am a dependency /);
  });

  it("doctor finds every check ok", async () => {
    const r = await nix.uploader(["doctor", "--json"], { env });
    const out = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; status: string; message: string }> };
    expect(Object.fromEntries(out.checks.map((c) => [c.name, c.status]))).toEqual({
      settings: "ok", cache: "ok", "write token": "ok", clock: "ok",
      nix: "ok", "nix-command": "ok", "trusted key": "ok", substituter: "ok", "trusted user": "ok",
    });
    expect(out.checks.find((c) => c.name === "nix")!.message).toMatch(new RegExp(`^Nix ${name.replace(".", "\\.")}`));
    expect(r.code).toBe(0);
  });
});
