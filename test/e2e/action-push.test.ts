// The GitHub Action (uploader/action.yml) run as the runner runs it: each of its steps is
// `node uploader/action/dist/<step>.js` (the committed bundle) with the runner's interface,
// i.e. INPUT_* variables, a GITHUB_STATE file whose `name=value` lines come back to the
// post step as STATE_<name>, a GITHUB_ENV file whose lines become the environment of every
// later step (the build's Nix included), a GITHUB_OUTPUT file and a GITHUB_STEP_SUMMARY
// file. The cache is the real Worker as `npm start` runs it and the store paths are real
// ones built by a real Nix.
//
// What is checked comes from the cache over HTTP (narinfos, their sizes and signatures),
// from Nix (derivers) and from the files the runner would read, not from the action.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { formatBytes } from "../../uploader/progress.ts";
import { buildClosure as buildClosureIn } from "../uploader/helpers.ts";
import { buildClosure, freePort, LocalCache, NixClient, PROJECT_ROOT, run, runOk, type Closure, type RunResult } from "./harness.ts";

const ACTION_DIR = join(PROJECT_ROOT, "uploader", "action", "dist");

let cache: LocalCache;
let nix: NixClient;
let runnerDir: string;

beforeAll(async () => {
  nix = await NixClient.create();
  cache = await LocalCache.start();
  runnerDir = await mkdtemp(join(tmpdir(), "nec-runner-"));
});

/** Every job's directory, so that a watcher a failed test left running is stopped. */
const jobDirs: string[] = [];

afterAll(async () => {
  for (const dir of jobDirs) {
    const state = await readFile(join(dir, "state"), "utf8").catch(() => "");
    const pid = Number(/^watcher-pid=(\d+)$/m.exec(state)?.[1]);
    if (pid && running(pid)) process.kill(pid, "SIGKILL");
  }
  await cache?.stop();
  await nix?.cleanup();
  if (runnerDir) await rm(runnerDir, { recursive: true, force: true });
});

/** One job on a simulated runner: its files, and the inputs every step of the action gets. */
class Job {
  readonly dir: string;
  readonly inputs: Record<string, string>;
  /** Variables the runner's environment has besides the usual ones. */
  extraEnv: Record<string, string> = {};
  constructor(dir: string, inputs: Record<string, string>) {
    this.dir = dir;
    this.inputs = inputs;
  }

  static async create(inputs: Record<string, string>): Promise<Job> {
    const dir = await mkdtemp(join(runnerDir, "job-"));
    await mkdir(join(dir, "temp"));
    await mkdir(join(dir, "workspace"));
    for (const f of ["state", "env", "output", "summary.md"]) await writeFile(join(dir, f), "");
    jobDirs.push(dir);
    return new Job(dir, inputs);
  }

  get workspace(): string {
    return join(this.dir, "workspace");
  }

  /** What the runner gives the post step: each `name=value` line of GITHUB_STATE as STATE_name. */
  async savedState(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const line of (await readFile(join(this.dir, "state"), "utf8")).split("\n")) {
      const eq = line.indexOf("=");
      if (eq > 0) out[`STATE_${line.slice(0, eq)}`] = line.slice(eq + 1);
    }
    return out;
  }

  /** `name=value` lines of a runner file (the action writes no multi-line values). */
  async lines(file: "state" | "env" | "output"): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const line of (await readFile(join(this.dir, file), "utf8")).split("\n")) {
      const eq = line.indexOf("=");
      if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
    }
    return out;
  }

  /** The environment of a step of the job: the runner's, with what earlier steps put in GITHUB_ENV. */
  async env(): Promise<NodeJS.ProcessEnv> {
    const env: NodeJS.ProcessEnv = {
      ...(await nix.env()),
      GITHUB_ACTIONS: "true",
      CI: "true",
      GITHUB_ENV: join(this.dir, "env"),
      GITHUB_OUTPUT: join(this.dir, "output"),
      GITHUB_STATE: join(this.dir, "state"),
      GITHUB_STEP_SUMMARY: join(this.dir, "summary.md"),
      GITHUB_WORKSPACE: this.workspace,
      RUNNER_TEMP: join(this.dir, "temp"),
      ...this.extraEnv,
    };
    for (const k of Object.keys(env)) if (k.startsWith("INPUT_") || k.startsWith("NIX_CACHE_") || k === "NIX_USER_CONF_FILES") delete env[k];
    return { ...env, ...(await this.lines("env")) };
  }

  /** Starts one of the action's steps; `done` settles when it exits. */
  async start(name: "pre" | "main" | "post", actionDir: string = ACTION_DIR): Promise<{ child: ChildProcess; done: Promise<RunResult> }> {
    const env = { ...(await this.env()), ...(name === "post" ? await this.savedState() : {}) };
    // The runner's naming: INPUT_ + the name upper-cased, hyphens kept.
    for (const [k, v] of Object.entries(this.inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
    return spawnNode(join(actionDir, `${name}.js`), env, this.workspace);
  }

  async step(name: "pre" | "main" | "post", actionDir: string = ACTION_DIR): Promise<RunResult> {
    return (await this.start(name, actionDir)).done;
  }

  async summary(): Promise<string> {
    return readFile(join(this.dir, "summary.md"), "utf8");
  }
}

function spawnNode(script: string, env: NodeJS.ProcessEnv, cwd: string): { child: ChildProcess; done: Promise<RunResult> } {
  const child = spawn(process.execPath, [script], { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  const done = new Promise<RunResult>((resolve) => {
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
  return { child, done };
}

function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

/** The cache's narinfo for a path, or null when it answers 404. */
async function narinfo(storePath: string): Promise<NarInfo | null> {
  const res = await fetch(`${cache.url}/${hashPart(storePath)}.narinfo`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return parseNarInfo(await res.text());
}

function paths(c: Closure): string[] {
  return [c.tree, c.dep, c.top];
}

/** The number in a summary table row such as `| uploaded | 3 |`. */
function row(summary: string, label: string): number | undefined {
  const m = new RegExp(`^\\| ${label.replace(/[()]/g, "\\$&")} \\| (\\d+) \\|$`, "m").exec(summary);
  return m ? Number(m[1]) : undefined;
}

/** The store paths listed in one <details> section of the summary. */
function listed(summary: string, section: string): string[] {
  const m = new RegExp(`<summary>\\d+ ${section}</summary>\\n\\n([\\s\\S]*?)\\n\\n</details>`).exec(summary);
  return m ? [...m[1]!.matchAll(/^- `([^`]+)`/gm)].map((x) => x[1]!) : [];
}

/** Waits until the cache has every path (a narinfo each), or fails after `ms`. */
async function untilInCache(storePaths: readonly string[], ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const missing: string[] = [];
    for (const p of storePaths) if ((await narinfo(p)) === null) missing.push(p);
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`not in the cache after ${ms / 1000} s: ${missing.join(" ")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Whether a process runs (not a zombie). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
}

/** A build step of the job: a fresh closure built by the job's Nix, with the environment the action left. */
async function buildStep(job: Job): Promise<Closure> {
  return buildClosureIn(await job.env(), await mkdtemp(join(runnerDir, "build-")));
}

describe("the GitHub Action pushing while the job builds (push-mode hook, the default)", () => {
  it("configures Nix, pushes each build's outputs before the post step, and a fresh store substitutes them", async () => {
    const before = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: cache.token });
    const pre = await job.step("pre");
    expect(pre.code, pre.stdout + pre.stderr).toBe(0);
    expect(pre.stdout).toContain(`nix-edge-cache: ${cache.url} answers; the token may write`);
    const main = await job.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).not.toMatch(/::(warning|error)::/);

    // The action's nix.conf comes first in NIX_USER_CONF_FILES, for the later steps.
    const exported = await job.lines("env");
    const confFile = exported.NIX_USER_CONF_FILES!.split(":")[0]!;
    const conf = await readFile(confFile, "utf8");
    expect(conf).toMatch(new RegExp(`^extra-substituters = ${cache.url}$`, "m"));
    // The key comes from the cache's own description, not from an input.
    expect(conf).toMatch(new RegExp(`^extra-trusted-public-keys = ${cache.publicKey.replace(/[+/]/g, "\\$&")}$`, "m"));
    expect(conf).toMatch(/^post-build-hook = \/.*post-build-hook\.sh$/m);
    const pid = Number((await job.savedState())["STATE_watcher-pid"]);
    expect(running(pid)).toBe(true);

    const built = await buildStep(job);
    // Observed before the post step starts: the watcher pushed the builds' outputs (and
    // their closure: the tree was added, not built, and comes with top).
    await untilInCache(paths(built));
    for (const p of paths(before)) expect(await narinfo(p), p).toBeNull();

    // A fresh store, with only what the action configured (the tests' nix.conf has no
    // substituters and trusts only cache.nixos.org's key), substitutes the closure.
    const store = await nix.emptyStore();
    const sub = await run("nix-store", ["--store", store, "-r", built.top], { env: await job.env() });
    expect(sub.code, sub.stderr).toBe(0);
    expect(await readFile(join(store, built.top, "refs.txt"), "utf8")).toBe(await readFile(join(built.top, "refs.txt"), "utf8"));

    const post = await job.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    expect(post.stdout).not.toMatch(/::(warning|error)::/);
    expect(running(pid)).toBe(false);
    const summary = await job.summary();
    expect(summary).toContain("as builds finished");
    expect(listed(summary, "uploaded").sort()).toEqual(paths(built).sort());
    expect(row(summary, "uploaded")).toBe(3);
    expect(row(summary, "failed")).toBe(0);
    const infos = await Promise.all(paths(built).map(async (p) => (await narinfo(p))!));
    expect(await job.lines("output")).toEqual({
      "pushed-paths": "3",
      "pushed-bytes": String(infos.reduce((n, i) => n + (i.fileSize ?? 0), 0)),
      "pushed-nar-bytes": String(infos.reduce((n, i) => n + i.narSize, 0)),
    });
  });

  it("keeps what the job built when it is cancelled after the build (post step killed), unlike store-diff", async () => {
    const hooked = await Job.create({ "cache-url": cache.url, token: cache.token });
    const diffing = await Job.create({ "cache-url": cache.url, token: cache.token, "push-mode": "store-diff" });
    for (const job of [hooked, diffing]) expect((await job.step("main")).code).toBe(0);
    const pid = Number((await hooked.savedState())["STATE_watcher-pid"]);
    const builtHooked = await buildStep(hooked);
    const builtDiffing = await buildStep(diffing);
    // The rest of the job (tests, say) runs while the watcher pushes.
    await untilInCache([builtHooked.top]);
    // Cancelled: the post steps are killed as they start, and the runner kills what is left.
    for (const job of [hooked, diffing]) {
      const { child, done } = await job.start("post");
      child.kill("SIGKILL");
      expect((await done).code).toBe(128);
    }
    process.kill(pid, "SIGKILL");
    for (const p of paths(builtHooked)) expect(await narinfo(p), p).not.toBeNull();
    for (const p of paths(builtDiffing)) expect(await narinfo(p), p).toBeNull();
  });

  it("keeps the user's own Nix configuration files after its own, and adds the extra caches", async () => {
    const xdg = await mkdtemp(join(runnerDir, "xdg-config-"));
    await mkdir(join(xdg, "nix"));
    await writeFile(join(xdg, "nix", "nix.conf"), "extra-substituters = http://user.invalid\nconnect-timeout = 7\n");
    const extraKey = "other-cache-1:" + Buffer.alloc(32, 7).toString("base64");
    const job = await Job.create({
      "cache-url": cache.url,
      token: cache.token,
      "skip-push": "true",
      "extra-substituters": "http://other.invalid/a\nhttp://other.invalid/b",
      "extra-trusted-public-keys": extraKey,
    });
    job.extraEnv = { XDG_CONFIG_HOME: xdg };
    expect((await job.step("main")).code).toBe(0);
    const files = (await job.lines("env")).NIX_USER_CONF_FILES!.split(":");
    expect(files.slice(1)).toContain(join(xdg, "nix", "nix.conf"));
    const shown = await runOk("nix", ["show-config", "--json"], { env: await job.env() });
    const settings = JSON.parse(shown) as Record<string, { value: unknown }>;
    const words = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : String(v).split(/\s+/));
    expect(words(settings.substituters!.value)).toEqual(expect.arrayContaining([cache.url, "http://other.invalid/a", "http://other.invalid/b", "http://user.invalid"]));
    expect(words(settings["trusted-public-keys"]!.value)).toEqual(expect.arrayContaining([cache.publicKey, extraKey]));
    expect(String(settings["connect-timeout"]!.value)).toBe("7");
  });

  it("with skip-push, configures substitution only and pushes nothing", async () => {
    const skip = await Job.create({ "cache-url": cache.url, token: cache.token, "skip-push": "true" });
    expect((await skip.step("main")).code).toBe(0);
    const conf = await readFile((await skip.lines("env")).NIX_USER_CONF_FILES!.split(":")[0]!, "utf8");
    expect(conf).toContain(`extra-substituters = ${cache.url}`);
    expect(conf).not.toContain("post-build-hook");
    const built = await buildStep(skip);
    const post = await skip.step("post");
    expect(post.code).toBe(0);
    expect(await skip.summary()).toContain("skip-push is set: nothing was pushed.");
    expect(await skip.lines("output")).toMatchObject({ "pushed-paths": "0", "pushed-bytes": "0" });
    for (const p of paths(built)) expect(await narinfo(p)).toBeNull();

  });

  it("drains in the post step what the watcher still holds (uploader-args reach it: a batch wait of 10 minutes)", async () => {
    const job = await Job.create({ "cache-url": cache.url, token: cache.token, compression: "xz", "uploader-args": "--batch-wait 600" });
    expect((await job.step("main")).code).toBe(0);
    const built = await buildStep(job);
    // The hook queued the outputs; the watcher holds them for its batch wait.
    const spool = (await job.savedState()).STATE_spool!;
    const queued = await readdir(spool);
    expect(queued.some((n) => n.endsWith(".paths")), queued.join(" ")).toBe(true);
    await new Promise((r) => setTimeout(r, 2000));
    expect(await narinfo(built.top)).toBeNull();
    const post = await job.step("post");
    expect(post.code, post.stdout).toBe(0);
    for (const p of paths(built)) expect((await narinfo(p))?.compression, p).toBe("xz");
    expect(row(await job.summary(), "uploaded")).toBe(3);
    expect(await readdir(spool)).not.toContain(expect.stringMatching(/\.paths$/));
  });

  it("does not queue the built paths that exclude matches (OUT_PATHS as Nix after 2.8.0 sets it)", async () => {
    const other = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: cache.token, exclude: "-nec-test-dep$", "uploader-args": "--batch-wait 600" });
    expect((await job.step("main")).code).toBe(0);
    const conf = await readFile((await job.lines("env")).NIX_USER_CONF_FILES!.split(":")[0]!, "utf8");
    const script = /^post-build-hook = (.+)$/m.exec(conf)![1]!;
    const spool = (await job.savedState()).STATE_spool!;
    const jobs = async (): Promise<string[]> => {
      const names = (await readdir(spool)).filter((n) => n.endsWith(".paths"));
      return Promise.all(names.map((n) => readFile(join(spool, n), "utf8")));
    };
    // As Nix runs it: no arguments, OUT_PATHS space-separated.
    const hook = (outPaths: string): Promise<RunResult> => run(script, [], { env: { ...process.env, OUT_PATHS: outPaths, DRV_PATH: "" } });
    const r = await hook(`${other.dep} ${other.top}`);
    expect(r.code, r.stderr).toBe(0);
    const queued = (await jobs()).join("");
    expect(queued).toContain(other.top);
    expect(queued).not.toContain(other.dep);
    // Only excluded paths: nothing queued, and the build goes on (exit 0).
    const only = await hook(other.dep);
    expect(only.code, only.stderr).toBe(0);
    expect(await jobs()).toHaveLength(1);
    expect((await job.step("post")).code).toBe(0);
    expect(await narinfo(other.top)).not.toBeNull();
  });
});

describe("the GitHub Action against a local cache", () => {
  it("with push-mode store-diff, pushes every store path built after its main step at the end, and not the ones from before", async () => {
    const before = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: cache.token, "push-mode": "store-diff" });

    const pre = await job.step("pre");
    expect(pre.code).toBe(0);
    expect(pre.stdout).not.toContain("::warning::");
    const main = await job.step("main");
    expect(main.code, main.stderr).toBe(0);
    expect(await job.savedState()).toHaveProperty("STATE_snapshot");

    const built = await buildClosure(nix);
    // Nothing is pushed before the post step in this mode.
    for (const p of paths(built)) expect(await narinfo(p), p).toBeNull();
    const post = await job.step("post");
    expect(post.code, post.stderr + post.stdout).toBe(0);
    expect(post.stdout).not.toMatch(/::(warning|error)::/);

    for (const p of paths(built)) expect(await narinfo(p), p).not.toBeNull();
    for (const p of paths(before)) expect(await narinfo(p), p).toBeNull();
    // Derivations are never pushed: clients substitute outputs, not build recipes.
    const drv = (await runOk("nix-store", ["-q", "--deriver", built.top], { env: await nix.env() })).trim();
    expect(drv).toMatch(/\.drv$/);
    expect(await narinfo(drv)).toBeNull();

    const summary = await job.summary();
    const uploaded = listed(summary, "uploaded");
    expect(uploaded).toEqual(expect.arrayContaining(paths(built)));
    expect(uploaded).not.toContain(drv);
    expect(row(summary, "uploaded")).toBe(uploaded.length);
    expect(row(summary, "failed")).toBe(0);
  });

  it("pushes the paths it is given, with a summary of counts, bytes and compression", async () => {
    const built = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: cache.token, paths: "./result" });
    await symlink(built.top, join(job.workspace, "result"));
    expect((await job.step("pre")).code).toBe(0);
    expect((await job.step("main")).code).toBe(0);
    const post = await job.step("post");
    expect(post.code, post.stderr + post.stdout).toBe(0);

    const infos: NarInfo[] = [];
    for (const p of paths(built)) {
      const info = await narinfo(p);
      expect(info, p).not.toBeNull();
      infos.push(info!);
    }
    const narBytes = infos.reduce((n, i) => n + i.narSize, 0);
    const fileBytes = infos.reduce((n, i) => n + (i.fileSize ?? 0), 0);
    const summary = await job.summary();
    expect(summary).toContain(`Pushed to ${cache.url}`);
    expect(row(summary, "uploaded")).toBe(3);
    expect(row(summary, "already cached")).toBe(0);
    expect(row(summary, "skipped (upstream)")).toBe(0);
    expect(row(summary, "failed")).toBe(0);
    expect(summary).toContain(`| NARs uploaded | ${formatBytes(narBytes)} |`);
    expect(summary).toContain(`| sent (zstd) | ${formatBytes(fileBytes)} |`);
    expect(summary).toContain(`| compression ratio | ${(narBytes / fileBytes).toFixed(2)}×`);
    expect(summary).toMatch(/in \d+\.\d s\./);
    expect(listed(summary, "uploaded").sort()).toEqual(paths(built).sort());

    // The same push again finds everything there.
    const again = await Job.create({ "cache-url": cache.url, token: cache.token, paths: built.top });
    expect((await again.step("main")).code).toBe(0);
    expect((await again.step("post")).code).toBe(0);
    const second = await again.summary();
    expect(row(second, "uploaded")).toBe(0);
    expect(row(second, "already cached")).toBe(3);
  });

  it("signs with the secret key it is given", async () => {
    const keyDir = await mkdtemp(join(runnerDir, "key-"));
    const keyFile = join(keyDir, "ci.secret");
    const publicKey = (
      await runOk(process.execPath, [join(PROJECT_ROOT, "uploader", "cli.ts"), "keygen", "--name", "ci-test-1", "--secret-key-file", keyFile])
    ).trim();
    const built = await buildClosure(nix);
    const job = await Job.create({
      "cache-url": cache.url,
      token: cache.token,
      "secret-key": await readFile(keyFile, "utf8"),
      paths: built.top,
    });
    const main = await job.step("main");
    expect(main.code).toBe(0);
    // The key is masked in the job's log.
    expect(main.stdout).toContain(`::add-mask::${(await readFile(keyFile, "utf8")).trim()}`);
    expect((await job.step("post")).code).toBe(0);
    for (const p of paths(built)) {
      const info = await narinfo(p);
      expect(info!.sigs.some((s) => s.startsWith("ci-test-1:"))).toBe(true);
      expect(await verifyNarInfo(info!, [parsePublicKey(publicKey)])).toBe(true);
    }
    // The key file the action wrote for the uploader is gone: no file in RUNNER_TEMP holds the key.
    const key = (await readFile(keyFile, "utf8")).trim();
    const holding = await run("grep", ["-rlF", "--", key, join(job.dir, "temp")]);
    expect(holding.stdout).toBe("");
  });

  it("warns, and lets the job go on, when the cache cannot be reached", async () => {
    const built = await buildClosure(nix);
    const deadUrl = `http://127.0.0.1:${await freePort()}`;
    const job = await Job.create({ "cache-url": deadUrl, token: "some-token", paths: built.top });
    // Said in the first step, naming the input.
    const pre = await job.step("pre");
    expect(pre.code).toBe(0);
    expect(pre.stdout).toMatch(new RegExp(`^::warning::nix-edge-cache: input "cache-url": .*${deadUrl}`, "m"));
    expect((await job.step("main")).code).toBe(0);
    const post = await job.step("post");
    expect(post.code).toBe(0);
    expect(post.stdout).toMatch(new RegExp(`^::warning::nix-edge-cache: could not push to ${deadUrl}`, "m"));
    expect(post.stdout).not.toContain("::error::");
    expect(await job.summary()).toContain(`Push to ${deadUrl} incomplete`);
  });

  it("fails the job when the cache cannot be reached and fail-on-error is true", async () => {
    const built = await buildClosure(nix);
    const deadUrl = `http://127.0.0.1:${await freePort()}`;
    const job = await Job.create({ "cache-url": deadUrl, token: "some-token", paths: built.top, "fail-on-error": "true" });
    expect((await job.step("main")).code).toBe(0);
    const post = await job.step("post");
    expect(post.code).toBe(1);
    expect(post.stdout).toMatch(new RegExp(`^::error::nix-edge-cache: could not push to ${deadUrl}`, "m"));
  });

  it("warns when the token is refused, from its first step on, and stores nothing", async () => {
    const job = await Job.create({ "cache-url": cache.url, token: "not-the-token" });
    // At once, in the first step, naming the input.
    const pre = await job.step("pre");
    expect(pre.code).toBe(0);
    expect(pre.stdout).toMatch(/^::warning::nix-edge-cache: input "token" is not a write token of the cache, which may not upload/m);
    const main = await job.step("main");
    expect(main.code).toBe(0);
    expect(main.stdout).toMatch(/^::warning::nix-edge-cache: input "token"/m);
    // Nothing was started to push: no watcher, no hook.
    expect(await job.savedState()).not.toHaveProperty("STATE_watcher-pid");
    const built = await buildClosureIn(await job.env(), await mkdtemp(join(runnerDir, "build-")));
    const post = await job.step("post");
    expect(post.code).toBe(0);
    expect(post.stdout).toMatch(/^::warning::nix-edge-cache: could not push to .*input "token"/m);
    for (const p of paths(built)) expect(await narinfo(p)).toBeNull();

    // With fail-on-error, the main step fails before the build.
    const strict = await Job.create({ "cache-url": cache.url, token: "not-the-token", "fail-on-error": "true" });
    const failed = await strict.step("main");
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^::error::nix-edge-cache: input "token"/m);
  });

  it("pushes nothing, with a notice, when there is no token (a pull request from a fork)", async () => {
    const built = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: "", paths: built.top });
    expect((await job.step("main")).code).toBe(0);
    const post = await job.step("post");
    expect(post.code).toBe(0);
    expect(post.stdout).toContain("::notice::");
    expect(await job.summary()).toContain("nothing was pushed");
    for (const p of paths(built)) expect(await narinfo(p)).toBeNull();
  });

  it("fails the main step on an input mistake, naming the input, whatever fail-on-error says", async () => {
    for (const [inputs, name] of [
      [{ "cache-url": cache.url, compression: "gzip" }, "compression"],
      [{ "cache-url": cache.url, jobs: "0" }, "jobs"],
      [{ "cache-url": "cache.example.com" }, "cache-url"],
      [{ "cache-url": cache.url, "fail-on-error": "maybe" }, "fail-on-error"],
      [{ "cache-url": cache.url, "secret-key": "not a key" }, "secret-key"],
      [{ "cache-url": cache.url, "push-mode": "daemon" }, "push-mode"],
      [{ "cache-url": cache.url, "skip-push": "yes" }, "skip-push"],
      [{ "cache-url": cache.url, "extra-substituters": "cache.example.com" }, "extra-substituters"],
      [{ "cache-url": cache.url, "extra-trusted-public-keys": "example-1:short" }, "extra-trusted-public-keys"],
      [{ "cache-url": cache.url, "uploader-args": "--token=abc" }, "uploader-args"],
    ] as const) {
      const job = await Job.create(inputs);
      const main = await job.step("main");
      expect(main.code, name).toBe(1);
      expect(main.stdout).toMatch(new RegExp(`^::error::nix-edge-cache: input "${name}"`, "m"));
    }
  });

  it("runs from a checkout without node_modules, as GitHub downloads it: the bundles need nothing installed", async () => {
    const checkout = await mkdtemp(join(runnerDir, "checkout-"));
    await mkdir(join(checkout, "uploader", "action"), { recursive: true });
    await cp(join(PROJECT_ROOT, "uploader", "action.yml"), join(checkout, "uploader", "action.yml"));
    await cp(ACTION_DIR, join(checkout, "uploader", "action", "dist"), { recursive: true });
    const keyFile = join(checkout, "ci.secret");
    const publicKey = (
      await runOk(process.execPath, [join(checkout, "uploader", "action", "dist", "uploader.js"), "keygen", "--name", "bundle-test-1", "--secret-key-file", keyFile])
    ).trim();
    const built = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: cache.token, "secret-key": await readFile(keyFile, "utf8"), paths: built.top });
    const dist = join(checkout, "uploader", "action", "dist");
    for (const step of ["pre", "main", "post"] as const) {
      const r = await job.step(step, dist);
      expect(r.code, `${step}: ${r.stderr}${r.stdout}`).toBe(0);
      expect(r.stdout, step).not.toMatch(/::(warning|error)::/);
    }
    // Signed with the key (the signing library is in the bundle).
    for (const p of paths(built)) expect(await verifyNarInfo((await narinfo(p))!, [parsePublicKey(publicKey)])).toBe(true);
    await expect(readFile(join(checkout, "node_modules", "@noble", "ed25519", "package.json"))).rejects.toThrow();
  });
});
