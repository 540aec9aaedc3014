// Reading and writing narinfo objects together with their customMetadata (narinfo-meta.ts):
// the upload route stores every narinfo through here, so each one carries its push time and
// references for garbage collection, and a push that finds a path already stored refreshes
// its push time with a conditional rewrite of the same bytes. storedPaths answers whether
// the cache holds given store paths, matched by hash part and name.

import { mapConcurrent } from "../concurrency.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { NixFormatError } from "../nix/errors.ts";
import { parseNarInfo } from "../nix/narinfo.ts";
import { parseStorePath, parseStorePathBaseName, type StorePath } from "../nix/store-path.ts";
import { getObject, headObject, httpMetadataFor, putObject, R2_CONCURRENCY, storageUnavailable, type PutCondition } from "./bucket.ts";
import { narInfoKey } from "./keys.ts";
import { metaName } from "./narinfo-meta.ts";

/** A stored narinfo: its text, etag (for conditional rewrites) and metadata. */
export interface StoredNarInfo {
  text: string;
  etag: string;
  uploaded: number;
  customMetadata: Record<string, string>;
}

/** The narinfo at `key` with its metadata, or null when absent. */
export async function getNarInfoObject(bucket: R2Bucket, key: string): Promise<StoredNarInfo | null> {
  const obj = await getObject(bucket, key);
  if (obj === null) return null;
  try {
    return { text: await obj.text(), etag: obj.etag, uploaded: obj.uploaded.getTime(), customMetadata: obj.customMetadata ?? {} };
  } catch (err) {
    return storageUnavailable(err);
  }
}

/**
 * Writes a narinfo with its metadata. With `ifAbsent` or `ifEtag` the write is conditional
 * and returns false when the condition failed (someone else wrote the key meanwhile).
 */
export async function putNarInfoObject(
  bucket: R2Bucket,
  key: string,
  text: string,
  customMetadata: Record<string, string>,
  condition: PutCondition = {},
): Promise<boolean> {
  return (await putObject(bucket, key, text, { httpMetadata: httpMetadataFor(key, CONTENT_TYPE.narinfo), customMetadata }, condition)) !== null;
}

/** For each key, the stored object's metadata or null; R2_CONCURRENCY requests at a time. */
export async function headObjects(bucket: R2Bucket, keys: readonly string[]): Promise<Array<R2Object | null>> {
  return mapConcurrent(keys, R2_CONCURRENCY, (key) => headObject(bucket, key));
}

/** Whether the narinfo under `path`'s hash part is for `path` itself (same name too). */
async function storesPath(bucket: R2Bucket, path: StorePath): Promise<boolean> {
  const key = narInfoKey(path.hash);
  const head = await headObject(bucket, key);
  if (head === null) return false;
  const name = metaName(head.customMetadata);
  if (name !== null) return name === path.name;
  // Stored without this Worker's metadata (another writer, an older version): read it.
  const stored = await getNarInfoObject(bucket, key);
  if (stored === null) return false;
  try {
    return parseStorePath(parseNarInfo(stored.text).storePath)?.name === path.name;
  } catch (e) {
    // What cannot be read cannot vouch for a reference.
    if (e instanceof NixFormatError) return false;
    throw e;
  }
}

/**
 * For each store path base name (`<hash>-<name>`), whether this cache holds a narinfo for
 * exactly that path: a narinfo under the hash part with another name does not count.
 * One HEAD per path (the name is in the metadata), a GET for narinfos stored without it.
 */
export async function storedPaths(bucket: R2Bucket, baseNames: readonly string[]): Promise<boolean[]> {
  return mapConcurrent(baseNames, R2_CONCURRENCY, async (base) => {
    const path = parseStorePathBaseName(base);
    return path !== null && (await storesPath(bucket, path));
  });
}

/** One page of the narinfo objects at the top of the bucket, with their metadata. */
export interface NarInfoPage {
  objects: Array<{ key: string; size: number; uploaded: number; customMetadata: Record<string, string> }>;
  /** Where the next page starts; null after the last. */
  cursor: string | null;
}

const NARINFO_OBJECT_KEY = /^[0-9a-df-np-sv-z]{32}\.narinfo$/;

/**
 * Up to `limit` top-level objects from `cursor` on (one list call; narinfos are the only
 * objects at the top besides a few documents, which are skipped).
 */
export async function listNarInfoPage(bucket: R2Bucket, cursor: string | null, limit: number): Promise<NarInfoPage> {
  let page: R2Objects;
  try {
    page = await bucket.list({ delimiter: "/", limit, include: ["customMetadata"], ...(cursor === null ? {} : { cursor }) });
  } catch (err) {
    return storageUnavailable(err);
  }
  return {
    objects: page.objects
      .filter((o) => NARINFO_OBJECT_KEY.test(o.key))
      .map((o) => ({ key: o.key, size: o.size, uploaded: o.uploaded.getTime(), customMetadata: o.customMetadata ?? {} })),
    cursor: page.truncated ? page.cursor : null,
  };
}
