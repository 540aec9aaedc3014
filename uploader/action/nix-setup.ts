// Configuring the runner's Nix for the rest of the job: substitute from the cache (and any
// extra caches), and run the action's post-build-hook after every build.
//
// The settings go in a nix.conf of the action's own (in RUNNER_TEMP), which later steps'
// Nix reads because the action puts it first in NIX_USER_CONF_FILES (through GITHUB_ENV),
// followed by the user configuration files Nix would read anyway: nothing of the runner's
// own configuration is edited, as cachix-action does it. Nix reads that list with its first
// file taking precedence, and `extra-` settings add to what the other files say.
//
// Who applies them:
//   - single-user Nix (the store is the user's own): the client itself;
//   - a daemon and a trusted user (install-nix-action and nix-installer-action make the
//     runner's user trusted): the client passes them to the daemon, which applies them to
//     this client's builds (so the daemon, as root, runs the hook);
//   - a daemon and an untrusted user (a self-hosted multi-user runner): the daemon ignores
//     them. Then, where `sudo -n` works, the settings are appended to the system's
//     nix.conf, between two marker lines naming the job, and the daemon is restarted so it
//     reads them (Nix's daemon reads nix.conf only when it starts): by systemd (or launchd)
//     where they run it, else by stopping the process that listens on the daemon's socket
//     and starting it again as it was started (restart-daemon.js, run with sudo). The hook
//     named there is a wrapper next to nix.conf that runs the job's hook only while the
//     job's script exists, so a job that never reaches its post step leaves no hook that
//     fails builds. The post step removes both and restarts the daemon again (undoSetup;
//     the wrapper stays where that restart fails, as the running daemon still names it).
//     Where sudo is missing or needs a password, nothing is changed: the action's
//     nix.conf keeps the substituters only (which count if the machine's
//     trusted-substituters lists them) and the caller falls back to the store diff.
import { execFile } from "node:child_process";
import { constants, existsSync } from "node:fs";
import { access, chmod, readFile, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { daemonSocket, nixSettings, userTrust } from "../nix-config.ts";
import { accepting } from "./daemon-restart.ts";

/** Where Nix keeps its state (NIX_STATE_DIR); a user who may write it uses the store without the daemon. */
const NIX_STATE_DIR = "/nix/var/nix";
/** How long to wait for a restarted daemon's socket. */
const DAEMON_RESTART_WAIT_MS = 15_000;
/** The daemon restarter, next to this step: dist/restart-daemon.js in the bundle. */
const RESTART_SCRIPT = fileURLToPath(new URL("./restart-daemon.js", import.meta.url));

export interface NixSetupRequest {
  /** The action's directory in RUNNER_TEMP. */
  dir: string;
  substituters: string[];
  publicKeys: string[];
  /** The post-build-hook script to register, if any. */
  hookScript?: string | undefined;
  /** A private cache: the netrc entry Nix needs to read it. */
  netrc?: { host: string; token: string } | undefined;
  env: NodeJS.ProcessEnv;
}

export interface NixSetup {
  /** How the settings reach Nix. */
  how: "user configuration" | "system configuration" | "not applied";
  /** Whether later builds run the hook. */
  hookInstalled: boolean;
  /** The action's nix.conf, to put first in NIX_USER_CONF_FILES. */
  confFile?: string;
  /** The nix.conf lines written. */
  lines: string[];
  /** Warnings: why something could not be applied, and what to do. */
  notes: string[];
  /** What was changed on the machine, for the log. */
  done: string[];
  /** The system's nix.conf was changed: what the post step undoes. */
  systemChange?: SystemChange;
}

/** The action's block in the system's nix.conf, and its hook wrapper. */
export interface SystemChange {
  file: string;
  /** The text of the marker lines around the block (`# begin <marker>`, `# end <marker>`). */
  marker: string;
  wrapper?: string | undefined;
  /** The daemon's socket, to restart it. */
  socket: string;
}

export function nixConfLines(r: Pick<NixSetupRequest, "substituters" | "publicKeys" | "hookScript">, netrcFile?: string): string[] {
  const lines: string[] = [];
  if (r.substituters.length > 0) lines.push(`extra-substituters = ${r.substituters.join(" ")}`);
  if (r.publicKeys.length > 0) lines.push(`extra-trusted-public-keys = ${r.publicKeys.join(" ")}`);
  if (r.hookScript) lines.push(`post-build-hook = ${r.hookScript}`);
  if (netrcFile) lines.push(`netrc-file = ${netrcFile}`);
  return lines;
}

/** The user configuration files Nix reads now, in its order (first wins). */
export function userConfFiles(env: NodeJS.ProcessEnv): string[] {
  if (env.NIX_USER_CONF_FILES) return env.NIX_USER_CONF_FILES.split(":").filter((f) => f !== "");
  const home = env.XDG_CONFIG_HOME || join(env.HOME || userInfo().homedir, ".config");
  const dirs = [home, ...(env.XDG_CONFIG_DIRS || "/etc/xdg").split(":").filter((d) => d !== "")];
  return dirs.map((d) => join(d, "nix", "nix.conf"));
}

/** Whether Nix commands of this user go through the daemon (Nix's `auto` store). */
export async function usesDaemon(env: NodeJS.ProcessEnv): Promise<boolean> {
  if (env.NIX_REMOTE === "daemon" || env.NIX_REMOTE?.startsWith("unix://")) return true;
  if (env.NIX_REMOTE) return false;
  try {
    await access(env.NIX_STATE_DIR || NIX_STATE_DIR, constants.R_OK | constants.W_OK);
    return false;
  } catch {
    return existsSync(daemonSocket(env));
  }
}

export async function setUpNix(r: NixSetupRequest): Promise<NixSetup> {
  let netrcFile: string | undefined;
  if (r.netrc) {
    netrcFile = join(r.dir, "netrc");
    await writeFile(netrcFile, `machine ${r.netrc.host} login nix password ${r.netrc.token}\n`, { mode: 0o600 });
    await chmod(netrcFile, 0o600);
  }
  const lines = nixConfLines(r, netrcFile);
  if (lines.length === 0) return { how: "not applied", hookInstalled: false, lines, notes: [], done: [] };

  let trusted = true;
  let how = "";
  if (await usesDaemon(r.env)) {
    try {
      const t = await userTrust(await nixSettings(r.env), r.env);
      trusted = t.trusted !== false;
      how = t.how;
    } catch (err) {
      how = `cannot ask Nix (${(err as Error).message})`;
    }
  }
  const confFile = join(r.dir, "nix.conf");
  const writeConf = (ls: string[]): Promise<void> => writeFile(confFile, `# written by the nix-edge-cache action for this job\n${ls.join("\n")}\n`);
  if (trusted) {
    await writeConf(lines);
    return { how: "user configuration", confFile, hookInstalled: Boolean(r.hookScript), lines, notes: [], done: [] };
  }

  const system = join(r.env.NIX_CONF_DIR || "/etc/nix", "nix.conf");
  const untrusted = `this user (${userInfo().username}) is not trusted by the Nix daemon (${how})`;
  const noSudo = await sudoProblem(r.env);
  if (noSudo) {
    // The substituters still count where the machine's trusted-substituters lists them.
    const subs = lines.filter((l) => l.startsWith("extra-substituters"));
    if (subs.length > 0) await writeConf(subs);
    return {
      how: "not applied",
      hookInstalled: false,
      ...(subs.length > 0 ? { confFile } : {}),
      lines: subs,
      notes: [
        `${untrusted} and ${noSudo}: the daemon ignores the action's settings (its substituters count only if the machine's trusted-substituters lists them) and Nix's post-build-hook cannot be installed. ` +
          `Add the settings to ${system} on the runner, or make the runner's user trusted (trusted-users in ${system}).`,
      ],
      done: [],
    };
  }

  // The system's nix.conf, read by the daemon when it starts.
  const marker = `nix-edge-cache action, ${basename(r.dir)}`;
  const systemLines = nixConfLines({ ...r, hookScript: undefined }, netrcFile);
  let wrapper: string | undefined;
  if (r.hookScript) {
    wrapper = join(dirname(system), `${basename(r.dir)}-post-build-hook`);
    await sudo(["tee", wrapper], r.env, wrapperScript(r.hookScript));
    await sudo(["chmod", "755", wrapper], r.env);
    systemLines.push(`post-build-hook = ${wrapper}`);
  }
  await sudo(["tee", "-a", system], r.env, `\n# begin ${marker}\n${systemLines.join("\n")}\n# end ${marker}\n`);
  const systemChange: SystemChange = { file: system, marker, wrapper, socket: daemonSocket(r.env) };
  const restart = await restartDaemon(r.env, systemChange.socket);
  if ("problem" in restart) {
    return {
      how: "not applied",
      hookInstalled: false,
      lines: systemLines,
      notes: [`${untrusted}: added the action's settings to ${system} with sudo, but ${restart.problem}: it reads them only when it next starts (restart it before the build for them to count)`],
      done: [],
      systemChange,
    };
  }
  return {
    how: "system configuration",
    hookInstalled: Boolean(r.hookScript),
    lines: systemLines,
    notes: [],
    done: [`${untrusted}: added the action's settings to ${system} with sudo and ${restart.done}; the post step takes them out again`],
    systemChange,
  };
}

/** The post step: takes the action's block out of the system's nix.conf and restarts the daemon. */
export async function undoSetup(change: SystemChange, env: NodeJS.ProcessEnv): Promise<string> {
  const text = await readFile(change.file, "utf8").catch(async () => (await sudo(["cat", change.file], env)).stdout);
  const kept = withoutBlock(text, change.marker);
  if (kept !== text) await sudo(["tee", change.file], env, kept);
  const restart = await restartDaemon(env, change.socket);
  if ("problem" in restart) {
    // A daemon that read the settings keeps naming the wrapper until it restarts: without
    // it, every build would fail. It does nothing once the job's files are gone.
    const left = change.wrapper ? ` (${change.wrapper} is left for it: it does nothing once this job's files are gone)` : "";
    throw new Error(`took the action's settings out of ${change.file}, but ${restart.problem}: it keeps them until it next starts${left}`);
  }
  if (change.wrapper) await sudo(["rm", "-f", change.wrapper], env);
  return `took the action's settings out of ${change.file} and ${restart.done}`;
}

/** nix.conf's text without the lines from `# begin <marker>` to `# end <marker>` (and the blank line before). */
export function withoutBlock(text: string, marker: string): string {
  const lines = text.split("\n");
  const begin = lines.indexOf(`# begin ${marker}`);
  const end = lines.indexOf(`# end ${marker}`);
  if (begin < 0 || end < begin) return text;
  const from = begin > 0 && lines[begin - 1] === "" ? begin - 1 : begin;
  return [...lines.slice(0, from), ...lines.slice(end + 1)].join("\n");
}

/** The hook the system's nix.conf names: the job's hook while it exists, else nothing. */
export function wrapperScript(hookScript: string): string {
  const q = `'${hookScript.replace(/'/g, `'\\''`)}'`;
  return [
    "#!/bin/sh",
    "# Nix's post-build-hook for one job of the nix-edge-cache action (its post step removes",
    "# this file): runs the job's own hook while the job's files exist, and does nothing after.",
    `[ -x ${q} ] || exit 0`,
    `exec ${q}`,
    "",
  ].join("\n");
}

/** The value of NIX_USER_CONF_FILES that puts the action's nix.conf first. */
export function confFilesWith(file: string, env: NodeJS.ProcessEnv): string {
  return [file, ...userConfFiles(env).filter((f) => f !== file)].join(":");
}

function execute(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<{ code: number; stdout: string; stderr: string; missing: boolean }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env }, (err, stdout, stderr) => {
      const errno = err ? (err as { code?: unknown }).code : undefined;
      const code = err ? (typeof errno === "number" ? errno : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), missing: errno === "ENOENT" });
    });
    child.stdin?.on("error", () => {});
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** Why `sudo -n` cannot be used (not installed, or it needs a password), or null when it can. */
async function sudoProblem(env: NodeJS.ProcessEnv): Promise<string | null> {
  const r = await execute("sudo", ["-n", "true"], env);
  if (r.code === 0) return null;
  if (r.missing) return "sudo is not installed";
  return `sudo -n does not work (${r.stderr.trim().split("\n").at(-1) || `exit ${r.code}`})`;
}

async function sudo(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<{ stdout: string }> {
  const r = await execute("sudo", ["-n", ...args], env, input);
  if (r.code !== 0) throw new Error(`sudo ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r;
}

/**
 * Restarts the daemon so it reads nix.conf again: launchd (macOS), systemd where it runs
 * the daemon, else the process listening on its socket, stopped and started again.
 */
async function restartDaemon(env: NodeJS.ProcessEnv, socket: string): Promise<{ done: string } | { problem: string }> {
  const tried: string[] = [];
  const managers: string[][] = [];
  if (process.platform === "darwin") {
    managers.push(["launchctl", "kickstart", "-k", "system/org.nixos.nix-daemon"], ["launchctl", "kickstart", "-k", "system/systems.determinate.nix-daemon"]);
  } else if (existsSync("/run/systemd/system")) {
    managers.push(["systemctl", "restart", "nix-daemon.service"]);
  }
  for (const cmd of managers) {
    const r = await execute("sudo", ["-n", ...cmd], env);
    if (r.code === 0) {
      const deadline = Date.now() + DAEMON_RESTART_WAIT_MS;
      while (!(await accepting(socket)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
      return (await accepting(socket))
        ? { done: `restarted the daemon (${cmd.join(" ")})` }
        : { problem: `the daemon does not listen on ${socket} within ${DAEMON_RESTART_WAIT_MS / 1000} s of ${cmd.join(" ")}` };
    }
    tried.push(`${cmd.join(" ")}: ${r.stderr.trim().split("\n").at(-1) || `exit ${r.code}`}`);
  }
  if (process.platform === "linux") {
    const r = await execute("sudo", ["-n", process.execPath, RESTART_SCRIPT, socket], env);
    if (r.code === 0) return { done: r.stdout.trim() || "restarted the daemon" };
    tried.push(`restarting the process on ${socket}: ${r.stderr.trim().split("\n").at(-1) || `exit ${r.code}`}`);
  }
  return { problem: `the daemon could not be restarted (${tried.join("; ") || "no way to restart it on this system"})` };
}
