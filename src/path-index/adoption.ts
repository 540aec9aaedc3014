// Adoption: indexing narinfo objects the D1 index does not know. A crash between storing a
// narinfo object and writing its row leaves such an object, and so does every narinfo of a
// bucket that was filled before the index existed: a deployed cache upgrades in place.
//
// One call adopts one page of the bucket listing (ADOPTION_PAGE narinfos): the metadata the
// Worker writes with every narinfo (storage/narinfo-meta.ts) gives the row; a narinfo stored
// without it is read and parsed. A narinfo that does not parse is left alone (garbage
// collection reports it). Like an upload, a step opens the collection's upload gate before
// it looks (gc/upload-gate.ts): a narinfo a collection is deleting (its row already gone,
// its object about to go) is not adopted, and rows are written within the gate's window,
// so the index never gets a row whose object a collection then deletes.
// When a pass reaches the end of the listing the index is complete:
// from then on the missing query trusts the index alone. The cron runs one page a tick
// while the index is incomplete, and keeps making passes afterwards, more slowly, so that
// objects a crash left unindexed are adopted too.

import { NixFormatError } from "../nix/errors.ts";
import { parseNarInfo } from "../nix/narinfo.ts";
import { decodeNarInfoMeta } from "../storage/narinfo-meta.ts";
import { getNarInfoObject, listNarInfoPage } from "../storage/narinfo-object.ts";
import { adoptionState, adoptRows, indexComplete, rowOf, unindexedHashes, type IndexedPath } from "../storage/path-index.ts";
import { NAR_PREFIX } from "../storage/keys.ts";
import { MIN_UPLOAD_WINDOW_MS } from "../gc/settings.ts";
import { openUploadGate } from "../gc/upload-gate.ts";

/**
 * Narinfos one adoption step lists. Each that lacks the Worker's metadata costs a GET and a
 * parse, so a page of them stays within a request's ~1000 operations and a few ms of CPU.
 */
export const ADOPTION_PAGE = 100;

/** Whether every narinfo of the bucket is indexed (adoption finished a pass). */
export async function isIndexComplete(db: D1Database): Promise<boolean> {
  return indexComplete(db);
}

/** The row for a narinfo object from its metadata alone, or null when that is not enough. */
function rowFromMeta(hash: string, meta: Record<string, string>): IndexedPath | null {
  const m = decodeNarInfoMeta(meta);
  if (m === null || m.refs === null || m.narFile === null || m.fileSize === null || m.narSize === null || m.name === null) return null;
  return { hash, name: m.name, narFile: m.narFile, fileSize: m.fileSize, narSize: m.narSize, refs: m.refs.filter((r) => r !== hash), token: null, pushedAt: m.pushed };
}

export interface AdoptionStep {
  /** Rows added by this step. */
  adopted: number;
  /** Narinfos this step could not read (left unindexed). */
  unreadable: string[];
  /** The pass reached the end of the bucket (the index is complete). */
  complete: boolean;
}

/** Adopts one page of the bucket's narinfos, from where the last step stopped. */
export async function adoptObjects(bucket: R2Bucket, db: D1Database, now: number = Date.now()): Promise<AdoptionStep> {
  const gate = await openUploadGate(bucket, MIN_UPLOAD_WINDOW_MS);
  const state = await adoptionState(db);
  const page = await listNarInfoPage(bucket, state.cursor, ADOPTION_PAGE);
  const hashes = page.objects.map((o) => o.key.slice(0, -".narinfo".length));
  const unknown = new Set(await unindexedHashes(db, hashes));
  const rows: IndexedPath[] = [];
  const unreadable: string[] = [];
  for (const o of page.objects) {
    const hash = o.key.slice(0, -".narinfo".length);
    if (!unknown.has(hash) || gate.fencesPath(hash)) continue;
    const fromMeta = rowFromMeta(hash, o.customMetadata);
    if (fromMeta !== null) {
      rows.push(fromMeta);
      continue;
    }
    const stored = await getNarInfoObject(bucket, o.key);
    if (stored === null) continue;
    try {
      const info = parseNarInfo(stored.text);
      const row = info.url.startsWith(NAR_PREFIX) ? rowOf(info, null, decodeNarInfoMeta(o.customMetadata)?.pushed ?? o.uploaded) : null;
      if (row !== null && row.hash === hash) rows.push(row);
      else unreadable.push(o.key);
    } catch (e) {
      if (!(e instanceof NixFormatError)) throw e;
      unreadable.push(o.key);
    }
  }
  // Too slow to be safe next to a collection: nothing written, the next step retries.
  gate.assertInTime();
  await adoptRows(db, rows, page.cursor === null ? "complete" : { cursor: page.cursor }, now);
  if (unreadable.length > 0) console.warn(`adoption: ${unreadable.length} narinfos could not be read and stay unindexed`, unreadable.slice(0, 10));
  return { adopted: rows.length, unreadable, complete: page.cursor === null };
}
