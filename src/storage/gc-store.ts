// The R2 side of garbage collection, pins and statistics: the keys under `_gc/` and every
// bucket call the collector makes. Each function is one R2 operation (the collector counts
// them against the free plan's per-invocation budget), takes the bucket it is given (tests
// pass a counting wrapper), and turns R2 failures into `storage_unavailable`.
//
//   _gc/fence.json             paths and NARs about to be deleted (gc/fence.ts); uploads read it
//   _gc/runs/<id>/<name>       a run's working objects (mark sets, candidate lists)
//   _gc/pins.json              named pins of caches from before the D1 pins table, moved
//                              into it on first use (storage/pins.ts)
//   _gc/state.json, _gc/stats.json, _gc/dry-run.json, _gc/index-stats.json   the small
//                              documents of caches from before they were D1 rows: the
//                              first batch moves the first two (storage/gc-documents.ts)
//                              and deletes all four
//
// No request path maps to a key under `_gc/` (storage/keys.ts accepts only the cache's own
// layouts), so none of this can be read or written over HTTP. Listings of narinfos use the
// delimiter "/" so that `nar/`, `log/` and `_gc/` collapse into single prefixes.

import { putObject, storageUnavailable } from "./bucket.ts";

export const GC_PREFIX = "_gc/";
export const FENCE_KEY = `${GC_PREFIX}fence.json`;
export const PINS_KEY = `${GC_PREFIX}pins.json`;
/** The R2 documents storage/gc-documents.ts moves into D1, and the two it drops (a dry run, a count). */
export const LEGACY_STATE_KEY = `${GC_PREFIX}state.json`;
export const LEGACY_STATS_KEY = `${GC_PREFIX}stats.json`;
export const LEGACY_DROPPED_KEYS = [`${GC_PREFIX}dry-run.json`, `${GC_PREFIX}index-stats.json`];
const RUNS_PREFIX = `${GC_PREFIX}runs/`;

/** R2 deletes at most this many keys per call. */
export const MAX_DELETE_KEYS = 1000;

/** Prefix of a run's working objects. */
export function runPrefix(runId: string): string {
  return `${RUNS_PREFIX}${runId}/`;
}

/** One object of a listing, with what GC reads from it. */
export interface ListedObject {
  key: string;
  size: number;
  uploaded: number;
}

export interface ListPage {
  objects: ListedObject[];
  /** Where the next page starts; null after the last page. */
  cursor: string | null;
}

function page(result: R2Objects): ListPage {
  return {
    objects: result.objects.map((o) => ({ key: o.key, size: o.size, uploaded: o.uploaded.getTime() })),
    cursor: result.truncated ? result.cursor : null,
  };
}

/** A page of a listing: keys, and the size or the object of each key when asked for. */
export interface KeyPage {
  keys: string[];
  /** The size of keys[i]. */
  size(i: number): number;
  /** The listed object of keys[i], with its size and upload time. */
  object(i: number): ListedObject;
  /** Where the next page starts; null after the last page. */
  cursor: string | null;
}

/**
 * A listing's page as keys, reading the rest of R2's object only when asked: each of its
 * properties is a call into the runtime, and the upload time a Date besides.
 */
function keyPage(result: R2Objects): KeyPage {
  const objects = result.objects;
  const keys: string[] = new Array(objects.length);
  for (let i = 0; i < objects.length; i++) keys[i] = objects[i]!.key;
  return {
    keys,
    size: (i) => objects[i]!.size,
    object(i) {
      const o = objects[i]!;
      return { key: o.key, size: o.size, uploaded: o.uploaded.getTime() };
    },
    cursor: result.truncated ? result.cursor : null,
  };
}

/**
 * One page of the bucket's top level (narinfos and listings), up to 1000 keys. The
 * collector reads only the key of most objects (the index knows the rest), so size and
 * upload time are read from R2's object when asked for: materialising them for a page of
 * 1000 narinfos was most of a batch's CPU, and so was an object per key (bench/worker-cpu.ts).
 */
export async function listTopLevelKeys(bucket: R2Bucket, cursor: string | null, limit = 1000): Promise<KeyPage> {
  return listKeys(bucket, { delimiter: "/" }, cursor, limit);
}

/** One page of keys under `prefix`, read as listTopLevelKeys reads its page (up to 1000). */
export async function listPrefixKeys(bucket: R2Bucket, prefix: string, cursor: string | null, limit = 1000): Promise<KeyPage> {
  return listKeys(bucket, { prefix }, cursor, limit);
}

async function listKeys(bucket: R2Bucket, options: R2ListOptions, cursor: string | null, limit: number): Promise<KeyPage> {
  try {
    return keyPage(await bucket.list({ ...options, limit, ...(cursor === null ? {} : { cursor }) }));
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** One page of keys under `prefix` (sizes and upload times, no metadata: up to 1000). */
export async function listPrefix(bucket: R2Bucket, prefix: string, cursor: string | null, limit = 1000): Promise<ListPage> {
  try {
    return page(await bucket.list({ prefix, limit, ...(cursor === null ? {} : { cursor }) }));
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** Metadata of one object, or null. */
export async function headKey(bucket: R2Bucket, key: string): Promise<R2Object | null> {
  try {
    return await bucket.head(key);
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** A small text object with its etag, or null. */
export async function getTextObject(bucket: R2Bucket, key: string): Promise<{ text: string; etag: string } | null> {
  try {
    const obj = await bucket.get(key);
    if (obj === null) return null;
    return { text: await obj.text(), etag: obj.etag };
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** A binary object, or null. */
export async function getBinaryObject(bucket: R2Bucket, key: string): Promise<ArrayBuffer | null> {
  try {
    const obj = await bucket.get(key);
    return obj === null ? null : await obj.arrayBuffer();
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** Writes a GC object (a run's working object, the fence): its one writer is the batch holding the lease. */
export async function putGcObject(bucket: R2Bucket, key: string, body: string | ArrayBuffer): Promise<void> {
  await putObject(bucket, key, body);
}

/** Deletes up to MAX_DELETE_KEYS keys in one operation (absent keys are fine). */
export async function deleteKeys(bucket: R2Bucket, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  if (keys.length > MAX_DELETE_KEYS) throw new RangeError(`at most ${MAX_DELETE_KEYS} keys per delete`);
  try {
    await bucket.delete([...keys]);
  } catch (err) {
    storageUnavailable(err);
  }
}
