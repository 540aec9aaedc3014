// The uploader as users install it: `npm pack`, installed into an empty folder, runs
// without the dev toolchain (compiled JavaScript, not the TypeScript sources) and pushes
// a real closure to the Worker.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSecretKey, formatPublicKey, publicKeyOf } from "../../src/nix/signature.ts";
import { buildClosure, LocalCache, NixClient, PROJECT_ROOT, runOk, type Closure } from "./harness.ts";

let work: string;
let app: string;
let bin: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "nec-pack-"));
  await runOk("npm", ["pack", "--pack-destination", work], { cwd: PROJECT_ROOT });
  const tarball = (await readdir(work)).find((f) => f.endsWith(".tgz"));
  if (!tarball) throw new Error("npm pack wrote no tarball");
  app = join(work, "app");
  await runOk("mkdir", ["-p", app]);
  await writeFile(join(app, "package.json"), JSON.stringify({ name: "pack-test", private: true }));
  await runOk("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", join(work, tarball)], { cwd: app });
  bin = join(app, "node_modules", ".bin", "uploader");
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("the packed uploader", () => {
  it("ships compiled JavaScript and no TypeScript sources or dev dependencies", async () => {
    const pkgDir = join(app, "node_modules", "nix-edge-cache");
    const files = await readdir(pkgDir, { recursive: true });
    expect(files).toContain(join("dist", "uploader", "cli.js"));
    expect(files).toContain(join("dist", "src", "nix", "narinfo.js"));
    expect(files.filter((f) => f.endsWith(".ts"))).toEqual([]);
    const installed = await readdir(join(app, "node_modules"));
    expect(installed).not.toContain("wrangler");
    expect(installed).not.toContain("typescript");
  });

  it("reports the package's version", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string };
    expect((await runOk(bin, ["--version"])).trim()).toBe(pkg.version);
  });

  it("generates a key pair in Nix's format", async () => {
    const secretFile = join(work, "pack-test-1.secret");
    const out = await runOk(bin, ["keygen", "--name", "pack-test-1", "--secret-key-file", secretFile]);
    const secret = parseSecretKey(await readFile(secretFile, "utf8"));
    expect(out).toContain(formatPublicKey(publicKeyOf(secret)));
  });

  describe("pushing", () => {
    let nix: NixClient;
    let cache: LocalCache;
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

    it("pushes a closure that Nix then substitutes", async () => {
      await runOk(bin, ["push", "--cache", cache.url, closure.top], {
        env: { ...(await nix.env()), NIX_CACHE_TOKEN: cache.token },
      });
      const store = await nix.emptyStore();
      await runOk(
        "nix-store",
        ["--store", store, "-r", closure.top, "--option", "substituters", cache.url, "--option", "trusted-public-keys", cache.publicKey],
        { env: await nix.env() },
      );
      expect(await readFile(join(store, closure.dep), "utf8")).toMatch(/^I am a dependency /);
    });
  });
});
