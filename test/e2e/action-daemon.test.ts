// The GitHub Action on a runner where Nix runs with a daemon (a multi-user install, as
// install-nix-action sets it up): a real nix-daemon as root on the host's store, with its
// own system nix.conf and socket (test/e2e/nix-daemon.ts), and the action's steps, the
// build and the substitution run as unprivileged users whose Nix goes through it:
//   - a user the daemon trusts: the action's user configuration reaches the daemon, which
//     substitutes from the cache and runs the post-build-hook (as root) for its builds;
//   - an untrusted user with passwordless sudo (GitHub's hosted runners have it): the
//     settings go in the system nix.conf and the daemon is restarted; no systemd runs
//     here (PID 1 is not systemd), so the action restarts the process listening on the
//     socket as it was started; the post step takes the settings out again;
//   - an untrusted user without sudo rights, or without sudo at all: a warning that says
//     what to do, nothing changed, and the store diff pushes at the end of the job.
// Each step runs as the runner would run it (node dist/<step>.js with INPUT_*, GITHUB_STATE,
// GITHUB_ENV, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY), against the local Worker; what is
// checked comes from the cache over HTTP, the daemon's socket and files, and Nix.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { LocalCache, PROJECT_ROOT, runOk, type RunResult } from "./harness.ts";
import { NixDaemon, runAs, type SystemUser } from "./nix-daemon.ts";

const ACTION_DIR = join(PROJECT_ROOT, "uploader", "action", "dist");

let cache: LocalCache;
let daemon: NixDaemon;
/** Trusted by the daemon, no sudo. */
let trusted: SystemUser;
/** Not trusted, passwordless sudo. */
let sudoer: SystemUser;
/** Not trusted, no sudo rights. */
let plain: SystemUser;
/** Not trusted, sudo for editing files only (not to restart the daemon). */
let limited: SystemUser;
const watchers: number[] = [];

beforeAll(async () => {
  daemon = await NixDaemon.start();
  trusted = await daemon.addUser("nec-trusted");
  sudoer = await daemon.addUser("nec-sudoer", { sudo: true });
  plain = await daemon.addUser("nec-plain");
  limited = await daemon.addUser("nec-limited", { sudo: ["/usr/bin/true", "/usr/bin/tee", "/usr/bin/chmod", "/usr/bin/rm", "/usr/bin/cat"] });
  await daemon.run([trusted]);
  cache = await LocalCache.start();
});

afterAll(async () => {
  for (const pid of watchers) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // stopped by its post step
    }
  }
  await cache?.stop();
  await daemon?.cleanup();
});

/** One job of `user` on a runner with the daemon. */
class Job {
  readonly user: SystemUser;
  readonly dir: string;
  readonly inputs: Record<string, string>;
  path: string = process.env.PATH!;

  private constructor(user: SystemUser, dir: string, inputs: Record<string, string>) {
    this.user = user;
    this.dir = dir;
    this.inputs = inputs;
  }

  static async create(user: SystemUser, inputs: Record<string, string> = {}): Promise<Job> {
    const dir = await daemon.userDir(user, "job");
    const job = new Job(user, dir, { "cache-url": cache.url, token: cache.token, ...inputs });
    for (const d of ["temp", "workspace"]) await mkdir(join(dir, d));
    for (const f of ["state", "env", "output", "summary.md"]) await writeFile(join(dir, f), "");
    await runOk("chown", ["-R", `${user.uid}:${user.gid}`, dir]);
    return job;
  }

  async lines(file: "state" | "env" | "output"): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const line of (await readFile(join(this.dir, file), "utf8")).split("\n")) {
      const eq = line.indexOf("=");
      if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
    }
    return out;
  }

  /** A step's environment: the user's login, the runner's files, and what GITHUB_ENV holds. */
  async env(): Promise<NodeJS.ProcessEnv> {
    return {
      ...daemon.userEnv(this.user, this.path),
      GITHUB_ACTIONS: "true",
      CI: "true",
      GITHUB_ENV: join(this.dir, "env"),
      GITHUB_OUTPUT: join(this.dir, "output"),
      GITHUB_STATE: join(this.dir, "state"),
      GITHUB_STEP_SUMMARY: join(this.dir, "summary.md"),
      GITHUB_WORKSPACE: join(this.dir, "workspace"),
      RUNNER_TEMP: join(this.dir, "temp"),
      ...(await this.lines("env")),
    };
  }

  async step(name: "main" | "post"): Promise<RunResult> {
    const env = await this.env();
    if (name === "post") for (const [k, v] of Object.entries(await this.lines("state"))) env[`STATE_${k}`] = v;
    for (const [k, v] of Object.entries(this.inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
    const r = await runAs(this.user, process.execPath, [join(ACTION_DIR, `${name}.js`)], { env, cwd: join(this.dir, "workspace") }).done;
    if (name === "main") {
      const pid = Number((await this.lines("state"))["watcher-pid"]);
      if (pid) watchers.push(pid);
    }
    return r;
  }

  /** A Nix command of the job's build step, as the job's user (through the daemon). */
  async nix(cmd: string, args: string[]): Promise<RunResult> {
    return runAs(this.user, cmd, args, { env: await this.env(), cwd: this.dir }).done;
  }

  /** The build step: two fresh derivations (top depends on dep), built through the daemon. */
  async build(): Promise<{ dep: string; top: string; stderr: string }> {
    const salt = randomBytes(8).toString("hex");
    const file = join(this.dir, `build-${salt}.nix`);
    await writeFile(
      file,
      `let dep = builtins.derivation { name = "nec-daemon-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo dep ${salt} > $out" ]; };
in builtins.derivation { name = "nec-daemon-top"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`,
      { mode: 0o644 },
    );
    const r = await this.nix("nix-build", [file, "--no-out-link"]);
    expect(r.code, r.stderr).toBe(0);
    const top = r.stdout.trim();
    const dep = (await readFile(top, "utf8")).trim();
    expect(dep).toMatch(/-nec-daemon-dep$/);
    return { dep, top, stderr: r.stderr };
  }

  async summary(): Promise<string> {
    return readFile(join(this.dir, "summary.md"), "utf8");
  }
}

/** The cache's narinfo for a path, or null when it answers 404. */
async function narinfo(storePath: string): Promise<NarInfo | null> {
  const res = await fetch(`${cache.url}/${storePath.slice("/nix/store/".length, "/nix/store/".length + 32)}.narinfo`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return parseNarInfo(await res.text());
}

async function untilInCache(storePaths: readonly string[], ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const missing: string[] = [];
    for (const p of storePaths) if ((await narinfo(p)) === null) missing.push(p);
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`not in the cache after ${ms / 1000} s: ${missing.join(" ")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Deletes the paths from the host's store (they are in the cache), then has the job's user
 * realise `top` through the daemon: it can only come from the cache.
 */
async function substituteThroughDaemon(job: Job, paths: { dep: string; top: string }): Promise<RunResult> {
  await runOk("nix-store", ["--delete", paths.top, paths.dep], { env: { ...process.env, NIX_CONF_DIR: daemon.confDir } });
  expect(existsSync(paths.top)).toBe(false);
  return job.nix("nix-store", ["-r", paths.top]);
}

describe("the GitHub Action with a Nix daemon", () => {
  it("for a user the daemon trusts: the user configuration reaches the daemon, which substitutes from the cache and runs the hook for its builds", async () => {
    const confBefore = await daemon.systemConf();
    const pidBefore = await daemon.listener();
    const job = await Job.create(trusted);
    const main = await job.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).not.toMatch(/::(warning|error)::/);
    expect(main.stdout).toContain("Nix configured for the next steps (user configuration)");
    const conf = await readFile((await job.lines("env")).NIX_USER_CONF_FILES!.split(":")[0]!, "utf8");
    expect(conf).toMatch(/^post-build-hook = \/.*post-build-hook\.sh$/m);
    // Nothing of the machine's was touched.
    expect(await daemon.systemConf()).toBe(confBefore);
    expect(await daemon.listener()).toBe(pidBefore);

    const built = await job.build();
    // The build went through the daemon, which ran the hook (Nix reports it to the client).
    expect(await readFile(daemon.log, "utf8")).toContain(`user ${trusted.name} (trusted)`);
    expect(built.stderr).toContain("running post-build-hook");
    // Pushed while the job goes on, before its post step.
    await untilInCache([built.dep, built.top]);

    const sub = await substituteThroughDaemon(job, built);
    expect(sub.code, sub.stderr).toBe(0);
    expect(sub.stderr).toContain(`copying path '${built.top}' from '${cache.url}'`);

    const post = await job.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    expect(post.stdout).not.toMatch(/::(warning|error)::/);
    expect(await job.lines("output")).toMatchObject({ "pushed-paths": "2" });
  });

  it("for an untrusted user with sudo: adds the settings to the system's nix.conf, restarts the daemon however it was started, and takes them out in the post step", async () => {
    const confBefore = await daemon.systemConf();
    const pidBefore = await daemon.listener();
    const job = await Job.create(sudoer);

    // Before: a path in the cache that this user asks the daemon to substitute from it,
    // as the action's user configuration would: the daemon ignores an untrusted user's
    // substituters and keys.
    const earlier = await job.build();
    await runOk(process.execPath, [join(PROJECT_ROOT, "uploader", "cli.ts"), "push", "--cache", cache.url, earlier.top], {
      env: { ...process.env, NIX_CONF_DIR: daemon.confDir, NIX_CACHE_TOKEN: cache.token },
    });
    await runOk("nix-store", ["--delete", earlier.top, earlier.dep], { env: { ...process.env, NIX_CONF_DIR: daemon.confDir } });
    const refused = await job.nix("nix-store", ["-r", earlier.top, "--option", "extra-substituters", cache.url, "--option", "extra-trusted-public-keys", cache.publicKey]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`ignoring untrusted substituter '${cache.url}'`);

    const main = await job.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).not.toMatch(/::(warning|error)::/);
    expect(main.stdout).toMatch(new RegExp(`^::notice::nix-edge-cache: this user \\(${sudoer.name}\\) is not trusted by the Nix daemon .*added the action's settings to ${daemon.confDir}/nix.conf with sudo and nix-daemon restarted`, "m"));
    const conf = await daemon.systemConf();
    expect(conf.startsWith(confBefore)).toBe(true);
    expect(conf).toContain(`extra-substituters = ${cache.url}`);
    expect(conf).toContain(`extra-trusted-public-keys = ${cache.publicKey}`);
    const wrapper = /^post-build-hook = (.+)$/m.exec(conf)?.[1];
    expect(wrapper).toBeDefined();
    expect(existsSync(wrapper!)).toBe(true);
    // A new daemon listens, started as the old one was (it reads the same nix.conf: the hook runs).
    const pidDuring = await daemon.listener();
    expect(pidDuring).not.toBeNull();
    expect(pidDuring).not.toBe(pidBefore);

    // The daemon substitutes from the cache now, for this user too.
    const sub = await job.nix("nix-store", ["-r", earlier.top]);
    expect(sub.code, sub.stderr).toBe(0);
    expect(sub.stderr).toContain(`copying path '${earlier.top}' from '${cache.url}'`);
    // And runs the hook, from its own configuration: pushed before the post step.
    const built = await job.build();
    expect(built.stderr).toContain("running post-build-hook");
    await untilInCache([built.dep, built.top]);

    const post = await job.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    expect(post.stdout).not.toMatch(/::(warning|error)::/);
    expect(post.stdout).toContain(`took the action's settings out of ${daemon.confDir}/nix.conf and nix-daemon restarted`);
    expect(await job.lines("output")).toMatchObject({ "pushed-paths": "2" });
    expect(await daemon.systemConf()).toBe(confBefore);
    expect(existsSync(wrapper!)).toBe(false);
    const pidAfter = await daemon.listener();
    expect(pidAfter).not.toBeNull();
    expect(pidAfter).not.toBe(pidDuring);
    // Builds after the job run no hook.
    expect((await job.build()).stderr).not.toContain("post-build-hook");
  });

  it("for an untrusted user without sudo rights: warns, saying what to do, changes nothing, and pushes the paths built by the store diff at the end", async () => {
    const confBefore = await daemon.systemConf();
    const pidBefore = await daemon.listener();
    const job = await Job.create(plain);
    const main = await job.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).toMatch(
      new RegExp(`^::warning::nix-edge-cache: this user \\(${plain.name}\\) is not trusted by the Nix daemon .* and sudo -n does not work .*make the runner's user trusted \\(trusted-users in ${daemon.confDir}/nix.conf\\)`, "m"),
    );
    expect(main.stdout).toMatch(/^::notice::nix-edge-cache: Nix's post-build-hook cannot be installed here/m);
    expect(await job.lines("state")).toMatchObject({ mode: "store-diff" });
    expect(await daemon.systemConf()).toBe(confBefore);
    expect(await daemon.listener()).toBe(pidBefore);

    const built = await job.build();
    expect(built.stderr).not.toContain("post-build-hook");
    expect(await narinfo(built.top)).toBeNull();
    const post = await job.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    for (const p of [built.dep, built.top]) expect(await narinfo(p), p).not.toBeNull();

    // Where sudo is not installed at all, the warning says so.
    const bin = await daemon.userDir(plain, "bin");
    for (const program of ["nix", "id"]) await symlink(`/usr/bin/${program}`, join(bin, program));
    const noSudo = await Job.create(plain, { "skip-push": "true" });
    noSudo.path = bin;
    const main2 = await noSudo.step("main");
    expect(main2.code, main2.stdout + main2.stderr).toBe(0);
    expect(main2.stdout).toMatch(/^::warning::nix-edge-cache: this user .* is not trusted by the Nix daemon .* and sudo is not installed:/m);
    expect(await daemon.systemConf()).toBe(confBefore);
    await rm(bin, { recursive: true, force: true });
  });

  it("for an untrusted user whose sudo cannot restart the daemon: warns that the daemon has not read the settings, falls back to the store diff, and takes the settings out at the end", async () => {
    const confBefore = await daemon.systemConf();
    const pidBefore = await daemon.listener();
    const job = await Job.create(limited);
    const main = await job.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).toMatch(
      new RegExp(`^::warning::nix-edge-cache: this user \\(${limited.name}\\) is not trusted by the Nix daemon .*: added the action's settings to ${daemon.confDir}/nix.conf with sudo, but the daemon could not be restarted \\(restarting the process on ${daemon.socket}: .*\\): it reads them only when it next starts \\(restart it before the build for them to count\\)$`, "m"),
    );
    expect(main.stdout).toMatch(/^::notice::nix-edge-cache: Nix's post-build-hook cannot be installed here/m);
    expect(await job.lines("state")).toMatchObject({ mode: "store-diff" });
    // In the file, for the daemon's next start; the same daemon runs on.
    expect(await daemon.systemConf()).toContain(`extra-substituters = ${cache.url}`);
    expect(await daemon.listener()).toBe(pidBefore);

    const built = await job.build();
    expect(built.stderr).not.toContain("post-build-hook");
    const post = await job.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    expect(post.stdout).toMatch(
      new RegExp(`^::warning::nix-edge-cache: took the action's settings out of ${daemon.confDir}/nix.conf, but the daemon could not be restarted \\(.*\\): it keeps them until it next starts \\(${daemon.confDir}/\\S+-post-build-hook is left for it`, "m"),
    );
    for (const p of [built.dep, built.top]) expect(await narinfo(p), p).not.toBeNull();
    expect(await daemon.systemConf()).toBe(confBefore);
    // The wrapper a daemon might still name is left, and does nothing without the job's hook.
    const wrapper = (await readdir(daemon.confDir)).filter((n) => n !== "nix.conf");
    expect(wrapper).toEqual([expect.stringMatching(/-post-build-hook$/)]);
    const hookScript = /^exec '(.+)'$/m.exec(await readFile(join(daemon.confDir, wrapper[0]!), "utf8"))![1]!;
    await rm(hookScript);
    const ran = await runAs(null, join(daemon.confDir, wrapper[0]!), [], { env: { OUT_PATHS: built.top } }).done;
    expect(ran).toEqual({ code: 0, stdout: "", stderr: "" });
  });
});
