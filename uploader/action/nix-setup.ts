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
//     nix.conf and the daemon is restarted (systemd or launchd) so it reads them; where it
//     does not, substituters only work if the machine's trusted-substituters allows them,
//     and the hook cannot be installed (the caller falls back to the store diff).
import { execFile } from "node:child_process";
import { constants, existsSync } from "node:fs";
import { access, chmod, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { DAEMON_SOCKET, nixSettings, userTrust } from "../nix-config.ts";

/** Where Nix keeps its state; a user who may write it uses the store without the daemon. */
const NIX_STATE_DIR = "/nix/var/nix";
/** How long to wait for a restarted daemon's socket. */
const DAEMON_RESTART_WAIT_MS = 15_000;

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
  /** The action's nix.conf, to put first in NIX_USER_CONF_FILES (user configuration only). */
  confFile?: string;
  /** The nix.conf lines written. */
  lines: string[];
  /** What the log should say (why something could not be applied). */
  notes: string[];
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
  if (env.NIX_REMOTE === "daemon") return true;
  if (env.NIX_REMOTE) return false;
  try {
    await access(NIX_STATE_DIR, constants.W_OK);
    return false;
  } catch {
    return existsSync(DAEMON_SOCKET);
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
  if (lines.length === 0) return { how: "not applied", hookInstalled: false, lines, notes: [] };

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
  if (trusted) {
    const file = join(r.dir, "nix.conf");
    await writeFile(file, `# written by the nix-edge-cache action for this job\n${lines.join("\n")}\n`);
    return { how: "user configuration", confFile: file, hookInstalled: Boolean(r.hookScript), lines, notes: [] };
  }

  const system = join(r.env.NIX_CONF_DIR || "/etc/nix", "nix.conf");
  if (await sudoWorks(r.env)) {
    await sudo(["tee", "-a", system], r.env, `\n# added by the nix-edge-cache action\n${lines.join("\n")}\n`);
    const restarted = await restartDaemon(r.env);
    return {
      how: "system configuration",
      hookInstalled: Boolean(r.hookScript) && restarted === null,
      lines,
      notes: restarted ? [`added to ${system}, but ${restarted}`] : [`this user is not trusted by the Nix daemon (${how}): added to ${system} and restarted the daemon`],
    };
  }
  return {
    how: "not applied",
    hookInstalled: false,
    lines,
    notes: [
      `this user is not trusted by the Nix daemon (${how}) and sudo needs a password: the daemon ignores the action's settings. ` +
        `Add them to ${system} (or trusted-substituters) on the runner, or make the runner's user trusted.`,
    ],
  };
}

/** The value of NIX_USER_CONF_FILES that puts the action's nix.conf first. */
export function confFilesWith(file: string, env: NodeJS.ProcessEnv): string {
  return [file, ...userConfFiles(env).filter((f) => f !== file)].join(":");
}

function execute(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env }, (err, _stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 127) : 0;
      resolve({ code, stderr: String(stderr) });
    });
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

async function sudoWorks(env: NodeJS.ProcessEnv): Promise<boolean> {
  return (await execute("sudo", ["-n", "true"], env)).code === 0;
}

async function sudo(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<void> {
  const r = await execute("sudo", ["-n", ...args], env, input);
  if (r.code !== 0) throw new Error(`sudo ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** Restarts the daemon so it reads nix.conf again; null when done, else what went wrong. */
async function restartDaemon(env: NodeJS.ProcessEnv): Promise<string | null> {
  const attempts: string[][] =
    process.platform === "darwin"
      ? [["launchctl", "kickstart", "-k", "system/org.nixos.nix-daemon"], ["launchctl", "kickstart", "-k", "system/systems.determinate.nix-daemon"]]
      : [["systemctl", "restart", "nix-daemon.service"]];
  let last = "";
  for (const cmd of attempts) {
    const r = await execute("sudo", ["-n", ...cmd], env);
    if (r.code === 0) {
      const deadline = Date.now() + DAEMON_RESTART_WAIT_MS;
      while (!existsSync(DAEMON_SOCKET) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
      return existsSync(DAEMON_SOCKET) ? null : `the daemon's socket did not come back within ${DAEMON_RESTART_WAIT_MS / 1000} s`;
    }
    last = `${cmd.join(" ")} failed: ${r.stderr.trim() || `exit ${r.code}`}`;
  }
  return `the daemon could not be restarted (${last}); restart it before the build`;
}
