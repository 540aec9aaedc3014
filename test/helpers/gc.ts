// Helpers for garbage collection tests inside workerd: store paths with chosen push times
// straight into the real local R2 bucket (through the storage module, as the upload route
// stores them), a clock the tests move, a bucket wrapper that counts R2 operations per
// batch, and a loop that runs batches until a collection is done.

import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { toHex } from "../../src/nix/encoding.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { formatPins, type Pins } from "../../src/gc/pins.ts";
import { runGcBatch, type GcProgress, type GcRequest } from "../../src/gc/collector.ts";
import type { GcSettings } from "../../src/gc/settings.ts";
import { PINS_KEY } from "../../src/storage/gc-store.ts";
import { narInfoKey } from "../../src/storage/keys.ts";
import { encodeNarInfoMeta } from "../../src/storage/narinfo-meta.ts";
import { putNarInfoObject } from "../../src/storage/narinfo-object.ts";
import type { TestPath } from "./worker.ts";

export const DAY_MS = 24 * 3600 * 1000;

/**
 * A clock the test moves. It starts an hour ahead of the real time, so objects the test
 * writes (which R2 stamps with the real time) are older than "now", as they would be.
 */
export class TestClock {
  now: number;
  constructor(offsetMs = 3600 * 1000) {
    this.now = Date.now() + offsetMs;
  }
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}

/** Settings for tests: 30 days retention, no NAR grace, no fence wait unless asked. */
export function gcSettings(overrides: Partial<GcSettings> = {}): GcSettings {
  return { retentionMs: 30 * DAY_MS, narGraceMs: 0, uploadWindowMs: 0, intervalMs: DAY_MS, ...overrides };
}

/** Stores a path's NAR and narinfo (with metadata saying it was pushed at `pushedAt`). */
export async function storePath(bucket: R2Bucket, p: TestPath, pushedAt: number): Promise<void> {
  await bucket.put(`nar/${p.fileName}`, p.file, { sha256: toHex(await sha256(p.file)) });
  await putNarInfoObject(bucket, narInfoKey(p.hash), formatNarInfo(p.info), encodeNarInfoMeta(p.info, pushedAt));
}

export async function setPins(bucket: R2Bucket, pins: Pins): Promise<void> {
  await bucket.put(PINS_KEY, formatPins(pins));
}

/** Counts the R2 calls made through it (one per call, as Cloudflare counts them). */
export class CountingBucket {
  count = 0;
  readonly bucket: R2Bucket;
  constructor(inner: R2Bucket) {
    const counter = this;
    this.bucket = new Proxy(inner, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          counter.count++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  }
}

export interface GcRunOptions {
  request?: Partial<GcRequest>;
  /** Called between batches (e.g. to push paths while the collection runs). */
  between?: (batch: number, progress: GcProgress) => Promise<void>;
  /** Called with each batch's own count of R2 operations (through a CountingBucket). */
  perBatch?: (operations: number, progress: GcProgress) => void;
  maxBatches?: number;
  /** Smaller batches (gc/collector.ts GcContext.limits). */
  limits?: { operations?: number; entries?: number };
}

/** Runs batches until the collection is done; a waiting batch moves the clock on. */
export async function collect(bucket: R2Bucket, settings: GcSettings, clock: TestClock, opts: GcRunOptions = {}): Promise<GcProgress[]> {
  const counting = new CountingBucket(bucket);
  const batches: GcProgress[] = [];
  let runId: string | undefined;
  for (let i = 0; i < (opts.maxBatches ?? 3000); i++) {
    const before = counting.count;
    const req: GcRequest = { dryRun: false, trigger: "manual", ...opts.request, ...(runId === undefined ? {} : { runId }) };
    if (runId !== undefined) delete req.cutoff;
    const progress = await runGcBatch({ bucket: counting.bucket, settings, clock: clock.read, ...(opts.limits ? { limits: opts.limits } : {}) }, req);
    opts.perBatch?.(counting.count - before, progress);
    batches.push(progress);
    runId ??= progress.run?.id;
    if (progress.status === "done" || progress.status === "idle") return batches;
    if (progress.status === "busy") throw new Error("a batch found the state leased in a single-caller test");
    if (progress.status === "waiting") clock.advance(progress.waitMs);
    await opts.between?.(i, progress);
  }
  throw new Error("the collection did not finish");
}

/** Every key in the bucket outside `_gc/`. */
export async function cacheKeys(bucket: R2Bucket): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await bucket.list(cursor === undefined ? {} : { cursor });
    for (const o of page.objects) if (!o.key.startsWith("_gc/")) out.push(o.key);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return out;
}
