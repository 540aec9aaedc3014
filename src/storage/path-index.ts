// The D1 index of published paths (migrations/0001_path_index.sql), and the one D1 call
// wrapper (d1) of src/storage/, whose other D1 modules are pins.ts and
// write-through-budget.ts. Questions about many paths become one query each, whatever their
// number: lists travel as one JSON parameter read with json_each (D1 binds at most 100
// parameters per statement), so a request costs a constant number of binding calls.
//
// Commit protocol: bytes in R2 first, then the narinfo object, then its row (recordPath),
// so a crash leaves at most an object the index does not know, never a row whose object
// is missing. Rows are removed before their objects (forgetPaths). Objects the index does
// not know (a crash, or a bucket from before the index) are adopted by adoptObjects, one
// page of the bucket listing at a time; until a full pass has ended, the index is not
// complete and callers that must not miss a stored path also ask R2.

import { referenceHashes, type NarInfo } from "../nix/narinfo.ts";
import { HASH_PART_LENGTH, isHashPartList, parseStorePath } from "../nix/store-path.ts";
import { storageUnavailable } from "./bucket.ts";
import { NAR_PREFIX } from "./keys.ts";

/** What the index holds of one path. */
export interface IndexedPath {
  hash: string;
  name: string;
  /** The NAR's file name under nar/. */
  narFile: string;
  fileSize: number;
  narSize: number;
  /** Hash parts of the references, the path's own excluded. */
  refs: string[];
  /** The write token's secret name; null for write-through copies and adopted objects. */
  token: string | null;
  /** Last push, ms since the epoch. */
  pushedAt: number;
}

/** Who an audit row names for work the Worker does on its own. */
export const ACTOR_UPSTREAM = "upstream";
export const ACTOR_GC = "gc";

/** index_state key: "complete" once every narinfo object the bucket held is indexed. */
const ADOPTION = "adoption";
const ADOPTION_CURSOR = "adoption-cursor";
const COMPLETE = "complete";

/** One D1 call; a failure becomes `storage_unavailable`. */
export async function d1<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    return storageUnavailable(err, "D1");
  }
}

/** The row for a narinfo as the Worker stores it; null when it is not one the index can hold. */
export function rowOf(info: NarInfo, token: string | null, pushedAt: number): IndexedPath | null {
  const path = parseStorePath(info.storePath);
  if (path === null || !info.url.startsWith(NAR_PREFIX) || info.fileSize === undefined) return null;
  const refs = [...referenceHashes(info)];
  return {
    hash: path.hash,
    name: path.name,
    narFile: info.url.slice(NAR_PREFIX.length),
    fileSize: info.fileSize,
    narSize: info.narSize,
    refs,
    token,
    pushedAt,
  };
}

/**
 * SQL for the JSON array of the words of the space-separated parameter `?n` ('' is []).
 * A list of hundreds of store paths travels to D1 as one plain string: no quotes for D1's
 * client to escape, two bytes less per word. Only for words that need no JSON escaping:
 * hash parts and store path base names as the parsers let them through (nix/store-path.ts:
 * [0-9a-zA-Z+\-._?=]). Nothing else may come here; json() at least refuses a list that
 * does not come out as JSON.
 */
function spacedList(n: number): string {
  return `json(CASE WHEN ?${n} = '' THEN '[]' ELSE '["' || replace(?${n}, ' ', '","') || '"]' END)`;
}

const UPSERT = `INSERT INTO paths (hash, name, nar_file, file_size, nar_size, refs, token, created_at, pushed_at)
  VALUES (?1, ?2, ?3, ?4, ?5, ${spacedList(6)}, ?7, ?8, ?8)
  ON CONFLICT (hash) DO UPDATE SET pushed_at = excluded.pushed_at WHERE excluded.pushed_at > pushed_at`;

/**
 * Records a stored narinfo (after its object was written) and, for `action`, an audit row.
 * A row already there keeps its facts (they cannot change) and gets the later push time.
 */
export async function recordPath(db: D1Database, row: IndexedPath, action: "publish" | "sign" | null, actor: string | null): Promise<void> {
  const statements = [
    db.prepare(UPSERT).bind(row.hash, row.name, row.narFile, row.fileSize, row.narSize, row.refs.join(" "), row.token, row.pushedAt),
  ];
  if (action !== null) {
    statements.push(db.prepare("INSERT INTO audit (at, actor, action, subject) VALUES (?1, ?2, ?3, ?4)").bind(row.pushedAt, actor ?? row.token ?? ACTOR_UPSTREAM, action, `/nix/store/${row.hash}-${row.name}`));
  }
  await d1(() => db.batch(statements));
}

/** Moves the push time of the paths `hashes` to `now` where it is older than `before`. */
export async function refreshPaths(db: D1Database, hashes: readonly string[], now: number, before: number): Promise<void> {
  if (hashes.length === 0) return;
  await d1(() => db.prepare("UPDATE paths SET pushed_at = ?2 WHERE hash IN (SELECT value FROM json_each(?1)) AND pushed_at < ?3").bind(JSON.stringify(hashes), now, before).run());
}

/** Of the hash parts `hashes`, those the index has no path for, in input order. */
export async function unindexedHashes(db: D1Database, hashes: readonly string[]): Promise<string[]> {
  if (hashes.length === 0) return [];
  const result = await d1(() =>
    db
      .prepare("SELECT j.value AS hash FROM json_each(?1) j LEFT JOIN paths p ON p.hash = j.value WHERE p.hash IS NULL ORDER BY j.key")
      .bind(JSON.stringify(hashes))
      .all<{ hash: string }>(),
  );
  return result.results.map((r) => r.hash);
}

/**
 * Of the store path base names `baseNames` (`<hash>-<name>`, valid ones: a narinfo's parsed
 * References), those the index has no path for with that exact hash part and name, in
 * input order.
 */
export async function unindexedPaths(db: D1Database, baseNames: readonly string[]): Promise<string[]> {
  if (baseNames.length === 0) return [];
  const result = await d1(() =>
    db
      .prepare(
        `SELECT j.value AS base FROM json_each(${spacedList(1)}) j
           LEFT JOIN paths p ON p.hash = substr(j.value, 1, ${HASH_PART_LENGTH}) AND p.name = substr(j.value, ${HASH_PART_LENGTH + 2})
         WHERE p.hash IS NULL ORDER BY j.key`,
      )
      .bind(baseNames.join(" "))
      .all<{ base: string }>(),
  );
  return result.results.map((r) => r.base);
}

/** The indexed paths among `hashes`. */
export async function indexedPaths(db: D1Database, hashes: readonly string[]): Promise<IndexedPath[]> {
  if (hashes.length === 0) return [];
  const result = await d1(() =>
    db
      .prepare("SELECT p.* FROM json_each(?1) j JOIN paths p ON p.hash = j.value")
      .bind(JSON.stringify(hashes))
      .all<{ hash: string; name: string; nar_file: string; file_size: number; nar_size: number; refs: string; token: string | null; pushed_at: number }>(),
  );
  return result.results.map((r) => ({
    hash: r.hash,
    name: r.name,
    narFile: r.nar_file,
    fileSize: r.file_size,
    narSize: r.nar_size,
    refs: JSON.parse(r.refs) as string[],
    token: r.token,
    pushedAt: r.pushed_at,
  }));
}

/** What garbage collection needs of an indexed path to follow it: its references and NAR. */
export interface PathLinks {
  hash: string;
  /** The NAR's file name under nar/. */
  narFile: string;
  /**
   * Hash parts of the references (the path's own excluded), concatenated: 32 characters
   * each; null when the row's references are not all hash parts (a row no Worker wrote).
   */
  refs: string | null;
}

/** linksOf's answer. */
export interface LinksAnswer {
  /** The indexed paths among the first `answered` hashes asked, by hash part (absent ones are not indexed). */
  links: Map<string, PathLinks>;
  /**
   * How many of the hashes asked (from the first) were answered; the rest would have passed
   * the reference budget and must be asked again.
   */
  answered: number;
}


/**
 * The references and NAR file of the indexed paths among `hashes`, in one query: the
 * collector follows a live path's references with this instead of one R2 call per path.
 * What the answer costs to decode grows with the references in it, so paths are answered
 * from the first as long as the references before them stay within `refBudget` (the first
 * always). The answer is one row holding one JSON document, each path's references packed
 * into one string: the runtime builds an object per row of a D1 answer and a string per
 * JSON string, which cost more than the collector's own work (bench/worker-cpu.ts).
 *
 * The references are taken out of the JSON text with replace (json_each would cost D1 a
 * row read per reference), separated by spaces, and checked here with one regex run per
 * path: the column holds what recordPath and adoptRows wrote, JSON.stringify of hash parts,
 * and a value of any other shape is answered as null (the collector then keeps everything).
 */
export async function linksOf(db: D1Database, hashes: readonly string[], refBudget: number): Promise<LinksAnswer> {
  if (hashes.length === 0) return { links: new Map(), answered: 0 };
  const row = await d1(() =>
    db
      .prepare(
        `WITH found AS (
           SELECT j.key AS k, p.hash AS hash, p.nar_file AS nar_file, p.refs AS refs, json_array_length(p.refs) AS n
             FROM json_each(?1) j JOIN paths p ON p.hash = j.value
         ), running AS (SELECT *, sum(n) OVER (ORDER BY k) - n AS before FROM found),
         packed AS (
           SELECT *, CASE WHEN n = 0 THEN '' ELSE replace(replace(replace(refs, '","', ' '), '["', ''), '"]', '') END AS p FROM running
         )
         SELECT json_group_array(json_array(hash, nar_file, p)) FILTER (WHERE before < ?2) AS links,
                min(k) FILTER (WHERE before >= ?2) AS stop
           FROM packed`,
      )
      .bind(JSON.stringify(hashes), refBudget)
      .first<{ links: string; stop: number | null }>(),
  );
  const links = new Map<string, PathLinks>();
  for (const [hash, narFile, spaced] of JSON.parse(row?.links ?? "[]") as [string, string, string | null][]) {
    const refs = spaced !== null && isHashPartList(spaced) ? spaced.replaceAll(" ", "") : null;
    links.set(hash, { hash, narFile, refs });
  }
  return { links, answered: row?.stop ?? hashes.length };
}

/** What garbage collection reads of each listed narinfo's path. */
export interface ListedPath {
  name: string;
  fileSize: number;
  narSize: number;
  /** Last push, ms since the epoch. */
  pushedAt: number;
}

/**
 * The indexed paths among `hashes` (a page of the bucket's listing), by hash part: one
 * query per page, so garbage collection lists keys only and takes push times, names and
 * sizes from here instead of decoding each narinfo's metadata. One JSON document answers
 * (as for linksOf).
 */
export async function listedPaths(db: D1Database, hashes: readonly string[]): Promise<Map<string, ListedPath>> {
  if (hashes.length === 0) return new Map();
  const row = await d1(() =>
    db
      .prepare("SELECT json_group_array(json_array(p.hash, p.name, p.file_size, p.nar_size, p.pushed_at)) AS paths FROM json_each(?1) j JOIN paths p ON p.hash = j.value")
      .bind(JSON.stringify(hashes))
      .first<{ paths: string }>(),
  );
  const paths = new Map<string, ListedPath>();
  for (const [h, name, fileSize, narSize, pushedAt] of JSON.parse(row?.paths ?? "[]") as [string, string, number, number, number][]) {
    paths.set(h, { name, fileSize, narSize, pushedAt });
  }
  return paths;
}

/** Removes the rows of `hashes` (before their objects are deleted) with an audit row each. */
export async function forgetPaths(db: D1Database, hashes: readonly string[], now: number): Promise<void> {
  if (hashes.length === 0) return;
  const list = JSON.stringify(hashes);
  await d1(() =>
    db.batch([
      db.prepare("INSERT INTO audit (at, actor, action, subject) SELECT ?2, ?3, 'delete', '/nix/store/' || hash || '-' || name FROM paths WHERE hash IN (SELECT value FROM json_each(?1))").bind(list, now, ACTOR_GC),
      db.prepare("DELETE FROM paths WHERE hash IN (SELECT value FROM json_each(?1))").bind(list),
    ]),
  );
}

export interface IndexStats {
  paths: number;
  fileBytes: number;
  narBytes: number;
}

/** Counts and sizes of the indexed paths. */
export async function indexStats(db: D1Database): Promise<IndexStats> {
  const row = await d1(() => db.prepare("SELECT count(*) AS n, coalesce(sum(file_size), 0) AS f, coalesce(sum(nar_size), 0) AS s FROM paths").first<{ n: number; f: number; s: number }>());
  return { paths: row?.n ?? 0, fileBytes: row?.f ?? 0, narBytes: row?.s ?? 0 };
}

/** Whether every narinfo object of the bucket is known to be indexed. */
export async function indexComplete(db: D1Database): Promise<boolean> {
  const row = await d1(() => db.prepare("SELECT value FROM index_state WHERE key = ?1").bind(ADOPTION).first<{ value: string }>());
  return row?.value === COMPLETE;
}

/** Where the adoption pass stands: its listing cursor (null: at the start) and whether it is done. */
export async function adoptionState(db: D1Database): Promise<{ complete: boolean; cursor: string | null }> {
  const rows = await d1(() => db.prepare("SELECT key, value FROM index_state WHERE key IN (?1, ?2)").bind(ADOPTION, ADOPTION_CURSOR).all<{ key: string; value: string }>());
  const get = (k: string) => rows.results.find((r) => r.key === k)?.value ?? null;
  return { complete: get(ADOPTION) === COMPLETE, cursor: get(ADOPTION_CURSOR) };
}

/** Inserts rows for objects the index did not know (keeping rows it has), and moves the cursor. */
export async function adoptRows(db: D1Database, rows: readonly IndexedPath[], next: { cursor: string } | "complete", now: number): Promise<void> {
  const statements: D1PreparedStatement[] = [];
  if (rows.length > 0) {
    const json = JSON.stringify(rows.map((r) => [r.hash, r.name, r.narFile, r.fileSize, r.narSize, JSON.stringify(r.refs), r.pushedAt]));
    statements.push(
      db
        .prepare(
          `INSERT INTO paths (hash, name, nar_file, file_size, nar_size, refs, token, created_at, pushed_at)
           SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, NULL, ?2, value ->> 6 FROM json_each(?1)
           WHERE true ON CONFLICT (hash) DO NOTHING`,
        )
        .bind(json, now),
    );
  }
  if (next === "complete") {
    statements.push(db.prepare("INSERT INTO index_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value").bind(ADOPTION, COMPLETE));
    statements.push(db.prepare("DELETE FROM index_state WHERE key = ?1").bind(ADOPTION_CURSOR));
  } else {
    statements.push(db.prepare("INSERT INTO index_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value").bind(ADOPTION_CURSOR, next.cursor));
  }
  await d1(() => db.batch(statements));
}
