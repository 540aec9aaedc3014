// The pins table of the D1 database (migrations/0002_pins.sql): named roots that garbage
// collection keeps with their closure. Each change is one D1 batch (a transaction): the
// previous pin is read, the row written or removed, and an audit row added, so two changes
// at once are serialised by D1 and neither is lost.
//
// Caches from before the table kept the pins in one R2 document, `_gc/pins.json`
// (gc/pins.ts parses it). The Worker moves its pins into the table the first time it needs
// them (movePinsDocument: the pins routes and the collector's roots), then deletes it. A
// document that has lost pins to damage is not moved: the collector reports it and
// deletes nothing until the operator replaces or removes it (a pin lost is a root lost).

import type { Pin } from "../api/pins.ts";
import { parsePins, type PinMap } from "../gc/pins.ts";
import { isRecord } from "../json-document.ts";
import { parseStorePath } from "../nix/store-path.ts";
import { deleteKeys, getTextObject, PINS_KEY } from "./gc-store.ts";
import { d1 } from "./path-index.ts";

/** Who an audit row names for pin changes: the admin token (the only one that may). */
const ACTOR_ADMIN = "admin";

interface PinRow {
  name: string;
  path: string;
  pinned_at: number;
}

/** Every pin, by name. */
export async function listPins(db: D1Database): Promise<PinMap> {
  const rows = await d1(() => db.prepare("SELECT name, path, pinned_at FROM pins ORDER BY name").all<PinRow>());
  return new Map(rows.results.map((r) => [r.name, { path: r.path, pinnedAt: r.pinned_at }]));
}

export type SetPinResult = { set: true; previous: Pin | null } | { set: false; reason: "too_many" };

/**
 * Sets pin `name` to `pin` (a valid store path), unless that would make more than
 * `maxPins` pins. Returns the pin it replaced, if any.
 */
export async function setPin(db: D1Database, name: string, pin: Pin, maxPins: number): Promise<SetPinResult> {
  const hash = parseStorePath(pin.path)!.hash;
  const [before, written] = await d1(() =>
    db.batch<PinRow>([
      db.prepare("SELECT name, path, pinned_at FROM pins WHERE name = ?1").bind(name),
      db
        .prepare(
          `INSERT INTO pins (name, path, hash, pinned_at)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM pins WHERE name = ?1) OR (SELECT count(*) FROM pins) < ?5
           ON CONFLICT (name) DO UPDATE SET path = excluded.path, hash = excluded.hash, pinned_at = excluded.pinned_at`,
        )
        .bind(name, pin.path, hash, pin.pinnedAt, maxPins),
      db
        .prepare("INSERT INTO audit (at, actor, action, subject) SELECT ?2, ?3, 'pin', ?4 FROM pins WHERE name = ?1 AND pinned_at = ?2 AND path = ?4")
        .bind(name, pin.pinnedAt, ACTOR_ADMIN, pin.path),
    ]),
  );
  if ((written?.meta.changes ?? 0) === 0) return { set: false, reason: "too_many" };
  const previous = before?.results[0];
  return { set: true, previous: previous === undefined ? null : { path: previous.path, pinnedAt: previous.pinned_at } };
}

/** Removes pin `name`; returns it, or null when there was none. */
export async function removePin(db: D1Database, name: string, now: number): Promise<Pin | null> {
  const [, removed] = await d1(() =>
    db.batch<PinRow>([
      db.prepare("INSERT INTO audit (at, actor, action, subject) SELECT ?2, ?3, 'unpin', path FROM pins WHERE name = ?1").bind(name, now, ACTOR_ADMIN),
      db.prepare("DELETE FROM pins WHERE name = ?1 RETURNING name, path, pinned_at").bind(name),
    ]),
  );
  const row = removed?.results[0];
  return row === undefined ? null : { path: row.path, pinnedAt: row.pinned_at };
}

/** What moving the legacy pins document found. */
export type PinsDocumentState = { state: "absent" | "moved" } | { state: "damaged"; reason: string };

/**
 * Why the pins document lost pins when parsed (parsePins drops what it cannot read and
 * goes on), or null when every pin in it was read.
 */
function pinsDamage(text: string, kept: number): string | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return "it is not JSON";
  }
  const pins = isRecord(doc) && Object.hasOwn(doc, "pins") ? doc.pins : undefined;
  if (!isRecord(pins)) return 'it has no "pins" object';
  const total = Object.keys(pins).length;
  return total === kept ? null : `${total - kept} of its ${total} pins are not valid`;
}

/** The legacy document, parsed, and whether it lost pins to damage (null: absent). */
async function readPinsDocument(bucket: R2Bucket): Promise<{ pins: PinMap; damage: string | null } | null> {
  const stored = await getTextObject(bucket, PINS_KEY);
  if (stored === null) return null;
  const pins = parsePins(stored.text);
  const damage = pinsDamage(stored.text, pins.size);
  return { pins, damage: damage === null ? null : `the pins document ${PINS_KEY} is damaged: ${damage}` };
}

/** The insert of a legacy document's pins (a pin already in the table wins). */
function insertPins(db: D1Database, pins: PinMap): D1PreparedStatement {
  const rows = JSON.stringify([...pins].map(([name, pin]) => [name, pin.path, parseStorePath(pin.path)!.hash, pin.pinnedAt]));
  return db
    .prepare(
      `INSERT INTO pins (name, path, hash, pinned_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1) WHERE true
       ON CONFLICT (name) DO NOTHING`,
    )
    .bind(rows);
}

/**
 * Moves the pins of the legacy R2 document into the table and deletes the document: one
 * R2 read when there is none. A damaged document stays where it is.
 */
export async function movePinsDocument(bucket: R2Bucket, db: D1Database): Promise<PinsDocumentState> {
  const doc = await readPinsDocument(bucket);
  if (doc === null) return { state: "absent" };
  if (doc.damage !== null) return { state: "damaged", reason: doc.damage };
  if (doc.pins.size > 0) await d1(() => insertPins(db, doc.pins).run());
  await deleteKeys(bucket, [PINS_KEY]);
  return { state: "moved" };
}

/** The collection's pinned roots, and what became of a legacy pins document. */
export interface PinRoots {
  /** Hash parts of every pinned path (the legacy document's included). */
  hashes: string[];
  document: PinsDocumentState;
}

/**
 * The hash parts of every pinned path, for a collection: one D1 query (which also moves
 * the pins of a legacy document into the table), one R2 read, and a delete of the
 * document when it was moved. `dryRun` moves nothing; a damaged document is not moved
 * either, and the pins it still holds count.
 */
export async function pinRoots(bucket: R2Bucket, db: D1Database, opts: { dryRun: boolean }): Promise<PinRoots> {
  const doc = await readPinsDocument(bucket);
  const move = doc !== null && doc.damage === null && !opts.dryRun;
  const select = db.prepare("SELECT hash FROM pins");
  const results = await d1(() => db.batch<{ hash: string }>(move && doc.pins.size > 0 ? [insertPins(db, doc.pins), select] : [select]));
  const hashes = results.at(-1)!.results.map((r) => r.hash);
  if (doc === null) return { hashes, document: { state: "absent" } };
  if (move) await deleteKeys(bucket, [PINS_KEY]);
  for (const pin of doc.pins.values()) hashes.push(parseStorePath(pin.path)!.hash);
  return { hashes, document: doc.damage === null ? { state: "moved" } : { state: "damaged", reason: doc.damage } };
}
