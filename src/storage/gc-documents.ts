// The collector's small documents, one D1 row each (migrations/0006_gc_documents.sql):
//
//   state        the collection in progress and the last one (gc/run-state.ts)
//   dry-run      the same for dry runs, which never touch anything else
//   stats        counts from the last collection (gc/stats.ts)
//   index-stats  the index's last count of paths and sizes, reused for a while (gc/stats.ts)
//
// A document is rewritten as a whole. Writes that must not lose a race (the collector's
// lease and commits) name the version they read and change nothing when another write came
// first, as conditional R2 puts on an etag did when these were objects under `_gc/`.
//
// Caches from before the table kept these as R2 objects under `_gc/`; the first collection
// batch that finds no state row moves the state and the statistics here (a dry run in
// progress restarts, the count is made again) and writes the state row even when there was
// nothing to move, so it happens once.

import { deleteKeys, getTextObject, LEGACY_DROPPED_KEYS, LEGACY_STATE_KEY, LEGACY_STATS_KEY } from "./gc-store.ts";
import { d1 } from "./path-index.ts";

export type GcDocumentName = "state" | "dry-run" | "stats" | "index-stats";

/** A document's text and the version a conditional write names. */
export interface GcDocument {
  text: string;
  version: number;
}

/** What a write requires of the stored document: this version, or none stored yet. */
export type WriteCondition = { ifVersion: number } | { ifAbsent: true } | Record<string, never>;

/** R2 calls and D1 queries adoptLegacyDocuments makes at most. */
export const ADOPTION_OPERATIONS = 4;

/** The documents with these names that exist (one query). */
export async function readGcDocuments(db: D1Database, names: readonly GcDocumentName[]): Promise<Map<GcDocumentName, GcDocument>> {
  const rows = await d1(() =>
    db
      .prepare("SELECT name, body, version FROM gc_documents WHERE name IN (SELECT value FROM json_each(?1))")
      .bind(JSON.stringify(names))
      .all<{ name: GcDocumentName; body: string; version: number }>(),
  );
  return new Map(rows.results.map((r) => [r.name, { text: r.body, version: r.version }]));
}

/** One document, or null. */
export async function readGcDocument(db: D1Database, name: GcDocumentName): Promise<GcDocument | null> {
  return (await readGcDocuments(db, [name])).get(name) ?? null;
}

/** Where a claim (readClaiming) finds and sets a document's lease: JSON paths into its body. */
export interface LeaseFields {
  /** The lease's end (ms since the epoch, or null): the claim sets it when it is past. */
  until: string;
  /** A field that must hold an object for the claim to be made (the work in progress). */
  work: string;
}

/** What readClaiming found, and the version it wrote when it took the lease (else null). */
export interface Claimed {
  document: GcDocument | null;
  leased: number | null;
}

/**
 * Reads a document and, in the same round trip (one D1 batch, one transaction), takes its
 * lease when it has work in progress and its lease has ended by `now`: the lease's field
 * becomes `until` and the version moves on, as a conditional write on the version read
 * would. `document` is the document as it was before.
 */
export async function readClaiming(db: D1Database, name: GcDocumentName, fields: LeaseFields, now: number, until: number): Promise<Claimed> {
  const [read, claim] = await d1(() =>
    db.batch<{ body: string; version: number }>([
      db.prepare("SELECT body, version FROM gc_documents WHERE name = ?1").bind(name),
      db
        .prepare(
          `UPDATE gc_documents SET body = json_set(body, ?2, ?5), version = version + 1
             WHERE name = ?1 AND json_type(body, ?3) = 'object' AND coalesce(body ->> ?2, 0) <= ?4 RETURNING version`,
        )
        .bind(name, fields.until, fields.work, now, until),
    ]),
  );
  const row = read?.results[0];
  return { document: row === undefined ? null : { text: row.body, version: row.version }, leased: claim?.results[0]?.version ?? null };
}

/**
 * Writes a document and returns its new version; null when the condition failed (another
 * write came first), in which case nothing changed.
 */
export async function writeGcDocument(db: D1Database, name: GcDocumentName, text: string, condition: WriteCondition = {}): Promise<number | null> {
  const statement =
    "ifVersion" in condition
      ? db.prepare("UPDATE gc_documents SET body = ?2, version = version + 1 WHERE name = ?1 AND version = ?3 RETURNING version").bind(name, text, condition.ifVersion)
      : "ifAbsent" in condition
        ? db.prepare("INSERT INTO gc_documents (name, body, version) VALUES (?1, ?2, 1) ON CONFLICT DO NOTHING RETURNING version").bind(name, text)
        : db
            .prepare("INSERT INTO gc_documents (name, body, version) VALUES (?1, ?2, 1) ON CONFLICT (name) DO UPDATE SET body = excluded.body, version = version + 1 RETURNING version")
            .bind(name, text);
  const row = await d1(() => statement.first<{ version: number }>());
  return row === null ? null : row.version;
}

/**
 * A finished collection's statistics, written in one query together with, when it deleted
 * paths, the removal of the index's kept counts (the statistics count again).
 */
export async function recordCollection(db: D1Database, statsText: string, dropIndexCounts: boolean): Promise<void> {
  const write = db
    .prepare("INSERT INTO gc_documents (name, body, version) VALUES ('stats', ?1, 1) ON CONFLICT (name) DO UPDATE SET body = excluded.body, version = version + 1")
    .bind(statsText);
  await d1(() => db.batch(dropIndexCounts ? [write, db.prepare("DELETE FROM gc_documents WHERE name = 'index-stats'")] : [write]));
}

/**
 * Moves the R2 documents of a cache from before the table into it: `_gc/state.json` (or
 * `emptyState` when there is none) and `_gc/stats.json`, then deletes the old objects. Rows
 * written meanwhile win. Returns the state row as it now is.
 */
export async function adoptLegacyDocuments(db: D1Database, bucket: R2Bucket, emptyState: string): Promise<GcDocument> {
  const [state, stats] = await Promise.all([getTextObject(bucket, LEGACY_STATE_KEY), getTextObject(bucket, LEGACY_STATS_KEY)]);
  const insert = "INSERT INTO gc_documents (name, body, version) VALUES (?1, ?2, 1) ON CONFLICT DO NOTHING";
  const statements = [db.prepare(insert).bind("state", state?.text ?? emptyState)];
  if (stats !== null) statements.push(db.prepare(insert).bind("stats", stats.text));
  statements.push(db.prepare("SELECT body, version FROM gc_documents WHERE name = 'state'"));
  const results = await d1(() => db.batch<{ body: string; version: number }>(statements));
  if (state !== null || stats !== null) await deleteKeys(bucket, [LEGACY_STATE_KEY, LEGACY_STATS_KEY, ...LEGACY_DROPPED_KEYS]);
  const row = results.at(-1)!.results[0]!;
  return { text: row.body, version: row.version };
}
