// The local Nix as `use` and `doctor` see it: its version, its settings (`nix show-config
// --json`, `nix config show --json` from 2.20 on), whether nix-command works, and whether
// this user is trusted by the daemon (which decides whether a user's extra-substituters
// and extra-trusted-public-keys count at all).
//
// Settings JSON is `{"name": {"value": …, …}}` from Nix 2.4 on; list settings are arrays
// of strings. Trust: `nix store ping --json` says `"trusted": 1|0` from Nix 2.15 on (when
// talking to a daemon); before that, root is trusted, a store without a daemon socket is
// the user's own, and otherwise the `trusted-users` setting decides (users, @groups, *).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { userInfo } from "node:os";
import { NixError } from "./errors.ts";

const NIX_COMMAND = ["--extra-experimental-features", "nix-command"];

/** The daemon's socket, where a multi-user install's clients connect. */
export const DAEMON_SOCKET = "/nix/var/nix/daemon-socket/socket";

/**
 * The daemon socket this environment's Nix connects to: NIX_REMOTE=unix://<path>, else
 * NIX_DAEMON_SOCKET_PATH, else daemon-socket/socket under NIX_STATE_DIR (as Nix finds it).
 */
export function daemonSocket(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NIX_REMOTE?.startsWith("unix://")) return env.NIX_REMOTE.slice("unix://".length).split("?")[0]!;
  if (env.NIX_DAEMON_SOCKET_PATH) return env.NIX_DAEMON_SOCKET_PATH;
  return env.NIX_STATE_DIR ? `${env.NIX_STATE_DIR.replace(/\/+$/, "")}/daemon-socket/socket` : DAEMON_SOCKET;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `nix` (or another program) to completion; NixError when it cannot start. */
export function runNix(args: readonly string[], env: NodeJS.ProcessEnv = process.env, program = "nix"): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e: NodeJS.ErrnoException) =>
      reject(
        e.code === "ENOENT"
          ? new NixError(`cannot run ${program}: not found`, "install Nix (https://nixos.org/download) or put `nix` on PATH")
          : new NixError(`cannot run ${program}: ${e.message}`, undefined, { cause: e }),
      ),
    );
    child.on("close", (code, signal) =>
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") }),
    );
  });
}

export type NixSettings = Map<string, string | string[] | boolean | number>;

/** `nix --version`'s number, e.g. "2.8.0". */
export async function nixVersion(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const r = await runNix(["--version"], env);
  const m = /(\d+\.\d+(?:\.\d+)?)/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new NixError(`nix --version failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return m[1]!;
}

/** The effective settings of the local Nix (as this user's commands see them). */
export async function nixSettings(env: NodeJS.ProcessEnv = process.env): Promise<NixSettings> {
  let r = await runNix([...NIX_COMMAND, "config", "show", "--json"], env);
  if (r.code !== 0) r = await runNix([...NIX_COMMAND, "show-config", "--json"], env);
  if (r.code !== 0) throw new NixError(`nix show-config failed (exit ${r.code}): ${lastLine(r.stderr)}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.stdout);
  } catch {
    throw new NixError("nix show-config --json printed something that is not JSON");
  }
  const settings: NixSettings = new Map();
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    const value = typeof entry === "object" && entry !== null && !Array.isArray(entry) && "value" in entry ? (entry as { value: unknown }).value : entry;
    if (Array.isArray(value)) settings.set(name, value.map(String));
    else if (typeof value === "string" || typeof value === "boolean" || typeof value === "number") settings.set(name, value);
  }
  return settings;
}

/** A list setting's words (Nix prints some lists as space-separated strings). */
export function listSetting(settings: NixSettings, name: string): string[] {
  const v = settings.get(name);
  if (Array.isArray(v)) return v;
  if (typeof v === "string") return v.split(/\s+/).filter((w) => w !== "");
  return [];
}

/** Whether nix-command works when the uploader enables it, and whether nix.conf enables it. */
export async function nixCommand(env: NodeJS.ProcessEnv = process.env): Promise<{ usable: boolean; enabled: boolean; error?: string }> {
  const withFlag = await runNix([...NIX_COMMAND, "path-info", "--help"], env);
  const without = await runNix(["path-info", "--help"], env);
  return withFlag.code === 0
    ? { usable: true, enabled: without.code === 0 }
    : { usable: false, enabled: false, error: lastLine(withFlag.stderr) };
}

export interface Trust {
  /** null: could not tell. */
  trusted: boolean | null;
  /** How that was decided, for the report. */
  how: string;
}

/** Whether this user is trusted by the Nix daemon (or needs none). */
export async function userTrust(settings: NixSettings, env: NodeJS.ProcessEnv = process.env): Promise<Trust> {
  const user = userInfo();
  if (user.uid === 0) return { trusted: true, how: "root is always trusted" };
  const ping = await runNix([...NIX_COMMAND, "store", "ping", "--json"], env);
  if (ping.code === 0) {
    try {
      const doc = JSON.parse(ping.stdout) as { trusted?: unknown; url?: unknown };
      if (doc.trusted === 1 || doc.trusted === true) return { trusted: true, how: "the daemon says so (nix store ping)" };
      if (doc.trusted === 0 || doc.trusted === false) return { trusted: false, how: "the daemon says so (nix store ping)" };
    } catch {
      // an older Nix: decide from the settings below
    }
  }
  const store = settings.get("store");
  if ((store === "auto" || store === undefined) && !existsSync(daemonSocket(env))) {
    return { trusted: true, how: "no daemon: the store is your own" };
  }
  const trustedUsers = listSetting(settings, "trusted-users");
  const groups = await groupsOf(user.username, env);
  const match = trustedUsers.find((u) => u === "*" || u === user.username || (u.startsWith("@") && groups.includes(u.slice(1))));
  return match
    ? { trusted: true, how: `trusted-users has ${match}` }
    : { trusted: false, how: `trusted-users (${trustedUsers.join(" ") || "empty"}) names neither ${user.username} nor a group of yours` };
}

async function groupsOf(user: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  try {
    const r = await runNix(["-Gn", user], env, "id");
    return r.code === 0 ? r.stdout.trim().split(/\s+/) : [];
  } catch {
    return [];
  }
}

function lastLine(text: string): string {
  return text.trim().split("\n").filter((l) => l.trim() !== "").at(-1) ?? "(no output)";
}
