// `uploader push <path>...`: flags → settings → plan → upload → summary.
// The work itself is in the library modules; this file only wires them together.
import { mkdtemp, rm } from "node:fs/promises";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_COMPRESSION } from "../compress.ts";
import { EXIT_INTERRUPTED, PushIncompleteError, UsageError, markReportedAsJson } from "../errors.ts";
import { HttpClient } from "../http.ts";
import { readSecretKeyFile } from "../key-file.ts";
import { planPush, type PushPlan } from "../plan.ts";
import { Progress, formatBytes } from "../progress.ts";
import { DEFAULT_JOBS, SMALL_PER_JOB, executePlan, socketsFor, type PushSettings } from "../run-plan.ts";
import { RemoteCache } from "../remote-cache.ts";
import { ENV, parseCommandLine, resolveCache } from "../settings.ts";
import { expandDerivations, queryClosure, resolveStorePaths } from "../store.ts";
import { preflight } from "../checks.ts";
import { LEVEL_AND_UPSTREAM_HELP, PUSH_OPTIONS, REPORT_OPTIONS, pushChoices } from "./flags.ts";


export const HELP = `Usage: uploader push [options] <path>...

Uploads store paths (or ./result-style symlinks to them) with their whole closures:
asks the cache what it lacks, skips paths signed by an upstream cache, then uploads
the rest as compressed NARs and narinfos, references first. NARs larger than the
cache accepts in one request (100 MiB on Cloudflare's free plan) go in parts, and
a push run again after an interruption sends only the parts the cache lacks.

Options:
  --cache <url|name>        the cache's URL, or a name given to login
                                                                 [env ${ENV.cacheUrl}]
  --token <token>           a write token for the cache          [env ${ENV.token}]
  --secret-key-file <file>  sign narinfos with this Nix secret key
                                                                 [env ${ENV.secretKeyFile}]
  -j, --jobs <n>            large paths uploaded in parallel (default ${DEFAULT_JOBS});
                            besides them, ${SMALL_PER_JOB} times as many small ones (under 1 MiB)
  --compression <method>    zstd, xz or none (default ${DEFAULT_COMPRESSION})
${LEVEL_AND_UPSTREAM_HELP}
  --no-skip-upstream        upload paths signed by upstream keys too
  --dry-run                 show what would be uploaded, upload nothing
  --json                    print the result as JSON on stdout
  --stdin                   also push the paths read from standard input, separated by
                            blanks or newlines (nix build --print-out-paths | uploader push --stdin)
  -v, --verbose             also report cached and skipped paths, and retries
  -h, --help                show this help

Without --cache, the cache stored by \`uploader login\` is used (with its tokens and key).
Flags win over environment variables, which win over what login stored. Prefer ${ENV.token} to --token, which other
users of the machine can see in the process list.

Exit status: 0 all uploaded or already there; 1 some paths failed; 2 bad usage;
3 local problem (Nix, store path, key file); 4 cache unreachable or token refused.
`;

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, { ...PUSH_OPTIONS, ...REPORT_OPTIONS, stdin: { type: "boolean" } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (values.stdin) positionals.push(...(await pathsFromStdin()));
  if (positionals.length === 0) {
    throw values.stdin
      ? new UsageError("no paths on standard input", "e.g. nix build --print-out-paths | uploader push --stdin")
      : new UsageError("no paths given", "usage: uploader push [options] <path>...");
  }
  const settings = resolveCache(values);
  const { url: cacheUrl, token } = settings;
  const { jobs, compression, level, upstreamKeys } = pushChoices(values);
  const keyFile = settings.secretKeyFile;
  const secretKey = keyFile ? await readSecretKeyFile(keyFile) : undefined;

  const progress = new Progress({ verbose: values.verbose ?? false });
  // Sockets for the paths in flight (small ones too), the parts of a large NAR, planning;
  // kept alive and reused from path to path.
  const http = new HttpClient({ baseUrl: cacheUrl, token, maxSockets: socketsFor(jobs), onRetry: (e) => progress.retry(e) });
  const cache = new RemoteCache(http);
  try {
    const { paths, derivations } = await expandDerivations(await resolveStorePaths(positionals));
    for (const d of derivations) progress.log(`${d.drv} is a derivation: pushing its output${d.outputs.length === 1 ? "" : "s"} ${d.outputs.join(", ")} (not the .drv file)`);
    const closure = await queryClosure(paths);
    // Local problems are reported first; then, before any NAR is read: is this the cache,
    // and may the token write? (One request, no long retries.)
    for (const warning of await preflight(settings)) progress.log(warning);
    const plan = await planPush(closure, cache, { upstreamKeys });
    if (values["dry-run"]) {
      printPlan(plan, values.json ?? false);
      return;
    }
    await carryOut(plan, { cache, compression, level, secretKey, jobs, progress, json: values.json ?? false });
  } finally {
    http.close();
  }
}

export interface CarryOutOptions extends Omit<PushSettings, "tmpDir" | "observe"> {
  json: boolean;
  /** Says what to run again after Ctrl-C ("push", "import"). */
  command?: string;
}

/**
 * Uploads a plan and ends the command as push does (`uploader import` shares it): the
 * plan's line, progress, the summary (and --json), temp files removed also on Ctrl-C,
 * and the error that sets the exit code when paths failed.
 */
export async function carryOut(plan: PushPlan, options: CarryOutOptions): Promise<void> {
  const { progress, json, command = "push", ...settings } = options;
  progress.log(describePlan(plan));
  if (!settings.secretKey) progress.detail(`no secret key (--secret-key-file / ${ENV.secretKeyFile}): narinfos keep only the signatures the paths already have`);

  const tmp = await mkdtemp(join(tmpdir(), "nix-edge-cache-"));
  // Ctrl-C: the cache is consistent at every moment (NAR before narinfo, references
  // first), so only the temp files need cleaning up before exiting.
  const onInterrupt = (): void => {
    rmSync(tmp, { recursive: true, force: true });
    process.stderr.write(`\ninterrupted; the cache holds only complete paths, run the same ${command} again to finish\n`);
    process.exit(EXIT_INTERRUPTED);
  };
  process.once("SIGINT", onInterrupt);
  let outcome;
  try {
    outcome = await executePlan(plan, { ...settings, tmpDir: tmp, progress, observe: {
      nar: () => progress.counter("nar"),
      sent: () => progress.counter("sent"),
      detail: (message) => progress.detail(message),
      log: (message) => progress.log(message),
    } });
  } finally {
    process.off("SIGINT", onInterrupt);
    await rm(tmp, { recursive: true, force: true });
  }
  const { failed, blocked } = outcome.summary;
  const error = outcome.fatal ?? (failed + blocked > 0 ? new PushIncompleteError(failed, blocked) : undefined);
  if (json) {
    const result = error ? { ...outcome.summary, error: { type: error.name, message: error.message, ...(error.hint ? { hint: error.hint } : {}), exitCode: error.exitCode } } : outcome.summary;
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  }
  // With --json the error is in the result above: cli.ts prints no second object.
  if (error) throw json ? markReportedAsJson(error) : error;
}

/** `--stdin`: paths separated by blanks or newlines, as `nix build --print-out-paths` prints them. */
async function pathsFromStdin(): Promise<string[]> {
  if (process.stdin.isTTY) {
    throw new UsageError("--stdin reads paths from a pipe, but standard input is a terminal", "e.g. nix build --print-out-paths | uploader push --stdin");
  }
  process.stdin.setEncoding("utf8");
  let text = "";
  for await (const chunk of process.stdin) text += chunk as string;
  return text.split(/\s+/).filter((p) => p !== "");
}

/** One line: how many paths, and what becomes of them (`uploader import` shares it). */
export function describePlan(plan: PushPlan): string {
  const bytes = plan.toUpload.reduce((n, p) => n + p.narSize, 0);
  const refused = plan.rejected?.length ? `, ${plan.rejected.length} refused` : "";
  return (
    `${plural(plan.closure.length, "path")} in the closure: ${plan.toUpload.length} to upload (${formatBytes(bytes)} of NARs), ` +
    `${plan.alreadyCached.length} already cached, ${plan.skippedUpstream.length} skipped (upstream)${refused}`
  );
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** --dry-run: the plan, as JSON on stdout or as text on stderr (`uploader import` shares it). */
export function printPlan(plan: PushPlan, json: boolean): void {
  if (json) {
    const out = {
      dryRun: true,
      toUpload: plan.toUpload.map((p) => ({ path: p.path, narSize: p.narSize })),
      alreadyCached: plan.alreadyCached.map((p) => p.path),
      skippedUpstream: plan.skippedUpstream.map((p) => p.path),
      ...(plan.rejected?.length ? { refused: plan.rejected.map((r) => ({ path: r.path, error: r.error })) } : {}),
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }
  const lines = [describePlan(plan)];
  for (const p of plan.toUpload) lines.push(`  upload   ${p.path} (${formatBytes(p.narSize)})`);
  for (const p of plan.alreadyCached) lines.push(`  cached   ${p.path}`);
  for (const p of plan.skippedUpstream) lines.push(`  upstream ${p.path}`);
  for (const r of plan.rejected ?? []) lines.push(`  refused  ${r.path}: ${r.error ?? ""}`);
  lines.push("(dry run: nothing uploaded)");
  process.stderr.write(`${lines.join("\n")}\n`);
}
