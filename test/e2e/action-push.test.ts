// The GitHub Action (uploader/action.yml) run as the runner runs it: each of its steps is
// `node uploader/action/<step>.js` with the runner's interface, i.e. INPUT_* variables,
// a GITHUB_STATE file whose `name=value` lines come back to the post step as STATE_<name>,
// and a GITHUB_STEP_SUMMARY file. The cache is the real Worker as `npm start` runs it and
// the store paths are real ones built by a real Nix.
//
// What is checked comes from the cache over HTTP (narinfos, their sizes and signatures),
// from Nix (derivers) and from the files the runner would read, not from the action.
import { spawn } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { formatBytes } from "../../uploader/progress.ts";
import { buildClosure, freePort, LocalCache, NixClient, PROJECT_ROOT, runOk, type Closure, type RunResult } from "./harness.ts";

const ACTION_DIR = join(PROJECT_ROOT, "uploader", "action");

let cache: LocalCache;
let nix: NixClient;
let runnerDir: string;

beforeAll(async () => {
  nix = await NixClient.create();
  cache = await LocalCache.start();
  runnerDir = await mkdtemp(join(tmpdir(), "nec-runner-"));
});

afterAll(async () => {
  await cache?.stop();
  await nix?.cleanup();
  if (runnerDir) await rm(runnerDir, { recursive: true, force: true });
});

/** One job on a simulated runner: its files, and the inputs every step of the action gets. */
class Job {
  readonly dir: string;
  readonly inputs: Record<string, string>;
  constructor(dir: string, inputs: Record<string, string>) {
    this.dir = dir;
    this.inputs = inputs;
  }

  static async create(inputs: Record<string, string>): Promise<Job> {
    const dir = await mkdtemp(join(runnerDir, "job-"));
    await mkdir(join(dir, "temp"));
    await mkdir(join(dir, "workspace"));
    await writeFile(join(dir, "state"), "");
    await writeFile(join(dir, "summary.md"), "");
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

  async step(name: "pre" | "main" | "post", actionDir: string = ACTION_DIR): Promise<RunResult> {
    const env: NodeJS.ProcessEnv = {
      ...(await nix.env()),
      GITHUB_ACTIONS: "true",
      CI: "true",
      GITHUB_STATE: join(this.dir, "state"),
      GITHUB_STEP_SUMMARY: join(this.dir, "summary.md"),
      GITHUB_WORKSPACE: this.workspace,
      RUNNER_TEMP: join(this.dir, "temp"),
      ...(name === "post" ? await this.savedState() : {}),
    };
    for (const k of Object.keys(env)) if (k.startsWith("INPUT_") || k.startsWith("NIX_CACHE_")) delete env[k];
    // The runner's naming: INPUT_ + the name upper-cased, hyphens kept.
    for (const [k, v] of Object.entries(this.inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
    return spawnNode(join(actionDir, `${name}.js`), env, this.workspace);
  }

  async summary(): Promise<string> {
    return readFile(join(this.dir, "summary.md"), "utf8");
  }
}

function spawnNode(script: string, env: NodeJS.ProcessEnv, cwd: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script], { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
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

describe("the GitHub Action against a local cache", () => {
  it("pushes every store path built after its main step, and not the ones from before", async () => {
    const before = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: cache.token });

    const pre = await job.step("pre");
    expect(pre.code).toBe(0);
    expect(pre.stdout).not.toContain("::warning::");
    const main = await job.step("main");
    expect(main.code, main.stderr).toBe(0);
    expect(await job.savedState()).toHaveProperty("STATE_snapshot");

    const built = await buildClosure(nix);
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
    // The key file the action wrote for the uploader is gone.
    await expect(runOk("sh", ["-c", `ls -A '${join(job.dir, "temp")}'`])).resolves.toBe("");
  });

  it("warns, and lets the job go on, when the cache cannot be reached", async () => {
    const built = await buildClosure(nix);
    const deadUrl = `http://127.0.0.1:${await freePort()}`;
    const job = await Job.create({ "cache-url": deadUrl, token: "some-token", paths: built.top });
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

  it("warns when the token is refused, and stores nothing", async () => {
    const built = await buildClosure(nix);
    const job = await Job.create({ "cache-url": cache.url, token: "not-the-token", paths: built.top });
    expect((await job.step("main")).code).toBe(0);
    const post = await job.step("post");
    expect(post.code).toBe(0);
    expect(post.stdout).toContain("::warning::");
    for (const p of paths(built)) expect(await narinfo(p)).toBeNull();
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
    ] as const) {
      const job = await Job.create(inputs);
      const main = await job.step("main");
      expect(main.code, name).toBe(1);
      expect(main.stdout).toMatch(new RegExp(`^::error::nix-edge-cache: input "${name}"`, "m"));
    }
  });

  it("installs the uploader's runtime dependency in a checkout that has none, as GitHub downloads it", async () => {
    // GitHub fetches the action's repository without node_modules: copy what it would get.
    const checkout = await mkdtemp(join(runnerDir, "checkout-"));
    for (const p of ["package.json", "package-lock.json", "uploader", "src/nix"]) {
      await cp(join(PROJECT_ROOT, p), join(checkout, p), { recursive: true });
    }
    const job = await Job.create({ "cache-url": cache.url, token: cache.token });
    const pre = await job.step("pre", join(checkout, "uploader", "action"));
    expect(pre.code).toBe(0);
    expect(pre.stdout).not.toContain("::warning::");
    const lock = JSON.parse(await readFile(join(PROJECT_ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { version: string }>;
    };
    const installed = JSON.parse(await readFile(join(checkout, "node_modules", "@noble", "ed25519", "package.json"), "utf8")) as {
      version: string;
    };
    expect(installed.version).toBe(lock.packages["node_modules/@noble/ed25519"]!.version);
    // The checkout's uploader now signs, which needs the dependency.
    const out = await runOk(process.execPath, [
      join(checkout, "uploader", "cli.ts"), "keygen", "--name", "dep-test-1", "--json",
      "--secret-key-file", join(checkout, "k.secret"),
    ]);
    expect(JSON.parse(out)).toMatchObject({ name: "dep-test-1" });
    // No dev tooling came along, and the lock file is untouched.
    await expect(readFile(join(checkout, "node_modules", "wrangler", "package.json"))).rejects.toThrow();
    expect(await readFile(join(checkout, "package-lock.json"), "utf8")).toBe(await readFile(join(PROJECT_ROOT, "package-lock.json"), "utf8"));
  });
});
