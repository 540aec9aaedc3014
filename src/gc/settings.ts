// Retention settings (Worker vars), parsed and checked once per Env by env.ts:
//
// | Env name                 | Default | Meaning                                                  |
// |--------------------------|---------|----------------------------------------------------------|
// | GC_RETENTION_DAYS        | 30      | a path is kept this many days after its last push (a     |
// |                          |         | decimal; 0 keeps only pinned closures and uploads in      |
// |                          |         | flight); "off": the cron trigger never collects           |
// | GC_NAR_GRACE_HOURS       | 24      | a NAR no narinfo points to is kept this long after its    |
// |                          |         | upload, so a push in progress never loses its NAR         |
// | GC_UPLOAD_WINDOW_SECONDS | 60      | how long a collection waits between announcing what it    |
// |                          |         | will delete and looking again (the fence, gc/fence.ts);   |
// |                          |         | uploads must write within half of it                      |
// | GC_INTERVAL_HOURS        | 24      | the cron trigger starts a collection this often           |

import { fail } from "../errors.ts";

export interface GcSettings {
  /** Paths pushed within this many ms are young; null: no automatic collection. */
  retentionMs: number | null;
  /** Unreferenced NARs uploaded within this many ms are kept. */
  narGraceMs: number;
  /** The fence wait (ms); uploads must write their narinfo within half of it. */
  uploadWindowMs: number;
  /** How often the cron trigger starts a collection (ms). */
  intervalMs: number;
}

/** The vars read here (optional: absent ones take the defaults). */
export interface GcVars {
  GC_RETENTION_DAYS?: string;
  GC_NAR_GRACE_HOURS?: string;
  GC_UPLOAD_WINDOW_SECONDS?: string;
  GC_INTERVAL_HOURS?: string;
}

const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;

/**
 * A month: long enough that a project pushing weekly keeps everything it still uses, short
 * enough that a free 10 GB bucket does not fill with every past build.
 */
export const DEFAULT_RETENTION_DAYS = 30;
/**
 * A day: far longer than any upload (a multi-gigabyte NAR on a slow line, a resumed
 * multipart upload) takes between its NAR and its narinfo.
 */
export const DEFAULT_NAR_GRACE_HOURS = 24;
/**
 * A minute: a narinfo upload is a handful of small R2 calls (well under a second, a few
 * seconds with 900 references); uploads give up after half of this, which also covers
 * clock differences between Cloudflare machines. The cron trigger ticks once a minute, so
 * the wait costs nothing there.
 */
export const DEFAULT_UPLOAD_WINDOW_SECONDS = 60;
/** A day: daily collections keep the bucket near its steady size. */
export const DEFAULT_INTERVAL_HOURS = 24;

/** Shortest upload window: below a second, ordinary upload latency would trip it. */
const MIN_UPLOAD_WINDOW_SECONDS = 1;
/**
 * The window a writer that does not know the settings (a background copy) must assume:
 * the shortest any deployment may set, so it is safe whatever the setting.
 */
export const MIN_UPLOAD_WINDOW_MS = MIN_UPLOAD_WINDOW_SECONDS * 1000;

function number(name: string, value: string | undefined, fallback: number, min: number): number {
  const text = (value ?? "").trim();
  if (text === "") return fallback;
  if (!/^\d{1,9}(\.\d{1,6})?$/.test(text) || Number(text) < min) {
    throw fail("misconfigured", `${name} must be a number of at least ${min} (e.g. ${fallback})`);
  }
  return Number(text);
}

export function parseGcSettings(env: GcVars): GcSettings {
  const retention = (env.GC_RETENTION_DAYS ?? "").trim().toLowerCase();
  return {
    retentionMs: retention === "off" ? null : number("GC_RETENTION_DAYS", env.GC_RETENTION_DAYS, DEFAULT_RETENTION_DAYS, 0) * DAY_MS,
    narGraceMs: number("GC_NAR_GRACE_HOURS", env.GC_NAR_GRACE_HOURS, DEFAULT_NAR_GRACE_HOURS, 0) * HOUR_MS,
    uploadWindowMs:
      number("GC_UPLOAD_WINDOW_SECONDS", env.GC_UPLOAD_WINDOW_SECONDS, DEFAULT_UPLOAD_WINDOW_SECONDS, MIN_UPLOAD_WINDOW_SECONDS) * 1000,
    intervalMs: number("GC_INTERVAL_HOURS", env.GC_INTERVAL_HOURS, DEFAULT_INTERVAL_HOURS, 0.01) * HOUR_MS,
  };
}
