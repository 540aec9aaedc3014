// Pushing while the job builds: `uploader watch-store --spool-only` runs in the background
// from the action's main step to its post step, and Nix's post-build-hook (a script the
// action writes) queues each build's outputs in its spool (uploader/spool.ts has the
// protocol). Every path is pushed, with its closure, as soon as its build ends; a job
// cancelled or timed out later keeps what was pushed by then.
//
// The watcher is started detached (its own process group, outliving the main step) with its
// output in a log file; the post step sends it SIGTERM, which makes it push what is still
// queued and exit, waits for it, and reads the outcome from what it leaves behind: the
// spool (jobs not pushed stay there, paths it gave up on are listed in failed/) and its
// log (`uploaded <path> (…)` per path; the sizes then come from the cache's narinfos).
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { summarise, type PathReport, type PushSummary } from "../progress.ts";
import { FAILED_DIR, JOB_SUFFIX, parseJob, socketPath } from "../spool.ts";
import { uploaderCommand } from "./push-process.ts";

/** How long main waits for the watcher to listen on its socket (its preflight included). */
const START_TIMEOUT_MS = 30_000;
const POLL_MS = 100;

export interface WatcherOptions {
  spool: string;
  log: string;
  cacheUrl: string;
  token: string;
  secretKeyFile?: string | undefined;
  compression: string;
  jobs?: number | undefined;
  extraArgs: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
}

/** The hook script: queues what Nix built for the watcher, never failing the build. */
export function hookScript(o: { spool: string; exclude?: RegExp | undefined }): string {
  const [node, ...cli] = uploaderCommand();
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const lines = [
    "#!/bin/sh",
    "# Nix's post-build-hook for this job, written by the nix-edge-cache action.",
    "# Queues what Nix just built ($OUT_PATHS) for the watcher (uploader post-build-hook).",
  ];
  if (o.exclude) {
    // The action's `exclude` input, applied as JavaScript reads it (in the environment, as a
    // pattern starting with "-" would be an option to node). Should node fail, nothing is
    // left out rather than everything.
    const filter = `const r = new RegExp(process.env.NEC_EXCLUDE); process.stdout.write(process.env.OUT_PATHS.split(" ").filter((p) => p && !r.test(p)).join(" "))`;
    lines.push(
      `if [ -n "$OUT_PATHS" ] && kept=$(NEC_EXCLUDE=${q(o.exclude.source)} ${q(node!)} -e ${q(filter)}); then`,
      `  [ -n "$kept" ] || exit 0`,
      `  OUT_PATHS=$kept`,
      `  export OUT_PATHS`,
      `fi`,
    );
  }
  lines.push(`exec ${[node!, ...cli].map(q).join(" ")} post-build-hook --spool ${q(o.spool)}`);
  return `${lines.join("\n")}\n`;
}

/** Starts the watcher; its pid once it listens, or what went wrong (from its log). */
export async function startWatcher(o: WatcherOptions): Promise<{ pid: number } | { problem: string }> {
  const [node, ...cli] = uploaderCommand();
  const args = [...cli, "watch-store", "--spool-only", "--spool", o.spool, "--cache", o.cacheUrl, "--compression", o.compression];
  if (o.jobs !== undefined) args.push("--jobs", String(o.jobs));
  if (o.secretKeyFile) args.push("--secret-key-file", o.secretKeyFile);
  args.push(...o.extraArgs);
  // The token travels in the environment, not on the command line (visible in `ps`).
  const env: NodeJS.ProcessEnv = { ...o.env, NIX_CACHE_TOKEN: o.token };
  for (const k of Object.keys(env)) if (k.startsWith("INPUT_") || k.startsWith("STATE_")) delete env[k];
  const fd = openSync(o.log, "a");
  let exit: string | undefined;
  try {
    const child = spawn(node!, args, { cwd: o.cwd, env, detached: true, stdio: ["ignore", fd, fd] });
    child.on("exit", (code, signal) => (exit = `exited with ${code ?? signal}`));
    child.on("error", (err) => (exit = `could not start: ${err.message}`));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (exit === undefined && !existsSync(socketPath(o.spool)) && Date.now() < deadline) await sleep(POLL_MS);
    if (exit !== undefined || child.pid === undefined) return { problem: `uploader watch-store ${exit ?? "did not start"}: ${await logTail(o.log)}` };
    // Still not listening (a slow start)? The hook's jobs wait in the spool until it reads them.
    child.unref();
    return { pid: child.pid };
  } finally {
    closeSync(fd);
  }
}

export interface DrainResult {
  /** What was uploaded (sizes from the cache), and what is left: failed, or still queued. */
  summary: PushSummary;
  /** Why paths are left, when they are. */
  problem?: string;
  log: string;
}

/**
 * Stops the watcher (SIGTERM: it pushes what is queued first) and waits for it to exit;
 * then reads what it did. `narinfo` fetches a path's narinfo from the cache (null: absent).
 */
export async function drainWatcher(
  o: { pid: number; spool: string; log: string; seconds: number },
  narinfo: (storePath: string) => Promise<string | null>,
): Promise<DrainResult> {
  try {
    process.kill(o.pid, "SIGTERM");
  } catch {
    // already gone (it failed, or the runner stopped it): what it left behind tells
  }
  while (alive(o.pid)) await sleep(POLL_MS);
  const log = await readFile(o.log, "utf8").catch(() => "");
  const uploadedPaths = [...new Set([...log.matchAll(/^uploaded (\/\S+) \(/gm)].map((m) => m[1]!))];
  const reports: PathReport[] = [];
  for (const path of uploadedPaths) {
    const text = await narinfo(path);
    if (text === null) {
      reports.push({ path, outcome: "failed", narSize: 0, error: "the watcher uploaded it, but the cache does not have it now" });
      continue;
    }
    const info = parseNarInfo(text);
    reports.push({ path, outcome: "uploaded", narSize: info.narSize, fileSize: info.fileSize ?? 0 });
  }
  const queued = await spoolPaths(o.spool);
  const failed = await spoolPaths(join(o.spool, FAILED_DIR));
  for (const path of failed) reports.push({ path, outcome: "failed", narSize: 0, error: gaveUpReason(log, path) });
  for (const path of queued) reports.push({ path, outcome: "failed", narSize: 0, error: "still queued when the job ended" });
  const summary = summarise(reports, o.seconds);
  const left = queued.length + failed.length;
  if (left === 0) return { summary, log };
  const reason = /^(waiting for .*)$/m.exec(log.split("\n").reverse().join("\n"))?.[1];
  return {
    summary,
    log,
    problem: `${left} built path(s) not pushed${reason ? ` (the watcher was ${reason.replace(/: \d+ paths? queued.*$/, "")})` : ""}`,
  };
}

function gaveUpReason(log: string, path: string): string {
  const line = log.split("\n").find((l) => l.startsWith(`gave up on ${path} `));
  return line ? line.slice(`gave up on ${path} `.length) : "the watcher gave up on it";
}

/** The store paths in the spool's jobs (or in failed/). */
async function spoolPaths(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(JOB_SUFFIX));
  } catch {
    return [];
  }
  const paths = new Set<string>();
  for (const n of names) {
    try {
      for (const p of parseJob(await readFile(join(dir, n), "utf8"))) paths.add(p);
    } catch {
      // a malformed job: the watcher sets those aside itself
    }
  }
  return [...paths];
}

/** Whether the process runs (a zombie, exited but not yet reaped, does not). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // Linux: the state letter after the command name in /proc/<pid>/stat.
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return true;
  }
  return !/\) [ZX] /.test(stat);
}

async function logTail(file: string): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  const lines = text.split("\n").filter((l) => /^(error|hint):/.test(l));
  return (lines.length > 0 ? lines : text.trim().split("\n").slice(-3)).join(" ");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
