// Progress and summary output of a push, on stderr (stdout is kept for --json).
//
// Byte counts come from `counter()`, a pass-through stream the push pipeline wraps around
// its streams; the upload code itself knows nothing about progress. On a terminal one live
// line is redrawn (paths done/total, percent, bytes, speed, ETA) under a ✓ line per
// uploaded path; elsewhere (CI logs, pipes) each finished path is one plain line, and the
// same status is printed as a heartbeat when nothing else was for a while, so a long
// upload never looks stuck. The summary ends every push.
//
// Percent and speed count work in NAR bytes: each path's NAR is read (and compressed) and
// then sent, so the work is twice the NARs' size, and bytes sent count as the NAR bytes
// they carry (compressed bytes over the compression ratio seen so far). One speed for both
// halves: it does not fall to 0 while a large NAR is only being sent.
import { Transform } from "node:stream";
import type { RetryEvent } from "./http.ts";

/** What became of one path of the closure. */
export type PathOutcome = "uploaded" | "cached" | "upstream" | "failed" | "blocked";

export interface PathReport {
  path: string;
  outcome: PathOutcome;
  narSize: number;
  /** Compressed size, for uploaded paths. */
  fileSize?: number;
  /**
   * Request body bytes sent for uploaded paths, retries included: less than fileSize when
   * the cache had the NAR or some of its parts already (a resumed upload).
   */
  sentBytes?: number;
  /** Why it failed, or which dependency blocked it. */
  error?: string;
}

export interface PushSummary {
  uploaded: number;
  alreadyCached: number;
  skippedUpstream: number;
  failed: number;
  blocked: number;
  /** NAR bytes of the uploaded paths, before compression. */
  narBytes: number;
  /** Bytes of the uploaded paths after compression. */
  fileBytes: number;
  /** Request body bytes actually sent for them (see PathReport.sentBytes); set by a push. */
  sentBytes?: number;
  seconds: number;
  paths: PathReport[];
}

/** How often the live line is redrawn. */
const REDRAW_MS = 200;
/** The live line's speeds are averaged over this window, so they follow changes but not jitter. */
const SPEED_WINDOW_MS = 3_000;
/**
 * Without a terminal, the status is printed when nothing else was for this long: CI
 * systems kill jobs silent for minutes, and people reading a log want to see it move.
 * Under 30 s, the longest gap a reader should wait.
 */
export const HEARTBEAT_MS = 20_000;
/** Compressed/NAR size assumed until the first path has been compressed. */
const DEFAULT_RATIO = 0.5;

export interface ProgressOptions {
  stream?: NodeJS.WriteStream;
  /** Redraw a live line (default: when the stream is a terminal and CI is not set). */
  live?: boolean;
  /** Also print cached/skipped paths and retries. */
  verbose?: boolean;
  /** Heartbeat interval without a live line (default HEARTBEAT_MS). */
  heartbeatMs?: number;
}

export class Progress {
  readonly #out: NodeJS.WriteStream;
  readonly #live: boolean;
  readonly #verbose: boolean;
  #total = 0;
  #done = 0;
  #narBytes = 0;
  #sentBytes = 0;
  #current = new Set<string>();
  #samples: Array<[time: number, work: number]> = [];
  #timer: NodeJS.Timeout | undefined;
  #lineShown = false;
  readonly #heartbeatMs: number;
  #lastWrite = Date.now();
  /** NAR bytes of the paths to upload (0: unknown, no percent). */
  #totalNar = 0;
  /** NAR and compressed bytes of finished uploads, for the compression ratio. */
  #finishedNar = 0;
  #finishedFile = 0;
  /** Work of finished paths that was not counted while it ran (bytes the cache had: resumed). */
  #credited = 0;

  constructor(options: ProgressOptions = {}) {
    this.#out = options.stream ?? process.stderr;
    this.#live = options.live ?? (Boolean(this.#out.isTTY) && !process.env.CI);
    this.#verbose = options.verbose ?? false;
    this.#heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
  }

  /** A plain message, kept above the live line. */
  log(message: string): void {
    this.#clearLine();
    this.#out.write(`${message}\n`);
    this.#lastWrite = Date.now();
    this.#draw();
  }

  /** A message shown only with --verbose. */
  detail(message: string): void {
    if (this.#verbose) this.log(message);
  }

  retry(event: RetryEvent): void {
    this.detail(`retrying ${event.method} ${event.url} in ${(event.delayMs / 1000).toFixed(1)} s (attempt ${event.attempt}: ${event.reason})`);
  }

  /** The upload phase begins with this many paths to upload, of `narBytes` NAR bytes in all. */
  begin(total: number, narBytes = 0): void {
    this.#total = total;
    this.#totalNar = narBytes;
    this.#samples = [[Date.now(), 0]];
    this.#lastWrite = Date.now();
    if (total > 0 && this.#live) {
      this.#timer = setInterval(() => this.#draw(), REDRAW_MS);
      this.#timer.unref();
    } else if (total > 0) {
      this.#timer = setInterval(() => this.#heartbeat(), Math.min(this.#heartbeatMs, 1000));
      this.#timer.unref();
    }
  }

  started(path: string): void {
    this.#current.add(path);
  }

  /** Counts bytes flowing through: "nar" for NAR bytes read, "sent" for bytes uploaded. */
  counter(kind: "nar" | "sent"): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, callback) => {
        if (kind === "nar") this.#narBytes += chunk.length;
        else this.#sentBytes += chunk.length;
        callback(null, chunk);
      },
    });
  }

  finished(report: PathReport): void {
    this.#current.delete(report.path);
    if (report.outcome === "uploaded" || report.outcome === "failed" || report.outcome === "blocked") this.#done++;
    if (report.outcome === "uploaded" && report.fileSize !== undefined) {
      // Bytes the cache already had were never sent: count them as done now.
      const ratio = this.#ratio();
      this.#finishedNar += report.narSize;
      this.#finishedFile += report.fileSize;
      this.#credited += Math.max(0, report.fileSize - (report.sentBytes ?? report.fileSize)) / ratio;
    }
    switch (report.outcome) {
      case "uploaded": {
        const sizes = `${formatBytes(report.narSize)} -> ${formatBytes(report.fileSize ?? 0)}`;
        const resumed = report.sentBytes !== undefined && report.fileSize !== undefined && report.sentBytes < report.fileSize
          ? `, ${formatBytes(report.fileSize - report.sentBytes)} already in the cache`
          : "";
        this.log(this.#live ? `✓ ${report.path} (${sizes}${resumed})` : `uploaded ${report.path} (${sizes}${resumed})`);
        break;
      }
      case "failed":
        this.log(`failed   ${report.path}: ${report.error ?? "unknown error"}`);
        break;
      case "blocked":
        this.log(`skipped  ${report.path}: ${report.error ?? "a dependency failed"}`);
        break;
      case "cached":
        this.detail(`cached   ${report.path}`);
        break;
      case "upstream":
        this.detail(`upstream ${report.path}`);
        break;
    }
  }

  /** Stops the live line and prints the summary. */
  end(summary: PushSummary): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#clearLine();
    this.#out.write(formatSummary(summary));
  }

  #clearLine(): void {
    if (this.#lineShown) {
      this.#out.write("\r\x1b[K");
      this.#lineShown = false;
    }
  }

  /** Compressed bytes per NAR byte, from the paths finished so far. */
  #ratio(): number {
    return this.#finishedNar > 0 && this.#finishedFile > 0 ? this.#finishedFile / this.#finishedNar : DEFAULT_RATIO;
  }

  /** Work done, in NAR bytes: read, plus sent as the NAR bytes it carries, plus credits. */
  #work(): number {
    return this.#narBytes + this.#sentBytes / this.#ratio() + this.#credited;
  }

  /** The status: paths, percent, bytes, speed, ETA, what is in progress. */
  status(now = Date.now()): string {
    const work = this.#work();
    this.#samples.push([now, work]);
    while (this.#samples.length > 2 && now - this.#samples[0]![0] > SPEED_WINDOW_MS) this.#samples.shift();
    const [t0, work0] = this.#samples[0]!;
    const speed = now > t0 ? ((work - work0) * 1000) / (now - t0) / 2 : 0;
    const parts = [`[${this.#done}/${this.#total}]`];
    const total = 2 * this.#totalNar;
    if (total > 0) {
      const done = Math.min(work, total);
      parts.push(`${Math.floor((100 * done) / total)} %`, `${formatBytes(done / 2)} of ${formatBytes(this.#totalNar)}`);
      parts.push(`${formatBytes(speed)}/s`, speed > 0 ? `ETA ${formatDuration((total - done) / 2 / speed)}` : "ETA -");
    } else {
      parts.push(`${formatBytes(this.#narBytes)} read`, `${formatBytes(speed)}/s`);
    }
    parts.push(`${formatBytes(this.#sentBytes)} sent`);
    let line = `${parts[0]} ${parts.slice(1).join(" · ")}`;
    const current = [...this.#current].map((p) => p.slice(p.lastIndexOf("/") + 1 + 33));
    if (current.length > 0) line += `  ${current.join(" ")}`;
    return line;
  }

  #draw(): void {
    if (!this.#timer || !this.#live) return;
    let line = this.status();
    const width = this.#out.columns || 80;
    if (line.length > width - 1) line = `${line.slice(0, width - 2)}…`;
    this.#out.write(`\r\x1b[K${line}`);
    this.#lineShown = true;
  }

  /** Without a live line: the status, when nothing was printed for a heartbeat. */
  #heartbeat(): void {
    if (Date.now() - this.#lastWrite >= this.#heartbeatMs) this.log(this.status());
  }
}

/** 75 → "1:15", 3725 → "1:02:05". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "-";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** The human summary printed at the end of a push. */
export function formatSummary(s: PushSummary): string {
  const lines = [
    `${s.uploaded} uploaded, ${s.alreadyCached} already cached, ${s.skippedUpstream} skipped (upstream), ` +
      `${s.failed} failed${s.blocked > 0 ? `, ${s.blocked} blocked by a failed dependency` : ""}`,
  ];
  if (s.uploaded > 0) {
    const ratio = s.narBytes > 0 ? ` (${((100 * s.fileBytes) / s.narBytes).toFixed(0)} %)` : "";
    const sent = s.sentBytes !== undefined && s.sentBytes !== s.fileBytes ? `, ${formatBytes(s.sentBytes)} sent` : "";
    lines.push(`${formatBytes(s.narBytes)} of NARs compressed to ${formatBytes(s.fileBytes)}${ratio}${sent}`);
  }
  lines.push(`done in ${s.seconds.toFixed(1)} s`);
  return `${lines.join("\n")}\n`;
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The summary of a push from its per-path reports. */
export function summarise(paths: PathReport[], seconds: number): PushSummary {
  const count = (o: PathReport["outcome"]): number => paths.filter((p) => p.outcome === o).length;
  const uploaded = paths.filter((p) => p.outcome === "uploaded");
  return {
    uploaded: uploaded.length,
    alreadyCached: count("cached"),
    skippedUpstream: count("upstream"),
    failed: count("failed"),
    blocked: count("blocked"),
    narBytes: uploaded.reduce((n, p) => n + p.narSize, 0),
    fileBytes: uploaded.reduce((n, p) => n + (p.fileSize ?? 0), 0),
    sentBytes: uploaded.reduce((n, p) => n + (p.sentBytes ?? 0), 0),
    seconds,
    paths,
  };
}
