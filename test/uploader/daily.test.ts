// The commands of daily use, run as users run them against the real Worker (workerd and
// local R2/D1 through wrangler) and the real Nix: `login` stores the cache so that push and
// pins need no flags, `use` configures Nix so that a plain `nix-store -r` substitutes from
// the (private) cache, `doctor` checks the setup and says what is wrong with a bad token,
// a wrong path, https against http or a server that is not a cache; push's preflight stops
// before reading anything when the token may not write; --json errors are JSON.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CLI, NixSandbox, run, runOk, type Closure } from "./helpers.ts";
import { startWorker, type TestWorker } from "./worker.ts";

let nix: NixSandbox;
let worker: TestWorker;
let closure: Closure;
let publicKey: string;
const READ_TOKEN = "daily-read-token";
const ADMIN_TOKEN = "daily-admin-token";

beforeAll(async () => {
  nix = await NixSandbox.create();
  const keys = await nix.tempDir("keys-");
  const secretFile = join(keys, "daily-test-1.secret");
  publicKey = (await runOk(process.execPath, [CLI, "keygen", "--name", "daily-test-1", "--secret-key-file", secretFile], { env: nix.env })).trim();
  worker = await startWorker({ SIGNING_KEY: (await readFile(secretFile, "utf8")).trim(), READ_TOKEN, ADMIN_TOKEN });
  closure = await nix.buildClosure();
});
afterAll(async () => {
  await worker?.dispose();
  await nix?.cleanup();
});

/** The uploader with the sandbox's Nix and config directory, and none of its variables unless given. */
function uploader(args: string[], extraEnv: NodeJS.ProcessEnv = {}, stdin?: string) {
  const env: NodeJS.ProcessEnv = { ...nix.env, ...extraEnv };
  for (const k of ["NIX_CACHE_URL", "NIX_CACHE_TOKEN", "NIX_CACHE_ADMIN_TOKEN", "NIX_CACHE_SECRET_KEY_FILE"]) if (!(k in extraEnv)) delete env[k];
  if (stdin === undefined) return run(process.execPath, [CLI, ...args], { env });
  return run("sh", ["-c", `printf '%s\\n' "$TOKEN_IN" | "$0" "$@"`, process.execPath, CLI, ...args], { env: { ...env, TOKEN_IN: stdin } });
}

const configFile = () => join(nix.dir, "config", "nix-edge-cache", "config.json");

describe("login", () => {
  test("refuses a token the cache does not accept, and stores nothing", async () => {
    const r = await uploader(["login", worker.url], { NIX_CACHE_TOKEN: "wrong" });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("the cache does not accept this token");
    await expect(stat(configFile())).rejects.toThrow(/ENOENT/);
  });

  test("stores URL and tokens (mode 0600) after checking them; push and pins then need no flags", async () => {
    const r = await uploader(["login", worker.url, "--name", "local", "--admin-token-stdin"], { NIX_CACHE_TOKEN: `${worker.token}\n` }, ADMIN_TOKEN);
    expect(r.stderr).toContain('logged in to');
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/as "local" \(write token accepted, admin token accepted\), the default cache/);
    expect((await stat(configFile())).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(configFile(), "utf8"));
    expect(stored).toEqual({ default: "local", caches: { local: { url: worker.url, token: worker.token, adminToken: ADMIN_TOKEN } } });

    const push = await uploader(["push", closure.top]);
    expect(push.stderr).toMatch(/3 uploaded/);
    expect(push.code).toBe(0);
    const narinfo = await fetch(`${worker.url}/${closure.top.slice(11, 43)}.narinfo`, { headers: { Authorization: `Bearer ${READ_TOKEN}` } });
    expect(narinfo.status).toBe(200);
    expect((await uploader(["pin", "daily", closure.top])).code).toBe(0);
    expect((await uploader(["pins"])).stdout).toContain(`daily\t${closure.top}`);
    // The environment still wins over what login stored.
    const refused = await uploader(["pins"], { NIX_CACHE_ADMIN_TOKEN: "not-it", NIX_CACHE_TOKEN: "not-it" });
    expect(refused.code).toBe(4);
  });

  test("logging in again to the same URL, with no token given, checks and keeps the stored ones", async () => {
    const before = await readFile(configFile(), "utf8");
    const r = await uploader(["login", worker.url, "--name", "local"]);
    expect(r.stderr).toMatch(/as "local" \(write token accepted, admin token accepted\)/);
    expect(r.code).toBe(0);
    expect(JSON.parse(await readFile(configFile(), "utf8"))).toEqual(JSON.parse(before));
  });
});

describe("use", () => {
  test("configures Nix (keys, substituter, netrc for the private cache) so that a plain nix-store -r substitutes", async () => {
    const r = await uploader(["use"]);
    expect(r.stderr).toContain(`added to ${join(nix.dir, "nix-conf", "nix.conf")}`);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("Nix will substitute from");
    const conf = await readFile(join(nix.dir, "nix-conf", "nix.conf"), "utf8");
    expect(conf).toContain(`extra-substituters = ${worker.url}\nextra-trusted-public-keys = ${publicKey}\n`);
    const netrc = join(nix.dir, "nix-conf", "netrc");
    expect(await readFile(netrc, "utf8")).toBe(`machine 127.0.0.1 login nix password ${worker.token}\n`);
    expect((await stat(netrc)).mode & 0o777).toBe(0o600);

    // Nothing but what use wrote: no --option, a fresh store that has none of the closure.
    const store = await nix.tempDir("store-");
    await runOk("nix-store", ["--store", store, "-r", closure.top], { env: nix.env });
    expect(await readFile(join(store, closure.dep), "utf8")).toMatch(/^I am a dependency /);

    const again = await uploader(["use"]);
    expect(again.stderr).toContain("already uses");
    expect(await readFile(join(nix.dir, "nix-conf", "nix.conf"), "utf8")).toBe(conf);
  });

  test("prints the NixOS and flake snippets instead, with the cache's key", async () => {
    const nixos = await uploader(["use", "--print", "nixos"]);
    expect(nixos.stdout).toContain(`nix.settings = {\n    extra-substituters = [ "${worker.url}" ];\n    extra-trusted-public-keys = [ "${publicKey}" ];`);
    expect(nixos.stderr).toContain("the cache is private");
    const flake = await uploader(["use", "--print", "flake", "--nix-conf", "/nonexistent/never-written"]);
    expect(flake.stdout).toContain("nixConfig = {");
  });
});

describe("doctor", () => {
  test("all checks pass once logged in and used", async () => {
    const r = await uploader(["doctor", "--json"]);
    const out = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; status: string; message: string }> };
    const status = Object.fromEntries(out.checks.map((c) => [c.name, c.status]));
    expect(status).toEqual({
      settings: "ok", cache: "ok", "write token": "ok", "admin token": "ok", clock: "ok",
      nix: "ok", "nix-command": "ok", "trusted key": "ok", substituter: "ok", "trusted user": "ok",
    });
    expect(out.ok).toBe(true);
    expect(r.code).toBe(0);
  });

  test("a read token: the write check fails and says what the token is", async () => {
    const r = await uploader(["doctor"], { NIX_CACHE_TOKEN: READ_TOKEN });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/✗ write token +the token \(from env\) is a read token, which may not upload/);
    expect(r.stderr).toContain("error: 1 check failed: write token");
  });

  test("a path that is not the cache's: says where the cache is", async () => {
    const r = await uploader(["doctor", "--cache", `${worker.url}/cache`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no Nix binary cache at this URL");
    expect(r.stderr).toContain(`there is a cache at ${worker.url}: did you mean that URL (without /cache)?`);
  });

  test("https against a plain http cache: fails at once and says to use http", async () => {
    const started = Date.now();
    const r = await uploader(["doctor", "--cache", worker.url.replace("http:", "https:")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`use ${worker.url}`);
    // No five attempts with backoff for a failure that repeats.
    expect(r.stderr).not.toContain("after 5 attempts");
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  test("a server that is not a cache: says it answers with an HTML page", async () => {
    const server: Server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>Welcome</title>");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const r = await uploader(["doctor", "--cache", `http://127.0.0.1:${(server.address() as AddressInfo).port}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("the server answers with an HTML page, not a binary cache");
    } finally {
      server.close();
    }
  });
});

describe("push's preflight and --json errors", () => {
  test("a token that may not write stops the push before any NAR is read, without retries", async () => {
    const started = Date.now();
    const r = await uploader(["push", closure.top], { NIX_CACHE_TOKEN: READ_TOKEN });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("is a read token, which may not upload");
    expect(r.stderr).not.toContain("in the closure");
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  test("--json prints a JSON error object on stdout for a fatal error", async () => {
    const r = await uploader(["push", "--json", "--cache", "http://127.0.0.1:9", closure.top], { NIX_CACHE_TOKEN: "x" });
    expect(r.code).toBe(4);
    const out = JSON.parse(r.stdout) as { error: { type: string; message: string; hint?: string; exitCode: number } };
    expect(out.error).toMatchObject({ type: "NetworkError", exitCode: 4 });
    expect(out.error.message).toContain("connection refused");
    const usage = await uploader(["push", "--json"]);
    expect(JSON.parse(usage.stdout)).toMatchObject({ error: { type: "UsageError", exitCode: 2, message: "no paths given" } });
  });

  test(".drv arguments: the outputs are pushed and the push says so; an unbuilt output is named, with how to build it", async () => {
    const built = await uploader(["push", closure.drv], { NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token });
    expect(built.stderr).toContain(`${closure.drv} is a derivation: pushing its output ${closure.top} (not the .drv file)`);
    expect(built.code).toBe(0);
    const dir = await nix.tempDir("unbuilt-");
    await writeFile(join(dir, "x.nix"), `builtins.derivation { name = "nec-unbuilt"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${Date.now()} > $out" ]; }`);
    const drv = (await runOk("nix-instantiate", [join(dir, "x.nix")], { env: nix.env })).trim().split("\n").at(-1)!;
    const out = (await runOk("nix-store", ["-q", "--outputs", drv], { env: nix.env })).trim();
    const unbuilt = await uploader(["push", drv], { NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token });
    expect(unbuilt.code).toBe(3);
    expect(unbuilt.stderr).toContain(`error: ${drv}: is a derivation whose output ${out} is not built`);
    expect(unbuilt.stderr).toContain(`hint: push pushes a derivation's outputs: build them first (nix-build ${drv}`);
  });

  test("a token with a trailing newline (a pasted secret) works", async () => {
    await writeFile(join(nix.dir, "token"), `${worker.token}\n`);
    const r = await uploader(["push", "--cache", worker.url, closure.tree], { NIX_CACHE_TOKEN: await readFile(join(nix.dir, "token"), "utf8") });
    expect(r.stderr).toMatch(/1 already cached/);
    expect(r.code).toBe(0);
  });
});
