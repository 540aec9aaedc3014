// The D1 bookkeeping of multipart uploads (migrations/0005_multipart.sql): one row per
// upload in progress, in its writer's slot, and one per part R2 has received for it. Only
// storage/multipart.ts calls this; it keeps the R2 side (the uploads and assembled objects)
// in step with these rows.
//
// Each guarantee is one statement, since D1 runs statements one at a time:
//   - a slot is claimed by inserting its row (writer and slot are the primary key, slots
//     below MAX_UPLOADS_PER_WRITER), and only while the writer has no young upload of the
//     same NAR (or name): racing starts can neither exceed the bound nor both begin one;
//   - a part row is written only while its upload still holds the slot, so a part that
//     arrives after its upload ended leaves nothing behind;
//   - an upload's rows go in one batch (a transaction), parts and upload together, and only
//     if the slot still holds that very upload.

import { d1 } from "./path-index.ts";
import type { UploadSlot } from "./keys.ts";

/** An unfinished upload the Worker tracks, in its writer's slot. */
export interface TrackedUpload extends UploadSlot {
  /** The NAR's file name, `<filehash52>.nar[.ext]`, when the upload was started for it; null when the client names it at completion. */
  nar: string | null;
  /** The client's name for an upload whose NAR it names at completion; null when `nar` is set. */
  name: string | null;
  /** R2's id of the multipart upload at the slot's assembled key. */
  uploadId: string;
  /** Every part but the last has this many bytes. */
  partSize: number;
  /** The whole file's size and its number of parts: set when `nar` is, known at completion otherwise. */
  size: number | null;
  partCount: number | null;
  /** Start time, ms since the epoch. */
  started: number;
}

/** A part R2 has received, as recorded. */
export interface RecordedPart {
  partNumber: number;
  size: number;
  etag: string;
}

/** What a start looks up: the writer's uploads of one NAR (`nar`) or of one client name (`name`). */
export type UploadKey = { nar: string; name: null } | { nar: null; name: string };

interface UploadRow {
  slot: number;
  nar: string | null;
  name: string | null;
  upload_id: string;
  size: number | null;
  part_size: number;
  part_count: number | null;
  started: number;
}

interface PartRow {
  slot: number;
  part_number: number;
  etag: string;
  size: number;
}

const UPLOAD_COLUMNS = "slot, nar, name, upload_id, size, part_size, part_count, started";

function uploadOf(writer: string, r: UploadRow): TrackedUpload {
  return { writer, slot: r.slot, nar: r.nar, name: r.name, uploadId: r.upload_id, partSize: r.part_size, size: r.size, partCount: r.part_count, started: r.started };
}

function partOf(r: PartRow): RecordedPart {
  return { partNumber: r.part_number, size: r.size, etag: r.etag };
}

/** The parts of the upload in each slot (only those of the upload holding it), in part order. */
const PARTS_OF_UPLOADS = `SELECT p.slot, p.part_number, p.etag, p.size FROM multipart_parts p
  JOIN multipart_uploads u ON u.writer = p.writer AND u.slot = p.slot AND u.upload_id = p.upload_id`;

/** The writer's uploads under `key`, newest first, with their parts, and the slots the writer's uploads hold. One D1 call. */
export async function uploadsOf(
  db: D1Database,
  writer: string,
  key: UploadKey,
): Promise<{ uploads: Array<{ upload: TrackedUpload; parts: RecordedPart[] }>; taken: Set<number> }> {
  const [uploads, parts, slots] = await d1(() =>
    db.batch([
      db.prepare(`SELECT ${UPLOAD_COLUMNS} FROM multipart_uploads WHERE writer = ?1 AND nar IS ?2 AND name IS ?3 ORDER BY started DESC`).bind(writer, key.nar, key.name),
      db.prepare(`${PARTS_OF_UPLOADS} WHERE u.writer = ?1 AND u.nar IS ?2 AND u.name IS ?3 ORDER BY p.part_number`).bind(writer, key.nar, key.name),
      db.prepare("SELECT slot FROM multipart_uploads WHERE writer = ?1").bind(writer),
    ]),
  );
  const bySlot = new Map<number, RecordedPart[]>();
  for (const r of (parts!.results ?? []) as PartRow[]) {
    const list = bySlot.get(r.slot) ?? [];
    list.push(partOf(r));
    bySlot.set(r.slot, list);
  }
  return {
    uploads: ((uploads!.results ?? []) as UploadRow[]).map((r) => ({ upload: uploadOf(writer, r), parts: bySlot.get(r.slot) ?? [] })),
    taken: new Set(((slots!.results ?? []) as Array<{ slot: number }>).map((r) => r.slot)),
  };
}

/** The upload in `slot`, or null when the slot is free. One D1 call. */
export async function uploadIn(db: D1Database, slot: UploadSlot): Promise<TrackedUpload | null> {
  const row = await d1(() => db.prepare(`SELECT ${UPLOAD_COLUMNS} FROM multipart_uploads WHERE writer = ?1 AND slot = ?2`).bind(slot.writer, slot.slot).first<UploadRow>());
  return row === null ? null : uploadOf(slot.writer, row);
}

/** The upload in `slot` with its parts in part order, or null when the slot is free. One D1 call. */
export async function uploadWithParts(db: D1Database, slot: UploadSlot): Promise<{ upload: TrackedUpload; parts: RecordedPart[] } | null> {
  const [upload, parts] = await d1(() =>
    db.batch([
      db.prepare(`SELECT ${UPLOAD_COLUMNS} FROM multipart_uploads WHERE writer = ?1 AND slot = ?2`).bind(slot.writer, slot.slot),
      db.prepare(`${PARTS_OF_UPLOADS} WHERE u.writer = ?1 AND u.slot = ?2 ORDER BY p.part_number`).bind(slot.writer, slot.slot),
    ]),
  );
  const row = (upload!.results ?? [])[0] as UploadRow | undefined;
  if (row === undefined) return null;
  return { upload: uploadOf(slot.writer, row), parts: ((parts!.results ?? []) as PartRow[]).map(partOf) };
}

/**
 * Records `upload` in its slot, unless the slot is taken (its primary key: a concurrent
 * start took it) or the writer has an upload under the same key started after `youngSince`
 * (a concurrent start of the same NAR, which the caller then resumes). Whether it was
 * recorded. One D1 call.
 */
export async function claimSlot(db: D1Database, upload: TrackedUpload, youngSince: number): Promise<boolean> {
  const row = await d1(() =>
    db
      .prepare(
        `INSERT INTO multipart_uploads (writer, slot, nar, name, upload_id, size, part_size, part_count, started)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
         WHERE NOT EXISTS (SELECT 1 FROM multipart_uploads WHERE writer = ?1 AND nar IS ?3 AND name IS ?4 AND started > ?10)
         ON CONFLICT (writer, slot) DO NOTHING
         RETURNING slot`,
      )
      .bind(upload.writer, upload.slot, upload.nar, upload.name, upload.uploadId, upload.size, upload.partSize, upload.partCount, upload.started, youngSince)
      .first<{ slot: number }>(),
  );
  return row !== null;
}

/**
 * Records a part R2 received for `upload` (replacing the record of an earlier copy of that
 * part), only while the upload holds its slot. Whether it was recorded. One D1 call.
 */
export async function recordPart(db: D1Database, upload: TrackedUpload, part: RecordedPart): Promise<boolean> {
  const result = await d1(() =>
    db
      .prepare(
        `INSERT INTO multipart_parts (writer, slot, upload_id, part_number, etag, size)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6
         WHERE EXISTS (SELECT 1 FROM multipart_uploads WHERE writer = ?1 AND slot = ?2 AND upload_id = ?3)
         ON CONFLICT (writer, slot, part_number) DO UPDATE SET upload_id = excluded.upload_id, etag = excluded.etag, size = excluded.size`,
      )
      .bind(upload.writer, upload.slot, upload.uploadId, part.partNumber, part.etag, part.size)
      .run(),
  );
  return result.meta.changes > 0;
}

function forgetStatements(db: D1Database, u: TrackedUpload): D1PreparedStatement[] {
  const holds = "EXISTS (SELECT 1 FROM multipart_uploads WHERE writer = ?1 AND slot = ?2 AND upload_id = ?3)";
  return [
    // Parts first, while the upload's row still says they are its own.
    db.prepare(`DELETE FROM multipart_parts WHERE writer = ?1 AND slot = ?2 AND ${holds}`).bind(u.writer, u.slot, u.uploadId),
    db.prepare("DELETE FROM multipart_uploads WHERE writer = ?1 AND slot = ?2 AND upload_id = ?3").bind(u.writer, u.slot, u.uploadId),
  ];
}

/** Deletes the rows of `uploads` (each only if its slot still holds it), freeing their slots. One D1 call. */
export async function forgetUploads(db: D1Database, uploads: readonly TrackedUpload[]): Promise<void> {
  if (uploads.length === 0) return;
  await d1(() => db.batch(uploads.flatMap((u) => forgetStatements(db, u))));
}

/** index_state key: set once the bucket's bookkeeping from before this table is gone. */
const LEGACY_SWEPT = "multipart-legacy-swept";

/**
 * What a cleanup pass has to do: uploads started before `cutoff`, oldest first (at most
 * `limit`), and whether the bucket may still hold bookkeeping from before D1 held it. One D1 call.
 */
export async function cleanupWork(db: D1Database, cutoff: number, limit: number): Promise<{ stale: TrackedUpload[]; legacySwept: boolean }> {
  const [stale, swept] = await d1(() =>
    db.batch([
      db.prepare(`SELECT writer, ${UPLOAD_COLUMNS} FROM multipart_uploads WHERE started < ?1 ORDER BY started LIMIT ?2`).bind(cutoff, limit),
      db.prepare("SELECT value FROM index_state WHERE key = ?1").bind(LEGACY_SWEPT),
    ]),
  );
  return {
    stale: ((stale!.results ?? []) as Array<UploadRow & { writer: string }>).map((r) => uploadOf(r.writer, r)),
    legacySwept: (swept!.results ?? []).length > 0,
  };
}

/** Notes that the bucket holds no bookkeeping from before D1 held it any more. One D1 call. */
export async function markLegacySwept(db: D1Database, now: number): Promise<void> {
  await d1(() => db.prepare("INSERT INTO index_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING").bind(LEGACY_SWEPT, String(now)).run());
}
