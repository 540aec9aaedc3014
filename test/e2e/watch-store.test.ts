// Pushing as builds finish, end to end: `uploader watch-store` and `post-build-hook` run as
// users run them (`node uploader/cli.ts …`, signals included) against the real Worker
// (workerd + local R2 through wrangler, on a fixed port so that it can go away and come
// back with its data), with store paths built by the host's real Nix while the watcher
// runs, and the hook set in a real nix.conf so that `nix-build` runs it.
//
// What is checked comes from the cache over HTTP (narinfos present, references), from
// the spool directory on disk (what is still queued) and from exit codes; the watcher's
// output is only read to know when it has reached a state (watching, waiting).
//
// Other engineers' tests build in the same /nix/store at the same time, so the watchers
// here queue only this file's paths (`--exclude` everything not named nec-watch-…).
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { unstable_startWorker } from "wrangler";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { formatPublicKey, generateKeyPair, parsePublicKey, publicKeyOf, verifyNarInfo } from "../../src/nix/signature.ts";
import { writeNewSecretKeyFile } from "../../uploader/key-file.ts";
import { applyLocalMigrations } from "../../dev/local-cache.ts";
import { listJobs, readJob } from "../../uploader/spool.ts";
import { freePort } from "./harness.ts";
import { CLI, NixSandbox, PROJECT_ROOT, run, runOk } from "../uploader/helpers.ts";

/** New store paths that do not match are left alone: only this file's builds are queued. */
const ONLY_OURS = "^(?!.*-nec-watch-)";

let nix: NixSandbox;
let url: string;
let port: number;
let state: string;
const token = randomBytes(16).toString("hex");
let stopCache: (() => Promise<void>) | undefined;
/** The key the cache trusts (TRUSTED_PUBLIC_KEYS), which the uploaders here sign with. */
let trustedPublicKey: string;
let trustedKeyFile: string;
/** A key the cache does not trust. */
let untrustedKeyFile: string;
const watchers: Watch[] = [];

/**
 * The Worker on `port` with the data in `state`: started again, it has what it had. It
 * takes only narinfos signed by the trusted key, which the uploaders here sign with.
 */
async function cacheUp(): Promise<void> {
  process.env.WRANGLER_LOG ??= "warn";
  const plain = Object.fromEntries(
    Object.entries({ UPSTREAM_CACHES: "", TRUSTED_PUBLIC_KEYS: trustedPublicKey }).map(([k, value]) => [k, { type: "plain_text" as const, value }]),
  );
  const worker = await unstable_startWorker({
    config: join(PROJECT_ROOT, "wrangler.toml"),
    bindings: { WRITE_TOKEN: { type: "secret_text", value: token }, ...plain },
    dev: { server: { hostname: "127.0.0.1", port }, inspector: false, persist: state as unknown as boolean, watch: false },
  });
  await worker.ready;
  stopCache = () => worker.dispose();
}

async function cacheDown(): Promise<void> {
  await stopCache?.();
  stopCache = undefined;
}

beforeAll(async () => {
  nix = await NixSandbox.create();
  state = await nix.tempDir("worker-");
  await applyLocalMigrations(state);
  port = await freePort();
  const keys = await nix.tempDir("keys-");
  trustedKeyFile = join(keys, "trusted.secret");
  untrustedKeyFile = join(keys, "untrusted.secret");
  const trusted = await generateKeyPair("watch-test-1");
  await writeNewSecretKeyFile(trustedKeyFile, trusted);
  await writeNewSecretKeyFile(untrustedKeyFile, await generateKeyPair("watch-other-1"));
  trustedPublicKey = formatPublicKey(publicKeyOf(trusted));
  url = `http://127.0.0.1:${port}`;
  await cacheUp();
});

afterAll(async () => {
  for (const w of watchers) w.child.kill("SIGKILL");
  await cacheDown();
  await nix?.cleanup();
});

/** The environment of every uploader and Nix command here. */
function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...nix.env,
    NIX_CACHE_URL: url,
    NIX_CACHE_TOKEN: token,
    NIX_CACHE_SECRET_KEY_FILE: trustedKeyFile,
    // No config file from the machine's user, no spool of theirs.
    NIX_CACHE_CONFIG: join(nix.dir, "no-config.json"),
    NIX_CACHE_SPOOL: join(nix.dir, "default-spool"),
    ...extra,
  };
}

/** A running `uploader watch-store`, its output collected. */
class Watch {
  readonly child: ChildProcess;
  output = "";
  readonly exited: Promise<number | null>;

  constructor(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, "watch-store", ...args], { env: env(extraEnv), stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout!.on("data", (d: Buffer) => (this.output += d.toString()));
    this.child.stderr!.on("data", (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
    watchers.push(this);
  }

  /** Waits until the output matches `re` after `from` characters; returns where the match ends. */
  async waitFor(re: RegExp, from = 0, ms = 60_000): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.output.slice(from));
      if (m) return from + m.index + m[0].length;
      if (this.child.exitCode !== null) throw new Error(`watch-store exited (${this.child.exitCode}) before ${re}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`no ${re} within ${ms / 1000} s:\n${this.output}`);
      await sleep(100);
    }
  }

  async started(): Promise<void> {
    await this.waitFor(/^watching for /m);
  }

  /** Sends the signal and returns the exit code. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    this.child.kill(signal);
    return this.exited;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what: string, cond: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(200);
  }
}

/** The narinfo's text when the cache has it; null when it does not or is down. */
async function narInfo(path: string): Promise<string | null> {
  const hash = path.slice(path.lastIndexOf("/") + 1, path.lastIndexOf("/") + 33);
  try {
    const res = await fetch(`${url}/${hash}.narinfo`);
    return res.status === 200 ? await res.text() : null;
  } catch {
    return null;
  }
}

async function inCache(path: string): Promise<boolean> {
  return (await narInfo(path)) !== null;
}

/** Every path queued in the spool's jobs. */
async function queued(spool: string): Promise<string[]> {
  const paths: string[] = [];
  for (const name of await listJobs(spool).catch(() => [])) paths.push(...((await readJob(spool, name)) ?? []));
  return paths;
}

/** The Nix expression of a fresh path `nec-watch-<label>`, referring to `dependsOn`. */
async function expression(label: string, dependsOn?: string): Promise<string> {
  const salt = randomBytes(8).toString("hex");
  const dep = dependsOn ? `echo \${builtins.storePath "${dependsOn}"} >> $out` : "";
  const file = join(await nix.tempDir("expr-"), "default.nix");
  await writeFile(
    file,
    `builtins.derivation { name = "nec-watch-${label}"; system = builtins.currentSystem; builder = "/bin/sh";
       args = [ "-c" ''echo ${salt} > $out; ${dep}'' ]; }`,
  );
  return file;
}

/** Builds a fresh path with the sandbox's Nix (no hook). */
async function build(label: string, dependsOn?: string): Promise<string> {
  return (await runOk("nix-build", [await expression(label, dependsOn), "--no-out-link"], { env: env() })).trim();
}

describe("watch-store", () => {
  test("pushes the paths built while it runs with their closures, and stops cleanly", async () => {
    const spool = await nix.tempDir("spool-");
    // Built before the watcher starts, so only top's closure brings it to the cache.
    const dep = await build("dep");
    const w = new Watch(["--spool", spool, "--exclude", ONLY_OURS]);
    await w.started();
    const top = await build("top", dep);
    await until("top and its dependency in the cache", async () => (await inCache(top)) && (await inCache(dep)));
    const info = parseNarInfo((await narInfo(top))!);
    expect(info.references).toContain(dep.slice("/nix/store/".length));
    // Signed as push signs (the cache only takes narinfos signed by the key it trusts).
    expect(await verifyNarInfo(info, [parsePublicKey(trustedPublicKey)])).toBe(true);
    expect(await w.stop("SIGTERM")).toBe(0);
    expect(await listJobs(spool)).toEqual([]);
  });

  test("the first signal pushes what is queued without waiting for the batch", async () => {
    const spool = await nix.tempDir("spool-");
    // A batch would start ten minutes after the first new path: only stopping pushes it.
    const w = new Watch(["--spool", spool, "--exclude", ONLY_OURS, "--batch-wait", "600"]);
    await w.started();
    const path = await build("queued");
    await until("the new path queued in the spool", async () => (await queued(spool)).includes(path));
    expect(await inCache(path)).toBe(false);
    expect(await w.stop("SIGINT")).toBe(0);
    expect(await inCache(path)).toBe(true);
    expect(await listJobs(spool)).toEqual([]);
  });

  test("waits out the cache being away, and an abort or a restart loses nothing", async () => {
    const spool = await nix.tempDir("spool-");
    await cacheDown();
    const w = new Watch(["--spool", spool, "--exclude", ONLY_OURS]);
    await w.started();
    await w.waitFor(/the cache does not answer yet; waiting for the cache to answer .*connection refused/);
    const first = await build("outage-1");
    let seen = await w.waitFor(/waiting for the cache to answer .*connection refused.*: 1 path queued, next attempt in \d+ s/);
    expect(await queued(spool)).toEqual([first]);
    await cacheUp();
    await until("the path built during the outage in the cache", () => inCache(first));

    // Away again while the watcher runs.
    await cacheDown();
    const second = await build("outage-2");
    seen = await w.waitFor(/waiting for the cache to answer/, seen);
    expect(await queued(spool)).toEqual([second]);
    // Stopping tries once more; a second signal aborts that attempt, keeping the queue.
    w.child.kill("SIGINT");
    await w.waitFor(/stopping: pushing the 1 queued path first/, seen);
    expect(await w.stop("SIGINT")).toBe(130);
    expect(await queued(spool)).toEqual([second]);

    // A new watcher on the same spool pushes what the aborted one left.
    await cacheUp();
    const next = new Watch(["--spool", spool, "--exclude", ONLY_OURS]);
    await next.waitFor(/1 path queued from before/);
    await until("the path the aborted watcher left in the cache", () => inCache(second));
    expect(await next.stop("SIGTERM")).toBe(0);
    expect(await listJobs(spool)).toEqual([]);
  });

  test("refuses to start with a token the cache refuses, or beside another watcher; sets a malformed job aside", async () => {
    const spool = await nix.tempDir("spool-");
    await writeFile(join(spool, "1-by-hand.paths"), "result\n");
    const w = new Watch(["--spool", spool, "--spool-only"]);
    await w.started();
    expect(w.output).toContain(`set aside the malformed job ${join(spool, "failed", "1-by-hand.paths")}: line 1 is not a store path: "result"`);
    expect(await listJobs(spool)).toEqual([]);
    const second = await run(process.execPath, [CLI, "watch-store", "--spool", spool, "--spool-only"], { env: env() });
    expect(second.code).toBe(3);
    expect(second.stderr).toContain(`another uploader watch-store (pid ${w.child.pid}) is already watching ${spool}`);
    expect(await w.stop("SIGTERM")).toBe(0);
    // Push's preflight: an error that waiting would not fix stops the watcher at once.
    const wrongToken = await run(process.execPath, [CLI, "watch-store", "--spool", spool, "--spool-only"], { env: env({ NIX_CACHE_TOKEN: "not-the-token" }) });
    expect(wrongToken.code).toBe(4);
    expect(wrongToken.stderr).toContain("which may not upload");
  });

  test("a path the cache refuses is tried three times, then set aside in failed/", async () => {
    const spool = await nix.tempDir("spool-");
    const path = await build("refused");
    // Signed with a key the cache does not trust: the cache answers, and refuses the path.
    const w = new Watch(["--spool", spool, "--spool-only", "--secret-key-file", untrustedKeyFile]);
    await w.started();
    await runOk(process.execPath, [CLI, "post-build-hook", "--spool", spool, path], { env: env() });
    await w.waitFor(new RegExp(`gave up on ${path} after 3 attempts: .*no valid signature by a trusted key`));
    await w.waitFor(/listed in .*: move that file back into/);
    expect(await listJobs(spool)).toEqual([]);
    const failed = join(spool, "failed");
    const setAside = await listJobs(failed);
    expect(setAside).toHaveLength(1);
    expect(await readJob(failed, setAside[0]!)).toEqual([path]);
    expect(await inCache(path)).toBe(false);
    expect(await w.stop("SIGTERM")).toBe(0);
  });
});

describe("push --stdin", () => {
  test("pushes what nix-build prints, with the closures; an empty pipe is bad usage", async () => {
    const dep = await build("stdin-dep");
    const top = await expression("stdin-top", dep);
    const other = await expression("stdin-other");
    const r = await run("sh", ["-c", `nix-build ${top} ${other} --no-out-link | "${process.execPath}" ${CLI} push --stdin --json`], { env: env() });
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { uploaded: number; paths: Array<{ path: string; outcome: string }> };
    const pushed = summary.paths.filter((p) => p.outcome === "uploaded").map((p) => p.path.replace(/^.*-nec-watch-/, ""));
    expect(pushed.sort()).toEqual(["stdin-dep", "stdin-other", "stdin-top"]);
    for (const p of summary.paths) expect(await inCache(p.path)).toBe(true);

    const empty = await run("sh", ["-c", `true | "${process.execPath}" ${CLI} push --stdin`], { env: env() });
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain("no paths on standard input");
  });
});

describe("post-build-hook in nix.conf", () => {
  /** A Nix configuration whose post-build-hook queues into `spool`. */
  async function hookedNix(spool: string): Promise<NodeJS.ProcessEnv> {
    const dir = await nix.tempDir("hook-conf-");
    const script = join(dir, "upload-to-cache.sh");
    await writeFile(script, `#!/bin/sh\nexec ${process.execPath} ${CLI} post-build-hook --spool ${spool}\n`);
    await chmod(script, 0o755);
    const conf = await readFile(join(nix.env.NIX_CONF_DIR!, "nix.conf"), "utf8");
    await mkdir(join(dir, "conf"));
    await writeFile(join(dir, "conf", "nix.conf"), `${conf}post-build-hook = ${script}\n`);
    return env({ NIX_CONF_DIR: join(dir, "conf") });
  }

  async function buildWithHook(hookEnv: NodeJS.ProcessEnv, label: string): Promise<{ path: string; log: string }> {
    const r = await run("nix-build", [await expression(label), "--no-out-link"], { env: hookEnv });
    if (r.code !== 0) throw new Error(`nix-build failed (${r.code}):\n${r.stderr}`);
    return { path: r.stdout.trim(), log: r.stderr };
  }

  test("nix-build queues its outputs for the watcher; with the watcher killed they wait in the spool for the next one", async () => {
    const spool = await nix.tempDir("spool-");
    const hookEnv = await hookedNix(spool);
    // --spool-only: the store is not watched, so only the hook can bring these paths.
    const w = new Watch(["--spool", spool, "--spool-only"]);
    await w.started();
    const one = await buildWithHook(hookEnv, "hook-1");
    expect(one.log).toMatch(new RegExp(`post-build-hook: queued 1 path built by /nix/store/[a-z0-9]{32}-nec-watch-hook-1\\.drv for uploader watch-store \\(pid ${w.child.pid}\\)`));
    await until("the hook's path in the cache", () => inCache(one.path));

    expect(await w.stop("SIGKILL")).toBeNull();
    const two = await buildWithHook(hookEnv, "hook-2");
    expect(two.log).toContain(`no uploader watch-store is running on ${spool}: queued 1 path`);
    expect(await queued(spool)).toEqual([two.path]);
    expect(await inCache(two.path)).toBe(false);

    const next = new Watch(["--spool", spool, "--spool-only"]);
    await until("the spooled path in the cache", () => inCache(two.path));
    expect(await next.stop("SIGTERM")).toBe(0);
    expect(await listJobs(spool)).toEqual([]);
  });

  test("OUT_PATHS as Nix sets it (space-separated) is queued as is", async () => {
    const spool = await nix.tempDir("spool-");
    const a = await build("out-a");
    const b = await build("out-b");
    const r = await run(process.execPath, [CLI, "post-build-hook", "--spool", spool], { env: env({ OUT_PATHS: `${a} ${b}`, DRV_PATH: "" }) });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`no uploader watch-store is running on ${spool}: queued 2 paths there`);
    expect(await queued(spool)).toEqual([a, b]);
  });

  test("with --if-no-watcher push and no watcher, the hook pushes at once", async () => {
    const spool = await nix.tempDir("spool-");
    const hookEnv = { ...(await hookedNix(spool)), NIX_CACHE_IF_NO_WATCHER: "push" };
    const built = await buildWithHook(hookEnv, "hook-push");
    expect(built.log).toContain(`no uploader watch-store is running on ${spool}: pushing 1 path`);
    expect(built.log).toContain("post-build-hook: pushed 1 path");
    expect(await inCache(built.path)).toBe(true);
    expect(await listJobs(spool)).toEqual([]);
  });
});
