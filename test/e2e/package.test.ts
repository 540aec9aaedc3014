// The uploader as users install it: `npm pack`, installed into an empty folder (as a
// dependency, run as `npx uploader`), through `npx -p <tarball>`, and globally (a --prefix),
// runs without the dev toolchain (compiled JavaScript, not the TypeScript sources) on every
// Node.js it supports: the system's Node 20 (no built-in zstd: NARs go through the zstd
// program) and the project's Node 24. Every command loads; keygen, push (then Nix
// substitutes), login, use, doctor, pins and gc run against the Worker as npm start runs it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSecretKey, formatPublicKey, publicKeyOf } from "../../src/nix/signature.ts";
import { buildClosure, LocalCache, NixClient, PROJECT_ROOT, run, runOk, type Closure } from "./harness.ts";

/** The Node.js versions the package supports that this machine has. */
const SYSTEM_NODE = "/usr/bin/node";
const NODES: Array<[string, string]> = [["project's", process.execPath]];
if (existsSync(SYSTEM_NODE)) NODES.unshift(["system", SYSTEM_NODE]);

let work: string;
let tarball: string;
let app: string;
let bin: string;

/** npm run by `node` (the system's npm script works with either Node). */
async function npm(node: string, args: string[], cwd: string): Promise<string> {
  const npmCli = (await runOk("sh", ["-c", "readlink -f \"$(command -v npm)\""])).trim();
  return runOk(node, [npmCli, ...args], { cwd });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "nec-pack-"));
  await runOk("npm", ["pack", "--pack-destination", work], { cwd: PROJECT_ROOT });
  const name = (await readdir(work)).find((f) => f.endsWith(".tgz"));
  if (!name) throw new Error("npm pack wrote no tarball");
  tarball = join(work, name);
  app = join(work, "app");
  await runOk("mkdir", ["-p", app]);
  await writeFile(join(app, "package.json"), JSON.stringify({ name: "pack-test", private: true }));
  await npm(NODES[0]![1], ["install", "--save-dev", "--prefer-offline", "--no-audit", "--no-fund", tarball], app);
  bin = join(app, "node_modules", ".bin", "uploader");
}, 300_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("the packed uploader", () => {
  it("ships compiled JavaScript and no TypeScript sources or dev dependencies", async () => {
    const pkgDir = join(app, "node_modules", "nix-edge-cache");
    const files = await readdir(pkgDir, { recursive: true });
    expect(files).toContain(join("dist", "uploader", "cli.js"));
    expect(files).toContain(join("dist", "src", "nix", "narinfo.js"));
    expect(files).toContain(join("dist", "src", "api", "cache-description.js"));
    expect(files.filter((f) => f.endsWith(".ts"))).toEqual([]);
    const installed = await readdir(join(app, "node_modules"));
    expect(installed).not.toContain("wrangler");
    expect(installed).not.toContain("typescript");
    const pkg = JSON.parse(await readFile(join(pkgDir, "package.json"), "utf8")) as { engines: { node: string }; bin: Record<string, string> };
    expect(pkg.engines.node).toBe(">=20");
    expect(Object.keys(pkg.bin).sort()).toEqual(["nix-edge-cache", "uploader"]);
  });

  it("runs through npx -p <package> and from a global install", async () => {
    const empty = await mkdtemp(join(work, "empty-"));
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string };
    const viaNpx = await runOk("npx", ["--yes", "--prefer-offline", "-p", tarball, "uploader", "--version"], { cwd: empty });
    expect(viaNpx.trim()).toBe(pkg.version);
    const prefix = join(work, "global");
    await runOk("npm", ["install", "--global", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", tarball], { cwd: empty });
    expect((await runOk(join(prefix, "bin", "uploader"), ["--version"], { cwd: empty })).trim()).toBe(pkg.version);
    expect(await runOk(join(prefix, "bin", "nix-edge-cache"), ["--help"], { cwd: empty })).toContain("Usage: uploader <command>");
  }, 300_000);

  describe.each(NODES)("on the %s Node.js (%s)", (_label, node) => {
    let nix: NixClient;
    let cache: LocalCache;
    let closure: Closure;
    let env: NodeJS.ProcessEnv;
    const uploader = (args: string[], extra: NodeJS.ProcessEnv = {}) => run(node, [bin, ...args], { env: { ...env, ...extra }, cwd: app });

    beforeAll(async () => {
      nix = await NixClient.create();
      closure = await buildClosure(nix);
      cache = await LocalCache.start();
      env = { ...(await nix.env()), XDG_CONFIG_HOME: join(nix.dir, "config") };
      for (const k of ["NIX_CACHE_URL", "NIX_CACHE_TOKEN", "NIX_CACHE_ADMIN_TOKEN", "NIX_CACHE_SECRET_KEY_FILE", "NIX_CACHE_CONFIG"]) delete env[k];
    }, 300_000);

    afterAll(async () => {
      await cache?.stop();
      await nix?.cleanup();
    });

    it("reports the package's version, and every command's help loads", async () => {
      const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string };
      expect((await runOk(node, [bin, "--version"])).trim()).toBe(pkg.version);
      const help = await runOk(node, [bin, "--help"]);
      const commands = [...help.matchAll(/^ {2}([a-z-]+) {2,}/gm)].map((m) => m[1]!);
      expect(commands).toEqual(expect.arrayContaining(["push", "keygen", "gc", "pin", "unpin", "pins", "login", "use", "doctor"]));
      for (const command of commands) {
        const r = await uploader([command, "--help"]);
        expect(r.stderr, command).toBe("");
        expect(r.code, command).toBe(0);
        expect(r.stdout, command).toContain(`Usage: uploader ${command}`);
      }
    });

    it("generates a key pair in Nix's format", async () => {
      const secretFile = join(nix.dir, "pack-test-1.secret");
      const out = await runOk(node, [bin, "keygen", "--name", "pack-test-1", "--secret-key-file", secretFile]);
      const secret = parseSecretKey(await readFile(secretFile, "utf8"));
      expect(out).toContain(formatPublicKey(publicKeyOf(secret)));
    });

    it("logs in, pushes a closure that Nix then substitutes after use, and passes doctor", async () => {
      const login = await uploader(["login", cache.url, "--name", "local"], { NIX_CACHE_TOKEN: cache.token });
      expect(login.stderr).toContain('as "local" (write token accepted)');
      const push = await uploader(["push", closure.top]);
      expect(push.stderr).toMatch(/3 uploaded/);
      expect(push.code).toBe(0);
      expect((await uploader(["use"])).code).toBe(0);
      const store = await nix.emptyStore();
      await runOk("nix-store", ["--store", store, "-r", closure.top], { env });
      expect(await readFile(join(store, closure.dep), "utf8")).toMatch(/^I am a dependency /);
      const doctor = await uploader(["doctor", "--json"]);
      expect(JSON.parse(doctor.stdout)).toMatchObject({ ok: true });
      expect(doctor.code).toBe(0);
    });

    it("lists pins and runs a dry-run collection with the admin token", async () => {
      expect((await uploader(["pins"])).stdout).toBe("no pins\n");
      const adminToken = /^ADMIN_TOKEN=(.*)$/m.exec(await readFile(join(cache.stateDir, "dev.vars"), "utf8"))![1]!;
      const gc = await uploader(["gc", "--dry-run", "--older-than", "1000d"], { NIX_CACHE_ADMIN_TOKEN: adminToken });
      expect(gc.stderr).toContain("would delete 0 paths");
      expect(gc.code).toBe(0);
    });
  });
});
