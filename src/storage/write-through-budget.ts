// The daily budget of write-through (upstream/write-through.ts): how many bytes and objects
// copies started by reads may store per UTC day, counted in one small object,
//
//   _aggregate/write-through-budget.json   {"day": "YYYY-MM-DD", "bytes": n, "objects": n}
//
// A copy reserves its bytes and objects before it stores anything: read the counters (a
// document of an earlier day counts as zero), refuse when the reservation would pass a
// limit, else write the new counters conditionally on the etag that was read (or on the
// key being absent). A lost race re-reads and tries again, a bounded number of times, so
// concurrent reservations can never add up to more than the limits; a copy that keeps
// losing is simply not made now (a later read starts it again). Reservations are not
// given back when a copy then fails: the budget bounds what reads can make the Worker
// attempt, which is what it is for.
//
// No request path maps to a key starting with "_" (storage/keys.ts), so the counters can
// neither be read nor written over HTTP. R2 failures become `storage_unavailable`.

import { storageUnavailable } from "./bucket.ts";

/** Where the counters live. */
export const WRITE_THROUGH_BUDGET_KEY = "_aggregate/write-through-budget.json";

/**
 * Attempts after a lost race. Races come from simultaneous misses, each an anonymous read
 * starting a copy; a few re-reads ride out such a burst, and each costs two R2 operations
 * of the copy's own budget, so the bound also bounds what a burst can cost.
 */
export const RESERVE_ATTEMPTS = 5;

/** R2 operations one reservation attempt makes (a read and a conditional write). */
export const RESERVE_ATTEMPT_OPERATIONS = 2;

/** Bytes and objects: a limit, a reservation or a day's usage. */
export interface Amount {
  bytes: number;
  objects: number;
}

/** What has been reserved on one UTC day. */
export interface Usage extends Amount {
  /** `YYYY-MM-DD`, UTC. */
  day: string;
}

export type Reservation =
  /** Reserved; `usage` includes it. */
  | { kind: "reserved"; usage: Usage }
  /** The reservation does not fit in what is left today; nothing changed. */
  | { kind: "spent"; usage: Usage }
  /** Lost every race, or the caller's operation budget ran out; nothing reserved. */
  | { kind: "contended" };

/** The UTC day of a time (ms), as the document names it. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function count(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** The counters in `text`, or null when it is not such a document. */
export function parseUsage(text: string): Usage | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof doc !== "object" || doc === null) return null;
  const { day, bytes, objects } = doc as Partial<Record<keyof Usage, unknown>>;
  if (typeof day !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(day) || !count(bytes) || !count(objects)) return null;
  return { day, bytes, objects };
}

export function formatUsage(usage: Usage): string {
  return JSON.stringify({ day: usage.day, bytes: usage.bytes, objects: usage.objects });
}

/** Today's counters and the etag to write them back against (null: no document). */
async function read(bucket: R2Bucket, today: string): Promise<{ usage: Usage; etag: string | null }> {
  let stored: { text: string; etag: string } | null;
  try {
    const obj = await bucket.get(WRITE_THROUGH_BUDGET_KEY);
    stored = obj === null ? null : { text: await obj.text(), etag: obj.etag };
  } catch (err) {
    return storageUnavailable(err);
  }
  const zero: Usage = { day: today, bytes: 0, objects: 0 };
  if (stored === null) return { usage: zero, etag: null };
  const usage = parseUsage(stored.text);
  if (usage === null) {
    // Only this module writes the key; should it ever be damaged, today starts over
    // (once: the next write replaces it) rather than write-through stopping for good.
    console.error(`${WRITE_THROUGH_BUDGET_KEY} is not a budget document; counting today from zero`);
    return { usage: zero, etag: stored.etag };
  }
  return { usage: usage.day === today ? usage : zero, etag: stored.etag };
}

/** What has been reserved today (zero when nothing has). One R2 read. */
export async function usageOn(bucket: R2Bucket, now: number): Promise<Usage> {
  return (await read(bucket, dayOf(now))).usage;
}

/** True when nothing more fits today: a limit is reached. */
export function isSpent(usage: Amount, limits: Amount): boolean {
  return usage.bytes >= limits.bytes || usage.objects >= limits.objects;
}

/**
 * Reserves `want` out of today's `limits`. `take(n)` is asked before each attempt for
 * its R2 operations (the caller's operation budget); when it says no, nothing is
 * reserved.
 */
export async function reserve(
  bucket: R2Bucket,
  want: Amount,
  limits: Amount,
  now: number,
  take: (operations: number) => boolean = () => true,
): Promise<Reservation> {
  const today = dayOf(now);
  for (let attempt = 0; attempt < RESERVE_ATTEMPTS; attempt++) {
    if (!take(RESERVE_ATTEMPT_OPERATIONS)) return { kind: "contended" };
    const { usage, etag } = await read(bucket, today);
    const next: Usage = { day: today, bytes: usage.bytes + want.bytes, objects: usage.objects + want.objects };
    if (next.bytes > limits.bytes || next.objects > limits.objects) return { kind: "spent", usage };
    let written: R2Object | null;
    try {
      written = await bucket.put(WRITE_THROUGH_BUDGET_KEY, formatUsage(next), {
        onlyIf: etag === null ? { etagDoesNotMatch: "*" } : { etagMatches: etag },
        httpMetadata: { contentType: "application/json" },
      });
    } catch (err) {
      return storageUnavailable(err);
    }
    if (written !== null) return { kind: "reserved", usage: next };
  }
  return { kind: "contended" };
}
