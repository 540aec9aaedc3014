// Restarting a Nix daemon that no service manager runs (a container's entrypoint started
// it, or a self-hosted runner's own script), so that it reads nix.conf again: Nix's daemon
// reads its configuration once, when it starts, and has no reload signal.
//
//   sudo node restart-daemon.js <socket>     (the entry point next to this file; dist/restart-daemon.js)
//
// Run as root (it reads another user's /proc/<pid>/environ and signals the daemon): finds
// the process listening on the socket (/proc/net/unix gives the socket's inode, a
// process's /proc/<pid>/fd links name the inodes it holds), stops it with SIGTERM, and
// starts the same program again, "however it was started": its argv, environment and
// working directory as /proc recorded them, in a session of its own, its output appended
// to the file the old one wrote to (if it was a file). Connections the old daemon was
// serving keep their own processes and finish. A daemon that a supervisor restarts by
// itself once stopped is left to it. Prints what it did; exits 1 saying why it could not.
import { spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { connect } from "node:net";
import { basename } from "node:path";

/** How long to wait for the old daemon to exit, and for a new one to listen. */
const WAIT_MS = 10_000;
const POLL_MS = 50;

/** The inode of the listening Unix socket bound to `path` (/proc/net/unix), if any. */
export function listeningInode(path: string, procNetUnix: string = readFileSync("/proc/net/unix", "utf8")): number | null {
  // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 (__SO_ACCEPTCON): listening.
  for (const line of procNetUnix.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f.slice(7).join(" ") === path && (parseInt(f[3]!, 16) & 0x10000) !== 0) return Number(f[6]);
  }
  return null;
}

/** The processes holding the socket inode, oldest (lowest pid) first. */
export function holders(inode: number): number[] {
  const want = `socket:[${inode}]`;
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${name}/fd/${fd}`) === want) {
          pids.push(Number(name));
          break;
        }
      } catch {
        // closed meanwhile
      }
    }
  }
  return pids.sort((a, b) => a - b);
}

function nulSeparated(file: string): string[] {
  return readFileSync(file).toString("utf8").split("\0").filter((s) => s !== "");
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Whether something accepts connections on the socket. */
export function accepting(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Restarts the daemon listening on `socket`; what was done, or throws saying why not. */
export async function restartDaemon(socket: string): Promise<string> {
  const inode = listeningInode(socket);
  if (inode === null) throw new Error(`no process listens on ${socket}`);
  const pids = holders(inode);
  // The daemon's connection handlers are its children and close the listening socket;
  // the listener is the holder whose parent holds it not.
  const ppid = (pid: number): number => Number(/\) \S+ (\d+)/.exec(readFileSync(`/proc/${pid}/stat`, "utf8"))?.[1]);
  const pid = pids.find((p) => !pids.includes(ppid(p)));
  if (pid === undefined) throw new Error(`cannot tell which process listens on ${socket}`);
  const argv = nulSeparated(`/proc/${pid}/cmdline`);
  const program = readlinkSync(`/proc/${pid}/exe`);
  if (pid === 1 || !argv.some((a) => /daemon/.test(basename(a)) || a === "daemon")) {
    throw new Error(`${socket} is held by pid ${pid} (${argv.join(" ")}), not a Nix daemon this can restart (socket activation?)`);
  }
  const env: Record<string, string> = {};
  for (const kv of nulSeparated(`/proc/${pid}/environ`)) {
    const eq = kv.indexOf("=");
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  if (env.LISTEN_FDS) throw new Error(`the daemon (pid ${pid}) was given its socket by a service manager (LISTEN_FDS): restart it there`);
  const cwd = readlinkSync(`/proc/${pid}/cwd`);
  let logFile: string | undefined;
  try {
    const out = readlinkSync(`/proc/${pid}/fd/1`);
    if (out.startsWith("/") && statSync(out).isFile()) logFile = out;
  } catch {
    // no stdout
  }

  process.kill(pid, "SIGTERM");
  let deadline = Date.now() + WAIT_MS;
  while (running(pid) && Date.now() < deadline) await sleep(POLL_MS);
  if (running(pid)) process.kill(pid, "SIGKILL");
  // A supervisor (runit, s6, a shell loop) may start it again by itself.
  await sleep(300);
  const again = listeningInode(socket);
  if (again !== null && again !== inode && (await accepting(socket))) return `nix-daemon (pid ${pid}) stopped; its supervisor started it again`;

  const fd = logFile ? openSync(logFile, "a") : "ignore";
  try {
    const child = spawn(program, argv.slice(1), { argv0: argv[0], env, cwd, detached: true, stdio: ["ignore", fd, fd] });
    child.unref();
    deadline = Date.now() + WAIT_MS;
    while (!(await accepting(socket))) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the restarted daemon (${argv.join(" ")}) does not listen on ${socket}${child.exitCode !== null ? ` (exited with ${child.exitCode})` : ""}`);
      await sleep(POLL_MS);
    }
    return `nix-daemon restarted (pid ${pid} stopped, pid ${child.pid} started as ${argv.join(" ")})`;
  } finally {
    if (typeof fd === "number") closeSync(fd);
  }
}
