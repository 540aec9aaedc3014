// Plain Nix against the Worker as `npm start` runs it, with every Nix version of the matrix
// (2.8, 2.26, 2.34: each in its Debian chroot, nix-versions.ts), one piece of code for all.
//
// Per version: `nix copy --to http://…` authenticated through a netrc file, with zstd, xz
// and no compression and with a NAR listing; a refused push with a wrong token;
// substitution into an empty store trusting only the cache's key, and a refusal by a client
// trusting another key; `nix path-info --store … --json`, `nix store verify --store`,
// `nix store sign --store`; `nix store copy-log` then `nix log --store`; a content-addressed
// derivation's realisation; a private cache read through netrc. Then across versions: what
// each version pushed, every other substitutes. The encodings only Nix 2.32+ can send
// (narinfo-, ls-, log-compression) are in nix-encodings.matrix.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { ChrootNix, hashPart, matrixChroots } from "./chroot-nix.ts";
import { LocalCache, type Closure, type RunResult } from "./harness.ts";
import { parsePathInfoJson } from "../../uploader/store.ts";

const chroots = await matrixChroots();
const READ_TOKEN = "matrix-read-token";

let cache: LocalCache;
let privateCache: LocalCache;
const clients = new Map<string, ChrootNix>();
const closures = new Map<string, Closure>();

beforeAll(async () => {
  cache = await LocalCache.start();
  privateCache = await LocalCache.start({ READ_TOKEN });
  for (const c of chroots) {
    const nix = await ChrootNix.create(c);
    clients.set(c.name, nix);
    closures.set(c.name, await nix.buildClosure());
  }
});

afterAll(async () => {
  await cache?.stop();
  await privateCache?.stop();
  for (const nix of clients.values()) await nix.cleanup();
});

/** Nix 2.34 deprecates `--json` alone; older versions reject `--json-format`. */
function jsonFlags(nix: ChrootNix): string[] {
  const [major, minor] = nix.chroot.nixVersion.split(".").map(Number) as [number, number];
  return major > 2 || minor >= 34 ? ["--json", "--json-format", "2"] : ["--json"];
}

/** The write token's netrc for `cache`, inside the chroot. */
function writeNetrc(nix: ChrootNix, target: LocalCache = cache): Promise<string> {
  return nix.netrc(target.token);
}

/** Substitutes `path` from `target` into a fresh store, trusting only `keys`. */
async function substitute(nix: ChrootNix, path: string, options: { target?: LocalCache; keys?: string[]; extra?: string[] } = {}): Promise<{ store: string; result: RunResult }> {
  const target = options.target ?? cache;
  const store = await nix.emptyStore();
  const result = await nix.nixStore([
    "--store", store, "-r", path,
    "--option", "substituters", target.url,
    "--option", "trusted-public-keys", (options.keys ?? [target.publicKey]).join(" "),
    ...(options.extra ?? []),
  ]);
  return { store, result };
}

async function expectSubstituted(nix: ChrootNix, paths: string[], from: ChrootNix, options: Parameters<typeof substitute>[2] = {}): Promise<void> {
  const { store, result } = await substitute(nix, paths[0]!, options);
  expect(result.code, `[Nix ${nix.name}] ${result.stderr}`).toBe(0);
  for (const p of paths) expect(await nix.dumpHash(p, store), `${p} as substituted by Nix ${nix.name}`).toBe(await from.dumpHash(p));
}

async function narinfoText(path: string, target: LocalCache = cache): Promise<string> {
  const res = await fetch(`${target.url}/${hashPart(path)}.narinfo`, target === privateCache ? { headers: { Authorization: `Bearer ${READ_TOKEN}` } } : {});
  expect(res.status, `narinfo of ${path}`).toBe(200);
  return res.text();
}

describe.each(chroots.map((c) => [c.name]))("Nix %s", (name) => {
  const nix = () => clients.get(name)!;
  const closure = () => closures.get(name)!;
  const cacheKeyName = () => cache.publicKey.split(":")[0]!;

  it("refuses a push with a wrong token and stores nothing", async () => {
    const before = await cache.bucketSnapshot();
    const r = await nix().nix(["copy", "--to", `${cache.url}?compression=zstd`, closure().dep, "--option", "netrc-file", await nix().netrc("not-the-token")]);
    expect(r.code).not.toBe(0);
    expect(await cache.bucketSnapshot()).toBe(before);
    expect((await fetch(`${cache.url}/${hashPart(closure().dep)}.narinfo`)).status).toBe(404);
  });

  it("pushes a closure with nix copy --to through a netrc file; an empty store substitutes it trusting only the cache's key", async () => {
    await nix().nixOk(["copy", "--to", `${cache.url}?compression=zstd`, closure().top, "--option", "netrc-file", await writeNetrc(nix())]);
    for (const p of [closure().tree, closure().dep, closure().top]) {
      const text = await narinfoText(p);
      expect(text).toContain(`StorePath: ${p}\n`);
      expect(text).toContain("Compression: zstd\n");
      expect(text).toContain(`Sig: ${cacheKeyName()}:`);
    }
    await expectSubstituted(nix(), [closure().top, closure().dep, closure().tree], nix());
    const { store } = await substitute(nix(), closure().top);
    expect(await nix().readFile(join(store, closure().top, "refs.txt"))).toContain(closure().dep);
  });

  it("is refused by a client that trusts a different key under the same name", async () => {
    const otherKey = `${cacheKeyName()}:${Buffer.alloc(32, 7).toString("base64")}`;
    const { store, result } = await substitute(nix(), closure().dep, { keys: [otherKey] });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/not signed by any of the keys|lacks a valid signature|signature/);
    expect((await nix().run("/bin/ls", [join(store, closure().dep)])).code).not.toBe(0);
  });

  for (const [label, query, compression] of [
    ["xz (Nix's default)", "compression=xz", "xz"],
    ["no compression", "compression=none", "none"],
    ["zstd with a NAR listing", "compression=zstd&write-nar-listing=1", "zstd"],
  ] as const) {
    it(`pushes with ${label} and substitutes it back`, async () => {
      const path = await nix().buildText(`compression-${compression}`, label);
      await nix().nixOk(["copy", "--to", `${cache.url}?${query}`, path, "--option", "netrc-file", await writeNetrc(nix())]);
      expect(await narinfoText(path)).toContain(`Compression: ${compression}\n`);
      if (query.includes("write-nar-listing")) {
        const ls = await fetch(`${cache.url}/${hashPart(path)}.ls`, { headers: { "Accept-Encoding": "identity" } });
        expect(ls.status).toBe(200);
        expect(await ls.json()).toMatchObject({ version: 1, root: { type: "regular" } });
      }
      await expectSubstituted(nix(), [path], nix());
    });
  }

  it("nix path-info --store <cache> --json reads the closure with the cache's signature", async () => {
    const out = await nix().nixOk(["path-info", "--store", cache.url, ...jsonFlags(nix()), "--recursive", closure().top]);
    const infos = parsePathInfoJson(out);
    expect(infos.map((i) => i.path).sort()).toEqual([closure().dep, closure().top, closure().tree].sort());
    for (const info of infos) expect(info.sigs.some((s) => s.startsWith(`${cacheKeyName()}:`))).toBe(true);
  });

  it("nix store verify --store <cache> accepts the closure with the cache's key and refuses it with another", async () => {
    const verify = (key: string) =>
      nix().nix(["store", "verify", "--store", cache.url, "--recursive", closure().top, "--option", "trusted-public-keys", key]);
    const good = await verify(cache.publicKey);
    expect(good.code, good.stderr).toBe(0);
    const bad = await verify(`other-1:${Buffer.alloc(32, 9).toString("base64")}`);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/untrusted|signature/i);
  });

  it("nix store sign --store <cache> adds a signature that the Worker keeps next to its own", async () => {
    const dir = await nix().tempDir("key-");
    const [sk, pk] = [join(dir, "secret"), join(dir, "public")];
    await nix().runOk("nix-store", ["--generate-binary-cache-key", `signer-${name}`, sk, pk]);
    await nix().nixOk(["store", "sign", "--store", cache.url, "--key-file", sk, closure().dep, "--option", "netrc-file", await writeNetrc(nix())]);
    const text = await narinfoText(closure().dep);
    expect(text).toContain(`Sig: signer-${name}:`);
    expect(text).toContain(`Sig: ${cacheKeyName()}:`);
    // A client trusting only the signer's key accepts the path now.
    await expectSubstituted(nix(), [closure().dep], nix(), { keys: [(await nix().readFile(pk)).trim()] });
  });

  it("nix store copy-log puts the build log where nix log --store finds it", async () => {
    await nix().nixOk(["store", "copy-log", "--to", cache.url, closure().top, "--option", "netrc-file", await writeNetrc(nix())]);
    const log = await nix().nixOk(["log", "--store", cache.url, closure().top]);
    expect(log).toContain("building top");
  });

  it("pushes a content-addressed derivation's realisation; an empty store substitutes its output without building", async () => {
    const features = ["--extra-experimental-features", "ca-derivations"];
    const work = await nix().tempDir("ca-");
    const file = await nix().writeFile(
      join(work, "ca.nix"),
      `builtins.derivation {
  name = "nec-ca-${name.replace(".", "-")}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo content-addressed ${work} > $out" ];
  __contentAddressed = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}`,
    );
    await nix().nixOk(["build", ...features, "-f", file, "--no-link"]);
    const out = (await nix().nixOk(["path-info", ...features, "-f", file])).trim();
    expect(out).toMatch(/^\/nix\/store\/[0-9a-z]{32}-nec-ca-/);
    await nix().nixOk(["copy", ...features, "--to", `${cache.url}?compression=zstd`, "-f", file, "--option", "netrc-file", await writeNetrc(nix())]);
    const store = await nix().emptyStore();
    // --max-jobs 0: building is not allowed, so the output can only come through the
    // realisation (the derivation's output path is unknown until it is read).
    const r = await nix().nix([
      "build", ...features, "--store", store, "-f", file, "--no-link", "--max-jobs", "0",
      "--option", "substituters", cache.url, "--option", "trusted-public-keys", cache.publicKey,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect((await nix().readFile(join(store, out))).trim()).toBe(`content-addressed ${work}`);
  });

  it("reads a private cache with the read token in netrc, and nothing without it", async () => {
    const path = await nix().buildText("private", "only with the read token");
    await nix().nixOk(["copy", "--to", `${privateCache.url}?compression=zstd`, path, "--option", "netrc-file", await writeNetrc(nix(), privateCache)]);
    const readNetrc = await nix().netrc(READ_TOKEN);
    await expectSubstituted(nix(), [path], nix(), { target: privateCache, extra: ["--option", "netrc-file", readNetrc] });
    const without = await substitute(nix(), path, { target: privateCache, extra: ["--option", "netrc-file", await nix().netrc("wrong")] });
    expect(without.result.code).not.toBe(0);
  });
});

describe("across versions: what one version pushed, every other substitutes", () => {
  for (const from of chroots) {
    for (const to of chroots) {
      if (from.name === to.name) continue;
      it(`Nix ${to.name} substitutes the closure Nix ${from.name} pushed`, async () => {
        const c = closures.get(from.name)!;
        await expectSubstituted(clients.get(to.name)!, [c.top, c.dep, c.tree], clients.get(from.name)!);
      });
    }
  }
});
