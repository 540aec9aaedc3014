// The `uploader` command as users run it (`node uploader/cli.ts …` in a child process):
// help and version, usage errors and exit codes, and `keygen`, whose files must work with
// Nix's own tools (`nix key convert-secret-to-public`, `nix store sign`).
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { queryClosure } from "../../uploader/store.ts";
import { CLI, NixSandbox, PROJECT_ROOT, run, runOk } from "./helpers.ts";

let nix: NixSandbox;
beforeAll(async () => {
  nix = await NixSandbox.create();
});
afterAll(async () => nix?.cleanup());

/** The environment without any of the uploader's settings, plus `extra`. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...nix.env };
  for (const k of ["NIX_CACHE_URL", "NIX_CACHE_TOKEN", "NIX_CACHE_SECRET_KEY_FILE"]) delete env[k];
  return { ...env, ...extra };
}

const uploader = (args: string[], env: NodeJS.ProcessEnv = cleanEnv(), cwd?: string) =>
  run(process.execPath, [CLI, ...args], { env, ...(cwd ? { cwd } : {}) });

describe("help and version", () => {
  test("global help lists the commands; help on each command lists its options", async () => {
    for (const args of [["--help"], ["-h"], []]) {
      const r = await uploader(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/push\s+upload store paths/);
      expect(r.stdout).toMatch(/keygen\s+create a signing key pair/);
    }
    const push = await uploader(["push", "--help"]);
    expect(push.code).toBe(0);
    for (const flag of ["--cache", "--token", "--secret-key-file", "--jobs", "--compression", "--compression-level", "--upstream-key", "--no-skip-upstream", "--dry-run", "--json", "--verbose", "NIX_CACHE_URL", "NIX_CACHE_TOKEN", "NIX_CACHE_SECRET_KEY_FILE"]) {
      expect(push.stdout).toContain(flag);
    }
    const keygen = await uploader(["keygen", "--help"]);
    expect(keygen.code).toBe(0);
    expect(keygen.stdout).toContain("--name");
    expect((await uploader(["help", "push"])).stdout).toBe(push.stdout);
  });

  test("--version prints the package version", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string };
    const r = await uploader(["--version"]);
    expect(r).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
  });

  test("the package.json bin launcher runs the same CLI", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string; bin: { uploader: string } };
    const bin = join(PROJECT_ROOT, pkg.bin.uploader);
    expect(await run(process.execPath, [bin, "--version"], { env: cleanEnv() })).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
    const usage = await run(process.execPath, [bin, "push"], { env: cleanEnv() });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("no paths given");
  });
});

describe("usage errors exit with 2 and say what to do", () => {
  test.each([
    [["frobnicate"], /unknown command "frobnicate"/],
    [["--frobnicate"], /unknown option "--frobnicate"/],
    [["push", "--frobnicate", "/nix/store/x"], /Unknown option '--frobnicate'/],
    [["push", "--cache", "http://127.0.0.1:9"], /no paths given/],
    [["push", "/nix/store/x"], /no cache given: pass --cache <url>, set NIX_CACHE_URL, or run uploader login <cache-url>/],
    [["push", "--cache", "ftp://x", "/nix/store/x"], /must be http or https/],
    [["push", "--cache", "http://x", "-j", "0", "/nix/store/x"], /--jobs must be a whole number from 1 to 64/],
    [["push", "--cache", "http://x", "--compression", "gzip", "/nix/store/x"], /unknown compression "gzip"/],
    [["push", "--cache", "http://x", "--compression-level", "30", "/nix/store/x"], /zstd compression levels go from 1 to 19/],
    [["keygen"], /--name is required/],
    [["keygen", "--name", "bad name"], /may only contain/],
  ])("%j", async (args, message) => {
    const r = await uploader(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/^hint: /m);
    expect(r.stdout).toBe("");
  });
});

describe("local problems exit with 3", () => {
  test("nix not on PATH", async () => {
    const path = await nix.addText("cli-nonix.txt");
    const r = await uploader(["push", "--cache", "http://127.0.0.1:9", path], cleanEnv({ PATH: "/nonexistent" }));
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("error: cannot run nix: not found");
    expect(r.stderr).toContain("hint: install Nix");
  });

  test("a file outside the store", async () => {
    const dir = await nix.tempDir();
    await writeFile(join(dir, "file"), "x");
    const r = await uploader(["push", "--cache", "http://127.0.0.1:9", join(dir, "file")]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("not in the Nix store");
  });

  test("an unreadable or malformed secret key file", async () => {
    const path = await nix.addText("cli-key.txt");
    const dir = await nix.tempDir();
    await writeFile(join(dir, "bad.secret"), "not-a-key");
    const missing = await uploader(["push", "--cache", "http://127.0.0.1:9", "--secret-key-file", join(dir, "none"), path]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/cannot read the secret key file .*none: no such file/);
    const bad = await uploader(["push", "--cache", "http://127.0.0.1:9", path], cleanEnv({ NIX_CACHE_SECRET_KEY_FILE: join(dir, "bad.secret") }));
    expect(bad.code).toBe(3);
    expect(bad.stderr).toContain("is not a Nix secret key");
  });
});

describe("keygen", () => {
  test("writes a 0600 secret key Nix can use, and prints the matching public key", async () => {
    const dir = await nix.tempDir();
    const r = await uploader(["keygen", "--name", "cli-test-1"], cleanEnv(), dir);
    expect(r.code).toBe(0);
    const secretFile = join(dir, "cli-test-1.secret");
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);
    const secret = await readFile(secretFile, "utf8");
    expect(secret).toMatch(/^cli-test-1:[A-Za-z0-9+/]{86}==$/);
    const publicKey = r.stdout.trim();
    expect(publicKey).toMatch(/^cli-test-1:[A-Za-z0-9+/]{43}=$/);
    expect(r.stderr).toContain(`secret key written to cli-test-1.secret`);

    // Nix derives the same public key from the secret file.
    const derived = await runOk("sh", ["-c", `nix key convert-secret-to-public < "${secretFile}"`], { env: nix.env });
    expect(derived.trim()).toBe(publicKey);

    // Nix signs with it, and the signature verifies with the printed public key.
    const path = await nix.addText("keygen-signed.txt");
    await nix.nix(["store", "sign", "--key-file", secretFile, path]);
    const [info] = await queryClosure([path], { env: nix.env });
    const sig = info!.sigs.find((s) => s.startsWith("cli-test-1:"));
    expect(sig).toBeDefined();
    const narinfo = { storePath: info!.path, url: "", narHash: info!.narHash, narSize: info!.narSize, references: [], sigs: [sig!], extra: [] };
    expect(await verifyNarInfo(narinfo, [parsePublicKey(publicKey)])).toBe(true);
  });

  test("--secret-key-file, --public-key-file and --json", async () => {
    const dir = await nix.tempDir();
    const r = await uploader(
      ["keygen", "--name", "cli-test-2", "--secret-key-file", join(dir, "sk"), "--public-key-file", join(dir, "pk"), "--json"],
    );
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { name: string; publicKey: string; secretKeyFile: string };
    expect(out).toEqual({ name: "cli-test-2", publicKey: await readFile(join(dir, "pk"), "utf8"), secretKeyFile: join(dir, "sk") });
  });

  test("refuses to overwrite an existing file", async () => {
    const dir = await nix.tempDir();
    await writeFile(join(dir, "existing"), "precious");
    const r = await uploader(["keygen", "--name", "cli-test-3", "--secret-key-file", join(dir, "existing")]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("already exists; not overwriting a key");
    expect(await readFile(join(dir, "existing"), "utf8")).toBe("precious");
  });
});
