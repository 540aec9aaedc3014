// `uploader gc`: runs a garbage collection on the cache to the end, one batch per request
// (the Worker does a free-plan invocation's worth of work each time), printing progress;
// with --dry-run, lists what would be deleted and how many bytes that frees. A collection
// that met documents it keeps but cannot read deletes nothing: they are listed, with what to
// do, and the exit status is 1.
import type { GcBatchAnswer, GcBatchRequest } from "../../src/api/gc.ts";
import { CacheAdmin } from "../cache-admin.ts";
import { EXIT_PATHS_FAILED, UploaderError, UsageError, markReportedAsJson } from "../errors.ts";
import { HttpClient } from "../http.ts";
import { formatBytes } from "../progress.ts";
import { ENV, parseCommandLine, requireToken, resolveCache } from "../settings.ts";
import { ADMIN_OPTIONS, REPORT_OPTIONS } from "./flags.ts";

/** How long to wait before asking again when another batch (the cron trigger's) is running. */
const BUSY_RETRY_MS = 2000;
/** Longest single wait, so that Ctrl-C and progress stay responsive. */
const MAX_SLEEP_MS = 10_000;

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** What to do about documents a collection could not read (it deletes nothing until then). */
const UNREADABLE_HINT =
  "delete each listed narinfo from the R2 bucket (npx wrangler r2 object delete <bucket>/<key> --remote) and push its path again; " +
  "for _gc/pins.json, check the pins (uploader pins) and set them again (uploader pin)";

export const HELP = `Usage: uploader gc [options]

Collects garbage on the cache: deletes paths not pushed for the retention period
(the Worker's GC_RETENTION_DAYS, default 30 days) unless they are pinned or needed by a
kept path, then the NARs no remaining path uses. Runs to the end, one bounded batch per
request; joins the collection the cron trigger may have started.

Options:
  --cache <url|name>      the cache's URL, or a name given to login [env ${ENV.cacheUrl}]
  --admin-token <token>   the Worker's ADMIN_TOKEN                  [env ${ENV.adminToken}]
  --dry-run               list what would be deleted and the bytes it frees; change nothing
  --older-than <age>      collect paths last pushed longer ago than this instead of the
                          configured retention: a number with s, m, h, d or w (e.g. 14d)
  --before <date>         collect paths last pushed before this date (ISO 8601, or ms
                          since the epoch)
  --restart               replace a collection in progress that has not yet announced
                          what it deletes (e.g. to use another --older-than)
  --json                  print the result as JSON on stdout
  -v, --verbose           also list every deleted path
  -h, --help              show this help

Without --cache, the cache stored by \`uploader login\` is used; flags win over environment
variables, which win over what login stored.

Paths pushed while a collection runs are kept, with everything they reference. Pushes of
paths that are being deleted right then are refused until the collection has finished.
If a narinfo the cache keeps (or the pins document) cannot be read, what it references is
unknown: the collection then deletes no path and no NAR, lists those documents, and exits
with status 1 until they are deleted or pushed again.

Exit status: 0 done; 1 done, but nothing deleted because documents cannot be read;
2 bad usage; 4 cache unreachable, token refused or unexpected answer.
`;

/** Seconds in an age such as `90s`, `12h`, `14d`; throws UsageError. */
export function parseAge(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([smhdw])$/.exec(text.trim());
  if (!m) throw new UsageError(`--older-than must be a number followed by s, m, h, d or w (e.g. 14d), got "${text}"`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

/** Milliseconds since the epoch of `--before`; throws UsageError. */
export function parseDate(text: string): number {
  const trimmed = text.trim();
  const ms = /^\d+$/.test(trimmed) ? Number(trimmed) : Date.parse(trimmed);
  if (!Number.isSafeInteger(ms) || ms < 0) throw new UsageError(`--before must be an ISO 8601 date or ms since the epoch, got "${text}"`);
  return ms;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.min(ms, MAX_SLEEP_MS)));
}

function count(n: number, noun: string): string {
  return `${n.toLocaleString("en")} ${noun}${n === 1 ? "" : "s"}`;
}

/** One line about what the run is doing, for stderr. */
function describe(answer: GcBatchAnswer): string {
  const t = answer.totals;
  const phase = answer.run?.phase ?? "-";
  switch (phase) {
    case "mark": {
      const unreadable = t.unreadable ? `; ${count(t.unreadable, "document")} cannot be read (nothing will be deleted)` : "";
      return answer.run?.pass === 2
        ? `second look: ${count(t.listed ?? 0, "narinfo")} listed (paths pushed meanwhile keep what they use)${unreadable}`
        : `marking: ${count(t.listed ?? 0, "narinfo")} listed, ${count(t.expanded ?? 0, "path")} in use${unreadable}`;
    }
    case "nars":
      return `NARs: ${count(t.narFiles ?? 0, "file")} (${formatBytes(t.narBytes ?? 0)}) listed`;
    case "compact":
    case "announce":
      return `found ${count(t.garbagePaths ?? 0, "path")} and ${count(t.garbageNars ?? 0, "NAR")} (${formatBytes(t.garbageNarBytes ?? 0)}) to delete`;
    case "wait":
      return `announced what it deletes; waiting ${Math.ceil(answer.waitMs / 1000)} s for uploads in flight`;
    case "delete":
      // Between narinfos and NARs the collection waits out caches still serving a deleted narinfo.
      if (answer.status === "waiting") {
        return `deleted ${count(t.deletedPaths ?? 0, "path")}; waiting ${Math.ceil(answer.waitMs / 1000)} s before deleting NARs, while caches may still serve the deleted narinfos`;
      }
      return `deleting: ${count(t.deletedPaths ?? 0, "path")} and ${count(t.deletedNars ?? 0, "NAR")} so far`;
    default:
      return phase;
  }
}

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    ...ADMIN_OPTIONS,
    ...REPORT_OPTIONS,
    "older-than": { type: "string" },
    before: { type: "string" },
    restart: { type: "boolean" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const settings = resolveCache(values);
  const token = requireToken(settings, "admin");
  if (values["older-than"] !== undefined && values.before !== undefined) throw new UsageError("give --older-than or --before, not both");
  const dryRun = values["dry-run"] ?? false;
  const first: GcBatchRequest = { dryRun };
  if (values["older-than"] !== undefined) first.olderThanSeconds = parseAge(values["older-than"]);
  if (values.before !== undefined) first.before = parseDate(values.before);
  if (values.restart) first.restart = true;

  const http = new HttpClient({ baseUrl: settings.url, token });
  const admin = new CacheAdmin(http);
  const paths: GcBatchAnswer["found"]["paths"] = [];
  const files: GcBatchAnswer["found"]["files"] = [];
  let last = "";
  const say = (line: string): void => {
    if (line !== last) process.stderr.write(`${line}\n`);
    last = line;
  };
  try {
    let answer = await admin.gcBatch(first);
    const id = answer.run?.id;
    if (answer.run) {
      say(`${dryRun ? "dry run" : "collection"} ${answer.run.id}: paths last pushed before ${new Date(answer.run.cutoff).toISOString()} are old`);
    }
    for (;;) {
      paths.push(...answer.found.paths);
      files.push(...answer.found.files);
      if (answer.status === "done" || answer.status === "idle") break;
      if (answer.status === "busy") {
        await sleep(BUSY_RETRY_MS);
      } else {
        say(describe(answer));
        if (answer.status === "waiting") await sleep(answer.waitMs);
      }
      answer = await admin.gcBatch({ dryRun, ...(id === undefined ? {} : { runId: id }) });
    }
    report(answer, paths, files, { dryRun, json: values.json ?? false, verbose: values.verbose ?? false });
    const unreadable = answer.result?.unreadableCount ?? 0;
    if (unreadable > 0) {
      const err = new UploaderError(
        `the collection ${dryRun ? "would delete" : "deleted"} no path and no NAR: ${count(unreadable, "document")} it keeps cannot be read`,
        EXIT_PATHS_FAILED,
        UNREADABLE_HINT,
      );
      // With --json the result above already lists them: no second JSON object.
      throw values.json ? markReportedAsJson(err) : err;
    }
  } finally {
    http.close();
  }
}

function report(
  answer: GcBatchAnswer,
  paths: GcBatchAnswer["found"]["paths"],
  files: GcBatchAnswer["found"]["files"],
  opts: { dryRun: boolean; json: boolean; verbose: boolean },
): void {
  const nars = files.filter((f) => f.key.startsWith("nar/"));
  const narBytes = nars.reduce((n, f) => n + f.size, 0);
  const unreadable = answer.result?.unreadable ?? [];
  const unreadableCount = answer.result?.unreadableCount ?? 0;
  if (opts.json) {
    const out = opts.dryRun
      ? { dryRun: true, paths, files, pathCount: paths.length, narCount: nars.length, narBytes, unreadableCount, unreadable }
      : { dryRun: false, result: answer.result ?? null, stats: answer.stats ?? null, paths, files };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }
  const lines: string[] = [];
  if (opts.dryRun) {
    lines.push(`would delete ${count(paths.length, "path")} and ${count(nars.length, "NAR")}, freeing ${formatBytes(narBytes)}:`);
    for (const p of paths) lines.push(`  ${p.path}${p.fileSize === null ? "" : `  (${formatBytes(p.fileSize)})`}`);
    for (const f of files) lines.push(`  ${f.key}  (${formatBytes(f.size)})`);
    lines.push("(dry run: nothing deleted)");
  } else {
    const r = answer.result;
    if (opts.verbose) for (const p of paths) lines.push(`deleted ${p.path}`);
    lines.push(
      r
        ? `deleted ${count(r.deletedPaths, "path")} and ${count(r.deletedNars, "NAR")}, freed ${formatBytes(r.freedBytes)}`
        : "nothing to do",
    );
    const s = answer.stats;
    if (s) lines.push(`the cache now holds ${count(s.paths, "path")}, ${count(s.narFiles, "NAR")} (${formatBytes(s.narBytes)})`);
  }
  if (unreadableCount > 0) {
    lines.push(`${count(unreadableCount, "document")} the cache keeps cannot be read, so no path and no NAR could be proven unused:`);
    for (const d of unreadable) lines.push(`  ${d.path === null ? d.key : `${d.path} (${d.key})`}: ${d.reason}`);
    if (unreadableCount > unreadable.length) lines.push(`  … and ${(unreadableCount - unreadable.length).toLocaleString("en")} more`);
  }
  process.stderr.write(`${lines.join("\n")}\n`);
}
