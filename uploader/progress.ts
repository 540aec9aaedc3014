// Progress and summary output of a push, on stderr (stdout is kept for --json).
//
// Byte counts come from `counter()`, a pass-through stream the push pipeline wraps around
// its streams; the upload code itself knows nothing about progress. On a terminal one live
// line is redrawn (paths done/total, bytes, speed); elsewhere (CI logs, pipes) each
// finished path is one plain line, so logs stay readable. The summary ends every push.
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

export interface ProgressOptions {
  stream?: NodeJS.WriteStream;
  /** Redraw a live line (default: when the stream is a terminal and CI is not set). */
  live?: boolean;
  /** Also print cached/skipped paths and retries. */
  verbose?: boolean;
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
  #samples: Array<[time: number, read: number, sent: number]> = [];
  #timer: NodeJS.Timeout | undefined;
  #lineShown = false;

  constructor(options: ProgressOptions = {}) {
    this.#out = options.stream ?? process.stderr;
    this.#live = options.live ?? (Boolean(this.#out.isTTY) && !process.env.CI);
    this.#verbose = options.verbose ?? false;
  }

  /** A plain message, kept above the live line. */
  log(message: string): void {
    this.#clearLine();
    this.#out.write(`${message}\n`);
    this.#draw();
  }

  /** A message shown only with --verbose. */
  detail(message: string): void {
    if (this.#verbose) this.log(message);
  }

  retry(event: RetryEvent): void {
    this.detail(`retrying ${event.method} ${event.url} in ${(event.delayMs / 1000).toFixed(1)} s (attempt ${event.attempt}: ${event.reason})`);
  }

  /** The upload phase begins with this many paths to upload. */
  begin(total: number): void {
    this.#total = total;
    this.#samples = [[Date.now(), 0, 0]];
    if (this.#live && total > 0) {
      this.#timer = setInterval(() => this.#draw(), REDRAW_MS);
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
    switch (report.outcome) {
      case "uploaded":
        if (!this.#live || this.#verbose) {
          this.log(`uploaded ${report.path} (${formatBytes(report.narSize)} -> ${formatBytes(report.fileSize ?? 0)})`);
        }
        break;
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

  #draw(): void {
    if (!this.#timer) return;
    const now = Date.now();
    this.#samples.push([now, this.#narBytes, this.#sentBytes]);
    while (this.#samples.length > 2 && now - this.#samples[0]![0] > SPEED_WINDOW_MS) this.#samples.shift();
    const [t0, read0, sent0] = this.#samples[0]!;
    const rate = (bytes: number): string => formatBytes(now > t0 ? (bytes * 1000) / (now - t0) : 0);
    const current = [...this.#current].map((p) => p.slice(p.lastIndexOf("/") + 1 + 33));
    let line =
      `[${this.#done}/${this.#total}] ${formatBytes(this.#narBytes)} read (${rate(this.#narBytes - read0)}/s), ` +
      `${formatBytes(this.#sentBytes)} sent (${rate(this.#sentBytes - sent0)}/s)`;
    if (current.length > 0) line += `  ${current.join(" ")}`;
    const width = this.#out.columns || 80;
    if (line.length > width - 1) line = `${line.slice(0, width - 2)}…`;
    this.#out.write(`\r\x1b[K${line}`);
    this.#lineShown = true;
  }
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
