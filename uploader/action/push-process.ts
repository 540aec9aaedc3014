// Running `uploader push --json` as a child process, the way a user would from a shell:
// the action adds no second code path into the uploader's internals.
//
// The uploader's stderr (progress, one line per uploaded path on a non-terminal) goes
// straight to the job's log; its stdout is the JSON PushSummary. Very many paths are pushed
// in batches so the command line stays within the kernel's limit; the batches' summaries
// are merged path by path (a path uploaded by one batch is "already cached" for the next).
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { summarise, type PathReport, type PushSummary } from "../progress.ts";

/**
 * The uploader's entry point: in the action's bundles (dist/*.js, what runs on GitHub) the
 * bundled uploader next to them, dist/uploader.js; from the sources, ../cli.ts.
 */
export const CLI_PATH = fileURLToPath(
  /\/action\/dist\/[^/]+\.js$/.test(import.meta.url) ? new URL("./uploader.js", import.meta.url) : new URL("../cli.ts", import.meta.url),
);

/** The command that runs the uploader: this Node.js and the entry point. */
export function uploaderCommand(): string[] {
  return [process.execPath, CLI_PATH];
}

/**
 * Paths per uploader run. Store paths are about 90 bytes, so 1,000 make ~90 KiB of
 * arguments, far below Linux's ~2 MiB for a command line and its environment.
 */
const PATHS_PER_RUN = 1000;

export interface PushOptions {
  cacheUrl: string;
  token: string;
  secretKeyFile?: string;
  compression: string;
  jobs?: number | undefined;
  /** More flags for the uploader (the action's uploader-args). */
  extraArgs?: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
}

export interface PushResult {
  /** 0 when every batch succeeded, else the first non-zero exit code. */
  exitCode: number;
  /** Merged over the batches that reported one; null if none did. */
  summary: PushSummary | null;
  /** The uploader's `error:` and `hint:` lines, for the annotation. */
  errorText: string;
}

export async function pushPaths(paths: readonly string[], options: PushOptions): Promise<PushResult> {
  const summaries: PushSummary[] = [];
  let exitCode = 0;
  const errors: string[] = [];
  for (let i = 0; i < paths.length; i += PATHS_PER_RUN) {
    const r = await runUploader(paths.slice(i, i + PATHS_PER_RUN), options);
    if (r.summary) summaries.push(r.summary);
    if (r.exitCode !== 0) {
      if (exitCode === 0) exitCode = r.exitCode;
      if (r.errorText) errors.push(r.errorText);
      // The cache is unreachable or refuses the token: later batches would fail the same way.
      if (!r.summary) break;
    }
  }
  return { exitCode, summary: summaries.length > 0 ? mergeSummaries(summaries) : null, errorText: errors.join("\n") };
}

interface RunResult {
  exitCode: number;
  summary: PushSummary | null;
  errorText: string;
}

function runUploader(paths: readonly string[], o: PushOptions): Promise<RunResult> {
  const args = [CLI_PATH, "push", "--json", "--cache", o.cacheUrl, "--compression", o.compression];
  if (o.jobs !== undefined) args.push("--jobs", String(o.jobs));
  if (o.secretKeyFile) args.push("--secret-key-file", o.secretKeyFile);
  args.push(...(o.extraArgs ?? []), "--", ...paths);
  // The token travels in the environment, not on the command line (visible in `ps`).
  const env: NodeJS.ProcessEnv = { ...o.env, NIX_CACHE_TOKEN: o.token };
  for (const k of Object.keys(env)) if (k.startsWith("INPUT_")) delete env[k];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: o.cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      process.stderr.write(d);
    });
    child.on("error", (err) => resolve({ exitCode: 1, summary: null, errorText: `cannot run the uploader: ${err.message}` }));
    child.on("close", (code, signal) => {
      const errorText = stderr
        .split("\n")
        .filter((l) => l.startsWith("error:") || l.startsWith("hint:"))
        .join("\n");
      resolve({
        exitCode: code ?? (signal ? 128 : 1),
        summary: parseSummary(stdout),
        errorText: errorText || (code === 0 ? "" : `the uploader exited with ${code ?? signal}`),
      });
    });
  });
}

function parseSummary(stdout: string): PushSummary | null {
  if (!stdout.trim()) return null;
  try {
    const s = JSON.parse(stdout) as Partial<PushSummary>;
    return Array.isArray(s.paths) && typeof s.uploaded === "number" ? (s as PushSummary) : null;
  } catch {
    return null;
  }
}

/**
 * One summary for several runs, each path counted once: "uploaded" if any run uploaded it
 * (a later run then sees it as cached, an earlier one may have failed it), else its first
 * outcome.
 */
export function mergeSummaries(summaries: readonly PushSummary[]): PushSummary {
  const byPath = new Map<string, PathReport>();
  for (const s of summaries) {
    for (const p of s.paths) {
      const seen = byPath.get(p.path);
      if (!seen || (p.outcome === "uploaded" && seen.outcome !== "uploaded")) byPath.set(p.path, p);
    }
  }
  return summarise([...byPath.values()], summaries.reduce((n, s) => n + s.seconds, 0));
}
