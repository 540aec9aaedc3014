// What the Worker writes into each narinfo object's R2 customMetadata, so that garbage
// collection learns a path's push time, references and NAR from a bucket *listing*
// (`list({ include: ["customMetadata"] })`, one operation per page of objects) instead of
// one GET per narinfo.
//
//   v   "1"                          version of this layout
//   p   <decimal ms since epoch>     when the path was last pushed (created, re-pushed,
//                                    signatures merged, or refreshed by a push that found it)
//   r   <hash32> <hash32> …          hash parts of the references, the path's own excluded;
//                                    absent when they do not fit (then GC reads the body)
//   u   <file>                       the NAR's file name (the narinfo's URL without `nar/`)
//   fs  <decimal>                    FileSize
//   ns  <decimal>                    NarSize
//   n   <name>                       the store path's name (for reports)
//
// R2 allows 8192 bytes of metadata per object (keys and values); references past
// MAX_METADATA_BYTES are left out rather than truncated, since a partial list would let GC
// delete a reference of a kept path. Narinfos stored without this metadata (before it
// existed, or by another writer) decode to null and GC falls back to reading them.
//
// The metadata is read as untrusted input: a field that does not have its exact shape
// (a reference that is not a hash part, a `u` that is not a NAR file name, a version this
// code does not know) counts as absent, never as "nothing there". GC uses the metadata
// instead of the body only when `metaLinks` finds both the references and the NAR in it.

import { referenceHashes, type NarInfo } from "../nix/narinfo.ts";
import { isHashPart, parseStorePath } from "../nix/store-path.ts";
import { NAR_PREFIX, parseNarFileName } from "./keys.ts";

/** What GC needs to know about a stored narinfo without reading it. */
export interface NarInfoMeta {
  /** Last push, ms since the epoch. */
  pushed: number;
  /** Hash parts of the references other than the path itself; null: read the narinfo. */
  refs: string[] | null;
  /** The NAR's file name (`<filehash52>.nar[.ext]`), null when unknown or not such a name. */
  narFile: string | null;
  fileSize: number | null;
  narSize: number | null;
  /** The store path's name, null when unknown. */
  name: string | null;
}

const VERSION = "1";

/**
 * Budget for the metadata of one narinfo: R2's limit is 8192 bytes for keys and values
 * together; stay well below it (the name alone may take 211).
 */
export const MAX_METADATA_BYTES = 7168;

function decimal(value: string | undefined): number | null {
  if (value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

/** The metadata for `info`, pushed at `pushed` (ms). */
export function encodeNarInfoMeta(info: NarInfo, pushed: number): Record<string, string> {
  const path = parseStorePath(info.storePath);
  const meta: Record<string, string> = { v: VERSION, p: String(Math.floor(pushed)) };
  if (info.url.startsWith(NAR_PREFIX)) meta.u = info.url.slice(NAR_PREFIX.length);
  if (info.fileSize !== undefined) meta.fs = String(info.fileSize);
  meta.ns = String(info.narSize);
  if (path !== null) meta.n = path.name;
  const used = Object.entries(meta).reduce((n, [k, v]) => n + k.length + v.length, 0);
  const joined = referenceHashes(info).join(" ");
  if (used + 1 + joined.length <= MAX_METADATA_BYTES) meta.r = joined;
  return meta;
}

/** The metadata of a stored narinfo, or null when it was stored without (or with another layout). */
export function decodeNarInfoMeta(meta: Record<string, string> | undefined): NarInfoMeta | null {
  if (meta === undefined || meta.v !== VERSION) return null;
  const pushed = decimal(meta.p);
  if (pushed === null) return null;
  let refs: string[] | null = null;
  if (meta.r !== undefined) {
    refs = meta.r === "" ? [] : meta.r.split(" ");
    if (!refs.every(isHashPart)) refs = null;
  }
  return {
    pushed,
    refs,
    narFile: meta.u !== undefined && parseNarFileName(meta.u) !== null ? meta.u : null,
    fileSize: decimal(meta.fs),
    narSize: decimal(meta.ns),
    name: meta.n ?? null,
  };
}

// Cheap accessors for the collector, which reads the metadata of every narinfo of the bucket
// and needs most fields only for some of them. Each returns null unless the metadata has
// this layout and the field is well-formed.

function current(meta: Record<string, string> | undefined): meta is Record<string, string> {
  return meta !== undefined && meta.v === VERSION;
}

/** The push time (ms). */
export function metaPushTime(meta: Record<string, string> | undefined): number | null {
  return current(meta) ? decimal(meta.p) : null;
}

/** FileSize ("fs") or NarSize ("ns"). */
export function metaNumber(meta: Record<string, string> | undefined, field: "fs" | "ns"): number | null {
  return current(meta) ? decimal(meta[field]) : null;
}

/** What GC follows from a kept narinfo: the hash parts it references and its NAR's file hash. */
export interface NarInfoLinks {
  refs: string[];
  narFileHash: string;
}

/**
 * The references and NAR recorded in the metadata, or null unless both are there and
 * well-formed: then GC reads the narinfo itself. Partial or damaged metadata must never
 * stand for "no references" or "no NAR", or GC would delete what a kept path needs.
 */
export function metaLinks(meta: Record<string, string> | undefined): NarInfoLinks | null {
  if (!current(meta) || meta.r === undefined || meta.u === undefined) return null;
  const file = parseNarFileName(meta.u);
  if (file === null) return null;
  const refs = meta.r === "" ? [] : meta.r.split(" ");
  for (const ref of refs) if (!isHashPart(ref)) return null;
  return { refs, narFileHash: file.fileHash };
}

export function metaName(meta: Record<string, string> | undefined): string | null {
  return current(meta) ? (meta.n ?? null) : null;
}
