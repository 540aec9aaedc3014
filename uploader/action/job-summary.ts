// The job summary the action writes (GitHub shows it on the run's page): Markdown built
// from the uploader's `push --json` result, or a short note saying why nothing was pushed.
import { formatBytes, type PathReport, type PushSummary } from "../progress.ts";

/** Paths listed by name per outcome; the rest are counted, so a huge push stays readable. */
const MAX_LISTED_PATHS = 50;

const HEADING = "### nix-edge-cache";

export interface PushReport {
  cacheUrl: string;
  /** The uploader's result; null when it stopped before it could report one. */
  summary: PushSummary | null;
  /** Wall-clock seconds of the whole step (closure query and plan included). */
  seconds: number;
  compression: string;
  /** Why the push did not complete, when it did not. */
  problem?: string | undefined;
  /** How the paths were found, said under the heading (e.g. pushed as builds finished). */
  how?: string | undefined;
}

export function pushSummaryMarkdown(r: PushReport): string {
  const lines = [HEADING, ""];
  const s = r.summary;
  if (r.problem) lines.push(`> [!WARNING]`, `> Push to ${r.cacheUrl} incomplete: ${oneLine(r.problem)}`, "");
  if (s) {
    lines.push(`Pushed to ${r.cacheUrl} in ${r.seconds.toFixed(1)} s${r.how ? `, ${r.how}` : ""}.`, "");
    lines.push("| Paths | |", "|---|--:|");
    lines.push(`| uploaded | ${s.uploaded} |`);
    lines.push(`| already cached | ${s.alreadyCached} |`);
    lines.push(`| skipped (upstream) | ${s.skippedUpstream} |`);
    lines.push(`| failed | ${s.failed} |`);
    if (s.blocked > 0) lines.push(`| not uploaded (a dependency failed) | ${s.blocked} |`);
    lines.push("");
    if (s.uploaded > 0) {
      lines.push("| Bytes | |", "|---|--:|");
      lines.push(`| NARs uploaded | ${formatBytes(s.narBytes)} |`);
      lines.push(`| sent (${r.compression}) | ${formatBytes(s.fileBytes)} |`);
      lines.push(`| compression ratio | ${compressionRatio(s)} |`);
      lines.push(`| upload time | ${s.seconds.toFixed(1)} s |`);
      lines.push("");
    }
    lines.push(...pathList("failed", s.paths.filter((p) => p.outcome === "failed" || p.outcome === "blocked"), true));
    lines.push(...pathList("uploaded", s.paths.filter((p) => p.outcome === "uploaded"), false));
  } else if (!r.problem) {
    lines.push(`Nothing pushed to ${r.cacheUrl}.`, "");
  }
  return `${lines.join("\n")}\n`;
}

/** A note for the cases where the action decided not to push at all. */
export function noteMarkdown(text: string): string {
  return `${HEADING}\n\n${text}\n`;
}

/** "2.85× (35 % of the NAR size)"; NAR bytes over sent bytes, as compressors report it. */
export function compressionRatio(s: Pick<PushSummary, "narBytes" | "fileBytes">): string {
  if (s.fileBytes === 0 || s.narBytes === 0) return "n/a";
  return `${(s.narBytes / s.fileBytes).toFixed(2)}× (${Math.round((100 * s.fileBytes) / s.narBytes)} % of the NAR size)`;
}

function pathList(what: string, paths: PathReport[], withErrors: boolean): string[] {
  if (paths.length === 0) return [];
  const shown = paths.slice(0, MAX_LISTED_PATHS).map((p) => {
    const size = p.outcome === "uploaded" ? ` (${formatBytes(p.narSize)} → ${formatBytes(p.fileSize ?? 0)})` : "";
    const why = withErrors && p.error ? `: ${oneLine(p.error)}` : "";
    return `- \`${p.path}\`${size}${why}`;
  });
  if (paths.length > shown.length) shown.push(`- … and ${paths.length - shown.length} more`);
  return [`<details><summary>${paths.length} ${what}</summary>`, "", ...shown, "", "</details>", ""];
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}
