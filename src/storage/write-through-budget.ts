// The daily budget of write-through (upstream/write-through.ts): how many bytes and objects
// copies started by reads may store per UTC day, counted in the D1 table `usage`
// (migrations/0003_usage.sql), one row per day.
//
// A copy reserves its bytes and objects before it stores anything, with one statement that
// adds them to today's row only while the sums stay within the limits (D1 runs statements
// one at a time, so concurrent reservations can never add up to more than the limits, and
// none is lost). Reservations are not given back when a copy then fails: the budget bounds
// what reads can make the Worker attempt, which is what it is for.
//
// Caches from before the table counted in the R2 object `_aggregate/write-through-budget.json`;
// it is no longer read (the day it is deployed, the count starts from zero) and can be deleted.

import { d1 } from "./path-index.ts";

const COUNTER = "write-through";

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
  /** The caller's operation budget ran out; nothing reserved. */
  | { kind: "contended" };

/** The UTC day of a time (ms). */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** What has been reserved today (zero when nothing has). One D1 query. */
export async function usageOn(db: D1Database, now: number): Promise<Usage> {
  const day = dayOf(now);
  const row = await d1(() => db.prepare("SELECT bytes, objects FROM usage WHERE counter = ?1 AND day = ?2").bind(COUNTER, day).first<Amount>());
  return { day, bytes: row?.bytes ?? 0, objects: row?.objects ?? 0 };
}

/** True when nothing more fits today: a limit is reached. */
export function isSpent(usage: Amount, limits: Amount): boolean {
  return usage.bytes >= limits.bytes || usage.objects >= limits.objects;
}

/**
 * Reserves `want` out of today's `limits`: one D1 query, two when it does not fit (the
 * second reads what is used, for the caller's message). `take(n)` is asked first for the
 * call (the caller's operation budget); when it says no, nothing is reserved.
 */
export async function reserve(db: D1Database, want: Amount, limits: Amount, now: number, take: (operations: number) => boolean = () => true): Promise<Reservation> {
  if (!take(1)) return { kind: "contended" };
  const day = dayOf(now);
  const row = await d1(() =>
    db
      .prepare(
        `INSERT INTO usage (counter, day, bytes, objects)
           SELECT ?1, ?2, ?3, ?4 WHERE ?3 <= ?5 AND ?4 <= ?6
         ON CONFLICT (counter, day) DO UPDATE SET bytes = bytes + excluded.bytes, objects = objects + excluded.objects
           WHERE bytes + excluded.bytes <= ?5 AND objects + excluded.objects <= ?6
         RETURNING bytes, objects`,
      )
      .bind(COUNTER, day, want.bytes, want.objects, limits.bytes, limits.objects)
      .first<Amount>(),
  );
  if (row !== null) return { kind: "reserved", usage: { day, bytes: row.bytes, objects: row.objects } };
  return { kind: "spent", usage: await usageOn(db, now) };
}
