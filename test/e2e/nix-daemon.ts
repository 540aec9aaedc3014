// A multi-user Nix for end-to-end tests: a real `nix-daemon` (Debian's nix-bin 2.8) run as
// root on the host's /nix/store, with its own configuration directory (its "system"
// nix.conf, NIX_CONF_DIR) and its own socket (NIX_DAEMON_SOCKET_PATH), and unprivileged
// users (useradd) whose Nix commands go through it, as on a runner where Nix was installed
// with a daemon. The tests run as root; everything made here is taken away by cleanup().
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runOk, type RunResult } from "./harness.ts";

/** The daemon's settings besides trusted-users (NIX-CLIENT.md §2.2: no sandbox, no default cache, builds as root). */
const DAEMON_CONF = `sandbox = false
build-users-group =
experimental-features = nix-command
substituters =
narinfo-cache-negative-ttl = 0
download-attempts = 1
stalled-download-timeout = 10
`;

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** Runs a program as `user` (null: as this process) with exactly `env`; `done` settles when it exits. */
export function runAs(
  user: SystemUser | null,
  cmd: string,
  args: readonly string[],
  options: { env: NodeJS.ProcessEnv; cwd?: string },
): { child: ChildProcess; done: Promise<RunResult> } {
  const child = spawn(cmd, args, {
    env: options.env,
    cwd: options.cwd ?? user?.home ?? "/",
    stdio: ["ignore", "pipe", "pipe"],
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
  });
  const done = new Promise<RunResult>((resolve) => {
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (err) => resolve({ code: 127, stdout, stderr: stderr + err.message }));
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
  return { child, done };
}

export class NixDaemon {
  /** Holds the configuration directory, the socket, the log and the users' homes. */
  readonly dir: string;
  readonly confDir: string;
  readonly socket: string;
  readonly log: string;
  private readonly users: SystemUser[] = [];
  private readonly sudoers: string[] = [];
  private child: ChildProcess | undefined;

  private constructor(dir: string) {
    this.dir = dir;
    this.confDir = join(dir, "etc-nix");
    this.socket = join(dir, "daemon-socket", "socket");
    this.log = join(dir, "daemon.log");
  }

  /** A directory for the daemon and its users; run() starts the daemon. */
  static async start(): Promise<NixDaemon> {
    await removeStaleUsers();
    const dir = await mkdtemp(join(tmpdir(), "nec-daemon-"));
    await chmod(dir, 0o755);
    const d = new NixDaemon(dir);
    await mkdir(d.confDir, { mode: 0o755 });
    await mkdir(join(dir, "root-cache"), { mode: 0o700 });
    return d;
  }

  /**
   * A new unprivileged user with a home of its own; `sudo`: may run anything with `sudo -n`
   * (true), or only these programs (absolute paths).
   */
  async addUser(prefix: string, opts: { sudo?: boolean | string[] } = {}): Promise<SystemUser> {
    const name = `${prefix}-${randomBytes(3).toString("hex")}`;
    const home = join(this.dir, "home", name);
    await mkdir(home, { recursive: true, mode: 0o755 });
    await runOk("useradd", ["--no-create-home", "--home-dir", home, "--shell", "/bin/sh", "--user-group", name]);
    const uid = Number((await runOk("id", ["-u", name])).trim());
    const gid = Number((await runOk("id", ["-g", name])).trim());
    const user = { name, uid, gid, home };
    this.users.push(user);
    await runOk("chown", ["-R", `${uid}:${gid}`, home]);
    if (opts.sudo) {
      // The runner's arrangement on GitHub's hosted runners: passwordless sudo.
      const file = `/etc/sudoers.d/nec-test-${name}`;
      await writeFile(file, `${name} ALL=(ALL:ALL) NOPASSWD: ${opts.sudo === true ? "ALL" : opts.sudo.join(", ")}\n`, { mode: 0o440 });
      this.sudoers.push(file);
      await runOk("visudo", ["-c", "-f", file]);
    }
    return user;
  }

  /** Writes the system nix.conf (trusting root and `trusted`) and starts the daemon as root. */
  async run(trusted: SystemUser[]): Promise<void> {
    await writeFile(join(this.confDir, "nix.conf"), `${DAEMON_CONF}trusted-users = root ${trusted.map((u) => u.name).join(" ")}\n`, { mode: 0o644 });
    await mkdir(join(this.dir, "daemon-socket"), { mode: 0o755 });
    const fd = openSync(this.log, "a");
    try {
      this.child = spawn("nix-daemon", [], { env: this.daemonEnv(), cwd: "/", stdio: ["ignore", fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    const deadline = Date.now() + 15_000;
    while ((await this.listener()) === null) {
      if (this.child.exitCode !== null || Date.now() > deadline) throw new Error(`nix-daemon did not start: ${await readFile(this.log, "utf8")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The daemon's environment: its configuration and socket, root's narinfo cache kept apart. */
  private daemonEnv(): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH,
      HOME: "/root",
      NIX_CONF_DIR: this.confDir,
      NIX_DAEMON_SOCKET_PATH: this.socket,
      XDG_CACHE_HOME: join(this.dir, "root-cache"),
    };
  }

  /** The pid listening on the socket, as `ss` reports it (null: none). */
  async listener(): Promise<number | null> {
    const out = await runOk("ss", ["-xlpn"]);
    const line = out.split("\n").find((l) => l.split(/\s+/).includes(this.socket));
    const pid = line ? /pid=(\d+)/.exec(line)?.[1] : undefined;
    return pid ? Number(pid) : null;
  }

  /** The system nix.conf as it is now. */
  systemConf(): Promise<string> {
    return readFile(join(this.confDir, "nix.conf"), "utf8");
  }

  /** The environment of a user's login on the runner: Nix's system configuration and socket as the daemon has them. */
  userEnv(user: SystemUser, path: string = process.env.PATH!): NodeJS.ProcessEnv {
    return {
      PATH: path,
      HOME: user.home,
      USER: user.name,
      LOGNAME: user.name,
      NIX_CONF_DIR: this.confDir,
      NIX_DAEMON_SOCKET_PATH: this.socket,
      XDG_CACHE_HOME: join(user.home, ".cache"),
    };
  }

  /** A directory owned by the user. */
  async userDir(user: SystemUser, name: string): Promise<string> {
    const dir = await mkdtemp(join(user.home, `${name}-`));
    await runOk("chown", ["-R", `${user.uid}:${user.gid}`, dir]);
    return dir;
  }

  async cleanup(): Promise<void> {
    // Whatever daemon listens now (the test's, or one the action restarted), then ours.
    for (let i = 0; i < 3; i++) {
      const pid = await this.listener().catch(() => null);
      if (pid === null) break;
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    if (this.child?.pid && this.child.exitCode === null) {
      try {
        process.kill(this.child.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    for (const f of this.sudoers) await rm(f, { force: true });
    for (const u of this.users) await runOk("userdel", [u.name]).catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Users (and their sudoers files) that a killed test run left: their homes are gone. */
async function removeStaleUsers(): Promise<void> {
  for (const line of (await readFile("/etc/passwd", "utf8")).split("\n")) {
    const [name, , , , , home] = line.split(":");
    if (!name || !home || !/^nec-[a-z]+-[0-9a-f]{6}$/.test(name) || !home.startsWith(join(tmpdir(), "nec-daemon-")) || existsSync(home)) continue;
    await runOk("userdel", [name]).catch(() => undefined);
    await rm(`/etc/sudoers.d/nec-test-${name}`, { force: true });
  }
}
