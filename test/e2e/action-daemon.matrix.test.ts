// The GitHub Action with the newer Nix of the matrix running as a daemon (what
// install-nix-action sets up today), inside its chroot: the chroot's own nix-daemon as
// root with its own nix.conf and socket, and unprivileged users of the chroot (useradd in
// the run's overlay) whose action steps, builds and substitutions go through it
// (`chroot --userspec`). Newer Nix says itself whether the daemon trusts a client
// (`nix store ping --json` "trusted", from 2.15 on); Nix 2.8 is the host's
// (action-daemon.test.ts, which also covers sudo: the chroots have none).
//   - trusted: the action's user configuration reaches the daemon, which substitutes from
//     the cache and runs the hook for the user's builds, pushed before the post step;
//   - untrusted (no sudo in the chroot): a warning saying what to do, and the store diff.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { CHROOT_NODE, MATRIX_NIX_CONF, hashPart, matrixChroots } from "./chroot-nix.ts";
import { LocalCache, PROJECT_ROOT, runOk, type RunResult } from "./harness.ts";
import { chrootEnv, type MountedChroot } from "./nix-versions.ts";
import { runAs } from "./nix-daemon.ts";

/** The versions that tell trust themselves; 2.8 runs on the host. */
const VERSIONS = ["2.34"];
const chroots = (await matrixChroots()).filter((c) => VERSIONS.includes(c.name));
const ACTION_DIR = join(PROJECT_ROOT, "uploader", "action", "dist");

let cache: LocalCache;

beforeAll(async () => {
  cache = await LocalCache.start();
});

afterAll(async () => {
  await cache?.stop();
});

async function narinfoText(storePath: string): Promise<string | null> {
  const res = await fetch(`${cache.url}/${hashPart(storePath)}.narinfo`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return res.text();
}

describe.each(chroots.map((c) => [c.name]))("the GitHub Action with the daemon of Nix %s", (name) => {
  const chroot: MountedChroot = chroots.find((c) => c.name === name)!;
  /** Inside paths: the daemon's directory, its nix.conf's directory and socket. */
  let dir: string;
  let confDir: string;
  let socket: string;
  let daemon: ChildProcess;
  const users: string[] = [];
  const watchers: number[] = [];
  const host = (p: string): string => join(chroot.root, p);

  /** A command inside the chroot, as a user of the chroot (its uid and gid, from the chroot's /etc/passwd). */
  const inChroot = async (user: string, env: NodeJS.ProcessEnv, cmd: string, args: string[]): Promise<RunResult> => {
    const entry = (await readFile(host("/etc/passwd"), "utf8")).split("\n").find((l) => l.startsWith(`${user}:`))!.split(":");
    const pairs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    return runAs(null, "/usr/sbin/chroot", [`--userspec=${entry[2]}:${entry[3]}`, chroot.root, "/usr/bin/env", "-i", ...pairs, cmd, ...args], { env: {} }).done;
  };

  beforeAll(async () => {
    await mkdir(host("/tmp"), { recursive: true });
    dir = (await mkdtemp(host("/tmp/nec-daemon-"))).slice(chroot.root.length);
    await chmod(host(dir), 0o755);
    confDir = join(dir, "etc-nix");
    socket = join(dir, "socket", "socket");
    await mkdir(host(confDir), { mode: 0o755 });
    await mkdir(host(join(dir, "socket")), { mode: 0o755 });
    await mkdir(host(join(dir, "home")), { mode: 0o755 });
    const suffix = randomBytes(3).toString("hex");
    for (const u of ["nec-trusted", "nec-plain"]) {
      const user = `${u}-${suffix}`;
      await mkdir(host(join(dir, "home", user)));
      await runOk("chroot", [chroot.root, "useradd", "--no-create-home", "--home-dir", join(dir, "home", user), "--shell", "/bin/sh", "--user-group", user]);
      await runOk("chroot", [chroot.root, "chown", `${user}:${user}`, join(dir, "home", user)]);
      users.push(user);
    }
    await writeFile(host(join(confDir, "nix.conf")), `${MATRIX_NIX_CONF}trusted-users = root ${users[0]}\n`, { mode: 0o644 });
    const log = openSync(host(join(dir, "daemon.log")), "a");
    try {
      const env = chrootEnv({ NIX_CONF_DIR: confDir, NIX_DAEMON_SOCKET_PATH: socket, XDG_CACHE_HOME: join(dir, "root-cache") });
      const pairs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
      // chroot and env exec: the child's pid is the daemon's.
      daemon = spawn("chroot", [chroot.root, "/usr/bin/env", "-i", ...pairs, "nix-daemon"], { stdio: ["ignore", log, log], detached: true });
    } finally {
      closeSync(log);
    }
    const deadline = Date.now() + 15_000;
    while (!existsSync(host(socket))) {
      if (daemon.exitCode !== null || Date.now() > deadline) throw new Error(`nix-daemon did not start: ${await readFile(host(join(dir, "daemon.log")), "utf8")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    for (const pid of watchers) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // stopped by its post step
      }
    }
    if (daemon?.pid && daemon.exitCode === null) process.kill(daemon.pid, "SIGTERM");
    for (const u of users) await runOk("chroot", [chroot.root, "userdel", u]).catch(() => undefined);
  });

  /** One job of `user`: its runner files (inside paths) and the steps' environment. */
  async function job(user: string, inputs: Record<string, string> = {}) {
    const jobDir = (await mkdtemp(host(join(dir, "home", user, "job-")))).slice(chroot.root.length);
    for (const d of ["temp", "workspace"]) await mkdir(host(join(jobDir, d)));
    for (const f of ["state", "env", "output", "summary.md"]) await writeFile(host(join(jobDir, f)), "");
    await runOk("chroot", [chroot.root, "chown", "-R", `${user}:${user}`, jobDir]);
    const lines = async (file: string): Promise<Record<string, string>> => {
      const out: Record<string, string> = {};
      for (const line of (await readFile(host(join(jobDir, file)), "utf8")).split("\n")) {
        const eq = line.indexOf("=");
        if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
      }
      return out;
    };
    const env = async (): Promise<NodeJS.ProcessEnv> => ({
      ...chrootEnv({}),
      HOME: join(dir, "home", user),
      USER: user,
      NIX_CONF_DIR: confDir,
      NIX_DAEMON_SOCKET_PATH: socket,
      XDG_CACHE_HOME: join(dir, "home", user, ".cache"),
      GITHUB_ACTIONS: "true",
      GITHUB_ENV: join(jobDir, "env"),
      GITHUB_OUTPUT: join(jobDir, "output"),
      GITHUB_STATE: join(jobDir, "state"),
      GITHUB_STEP_SUMMARY: join(jobDir, "summary.md"),
      GITHUB_WORKSPACE: join(jobDir, "workspace"),
      RUNNER_TEMP: join(jobDir, "temp"),
      ...(await lines("env")),
    });
    const all = { "cache-url": cache.url, token: cache.token, ...inputs };
    return {
      lines,
      async step(step: "main" | "post"): Promise<RunResult> {
        const e = await env();
        if (step === "post") for (const [k, v] of Object.entries(await lines("state"))) e[`STATE_${k}`] = v;
        for (const [k, v] of Object.entries(all)) e[`INPUT_${k.toUpperCase()}`] = v;
        const r = await inChroot(user, e, CHROOT_NODE, [join(ACTION_DIR, `${step}.js`)]);
        const pid = Number((await lines("state"))["watcher-pid"]);
        if (pid && !watchers.includes(pid)) watchers.push(pid);
        return r;
      },
      async nix(cmd: string, args: string[]): Promise<RunResult> {
        return inChroot(user, await env(), cmd, args);
      },
      /** Two fresh derivations (top depends on dep), built through the daemon. */
      async build(): Promise<{ dep: string; top: string; stderr: string }> {
        const salt = randomBytes(8).toString("hex");
        const file = join(jobDir, `build-${salt}.nix`);
        await writeFile(
          host(file),
          `let dep = builtins.derivation { name = "nec-daemon-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo dep ${salt} > $out" ]; };
in builtins.derivation { name = "nec-daemon-top"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`,
        );
        const r = await inChroot(user, await env(), "nix-build", [file, "--no-out-link"]);
        expect(r.code, r.stderr).toBe(0);
        const top = r.stdout.trim();
        return { top, dep: (await readFile(host(top), "utf8")).trim(), stderr: r.stderr };
      },
    };
  }

  it("for a trusted user: the user configuration reaches the daemon, which substitutes from the cache and runs the hook", async () => {
    const j = await job(users[0]!);
    const main = await j.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).not.toMatch(/::(warning|error)::/);
    expect(main.stdout).toContain("Nix configured for the next steps (user configuration)");
    const built = await j.build();
    expect(await readFile(host(join(dir, "daemon.log")), "utf8")).toContain(`user ${users[0]} (trusted)`);
    // The daemon ran the hook, which queued each output for the watcher (Nix relays its output).
    expect(built.stderr).toMatch(/post-build-hook: queued 1 path built by \S+-nec-daemon-dep\.drv/);
    expect(built.stderr).toMatch(/post-build-hook: queued 1 path built by \S+-nec-daemon-top\.drv/);
    const deadline = Date.now() + 30_000;
    while ((await narinfoText(built.top)) === null || (await narinfoText(built.dep)) === null) {
      if (Date.now() > deadline) throw new Error(`${built.top} not pushed by the hook`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // Gone from the store, the daemon substitutes it from the cache for this user.
    await runOk("chroot", [chroot.root, "/usr/bin/env", "-i", `NIX_CONF_DIR=${confDir}`, "nix-store", "--delete", built.top, built.dep]);
    const sub = await j.nix("nix-store", ["-r", built.top]);
    expect(sub.code, sub.stderr).toBe(0);
    expect(sub.stderr).toContain(`from '${cache.url}'`);
    const post = await j.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    expect(post.stdout).not.toMatch(/::(warning|error)::/);
    expect(await j.lines("output")).toMatchObject({ "pushed-paths": "2" });
    expect(parseNarInfo((await narinfoText(built.top))!).storePath).toBe(built.top);
  });

  it("for an untrusted user without sudo: says what to do and pushes by the store diff at the end", async () => {
    const j = await job(users[1]!);
    const main = await j.step("main");
    expect(main.code, main.stdout + main.stderr).toBe(0);
    expect(main.stdout).toMatch(new RegExp(`^::warning::nix-edge-cache: this user \\(${users[1]}\\) is not trusted by the Nix daemon \\(the daemon says so \\(nix store ping\\)\\) and sudo is not installed: .*trusted-users in ${confDir}/nix.conf`, "m"));
    expect(await j.lines("state")).toMatchObject({ mode: "store-diff" });
    const built = await j.build();
    expect(built.stderr).not.toContain("post-build-hook");
    expect(await narinfoText(built.top)).toBeNull();
    const post = await j.step("post");
    expect(post.code, post.stdout + post.stderr).toBe(0);
    for (const p of [built.dep, built.top]) expect(await narinfoText(p), p).not.toBeNull();
  });
});
