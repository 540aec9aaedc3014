// Reading and writing narinfo objects together with their customMetadata (narinfo-meta.ts):
// the upload route stores every narinfo through here, so each one carries its push time and
// references for garbage collection, and a push that finds a path already stored refreshes
// its push time with a conditional rewrite of the same bytes.

import { mapConcurrent } from "../concurrency.ts";
import { CONTENT_TYPE } from "../http/representation.ts";
import { getObject, headObject, R2_CONCURRENCY, storageUnavailable } from "./bucket.ts";

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
  condition: { ifAbsent?: boolean; ifEtag?: string } = {},
): Promise<boolean> {
  const onlyIf: R2Conditional | undefined =
    condition.ifEtag !== undefined ? { etagMatches: condition.ifEtag } : condition.ifAbsent === true ? { etagDoesNotMatch: "*" } : undefined;
  try {
    const result = await bucket.put(key, text, {
      httpMetadata: { contentType: CONTENT_TYPE.narinfo },
      customMetadata,
      ...(onlyIf === undefined ? {} : { onlyIf }),
    });
    return result !== null;
  } catch (err) {
    return storageUnavailable(err);
  }
}

/** For each key, the stored object's metadata or null; R2_CONCURRENCY requests at a time. */
export async function headObjects(bucket: R2Bucket, keys: readonly string[]): Promise<Array<R2Object | null>> {
  return mapConcurrent(keys, R2_CONCURRENCY, (key) => headObject(bucket, key));
}
