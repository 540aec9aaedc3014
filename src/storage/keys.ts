// The R2 key layout, in one place, and the mapping from request paths to keys.
//
//   <hash32>.narinfo                        narinfo of the store path with that hash part
//   nar/<filehash52>.nar[.zst|.xz|.bz2|.br|.lz4|.lzip]   (compressed) NAR, named by its sha256
//   <hash32>.ls                             JSON listing of a NAR (write-nar-listing)
//   log/<drv base name>                     build log (`nix store copy-log`, `nix log`)
//   realisations/sha256:<64 hex>!<output>.doi          CA realisation, Nix <= 2.34
//   build-trace-v2/<drv base name>/<output>.doi         CA realisation, Nix >= 2.35
//   debuginfo/<40 hex build id>             dwarffs debug info link (index-debug-info)
//   multipart/assembled/<writer>~<slot>     the R2 multipart upload of the write token <writer>
//                                           in one of its slots (storage/multipart.ts; the
//                                           facts about it are rows in D1): R2 assembles the
//                                           parts here, completion copies that to nar/<file>
//                                           through a put R2 checks against the sha256 in the
//                                           name, then deletes it
//   multipart/uploads/…, multipart/objects/…  bookkeeping of uploads from before D1 held it;
//                                           the cron's cleanup aborts and deletes it
//
// A request path maps to a key only if it matches one of these shapes exactly (PROTOCOL §7
// regexes), so no request can name any other key: traversal (`..`), encoded slashes,
// foreign prefixes and stray characters all give null. Lookups return null; the route
// decides whether that is a 404 (reads) or a 400 (writes).

import { NIX32_ALPHABET } from "../nix/nix32.ts";
import { HASH_PART_LENGTH, parseStorePathBaseName } from "../nix/store-path.ts";

export type ObjectKind = "narinfo" | "nar" | "listing" | "log" | "realisation" | "build-trace" | "debuginfo";

/** An R2 key together with what kind of object lives there. */
export interface ObjectKey {
  kind: ObjectKind;
  key: string;
}

/** A NAR file name split into its parts. */
export interface NarFileName {
  /** The 52-char nix32 sha256 of the file (its FileHash). */
  fileHash: string;
  /** "" or the compression extension including its dot, e.g. ".zst". */
  extension: string;
}

/** Compression extensions Nix's uploader appends to NAR file names (PROTOCOL §3.4). */
export const NAR_EXTENSIONS = [".xz", ".bz2", ".zst", ".br", ".lz4", ".lzip"] as const;

/** Prefix under which NAR files live; a narinfo's URL is `nar/<file>`. */
export const NAR_PREFIX = "nar/";

const N32 = `[${NIX32_ALPHABET}]`;
const NAR_FILE = new RegExp(`^(${N32}{52})\\.nar(${NAR_EXTENSIONS.map((e) => e.replace(".", "\\.")).join("|")})?$`);
const NARINFO_FILE = new RegExp(`^${N32}{32}\\.narinfo$`);
const LISTING_FILE = new RegExp(`^(${N32}{32})\\.ls$`);
// Derivation output names follow the store path name rules (they end up in path names).
const OUTPUT_NAME = /^(?!\.\.?(-|$))[0-9A-Za-z+\-._?=]{1,211}$/;
const REALISATION_ID = /^sha256:[0-9a-f]{64}!(.+)\.doi$/;
const BUILD_ID = /^[0-9a-f]{40}$/;

/** `<hash32>.narinfo`. */
export function narInfoKey(hashPart: string): string {
  return `${hashPart}.narinfo`;
}

/** `<hash32>.ls`: the listing of the path's NAR. */
export function listingKey(hashPart: string): string {
  return `${hashPart}.ls`;
}

/** The hash part of a narinfo key `<hash32>.narinfo`; null for any other key. */
export function narInfoKeyHashPart(key: string): string | null {
  return NARINFO_FILE.test(key) ? key.slice(0, HASH_PART_LENGTH) : null;
}

/** The hash part of a listing key `<hash32>.ls`; null for any other key. */
export function listingKeyHashPart(key: string): string | null {
  return LISTING_FILE.test(key) ? key.slice(0, HASH_PART_LENGTH) : null;
}

/** `nar/<file>`. */
export function narKey(fileName: string): string {
  return NAR_PREFIX + fileName;
}

/** Prefix of the multipart uploads' objects; never served (classifyKey gives null). */
export const MULTIPART_PREFIX = "multipart/";
/** Where R2 assembles the parts of each upload, one key per slot. */
export const MULTIPART_ASSEMBLED_PREFIX = `${MULTIPART_PREFIX}assembled/`;
/** Where caches from before the D1 bookkeeping kept one record object per upload. */
export const LEGACY_MULTIPART_UPLOADS_PREFIX = `${MULTIPART_PREFIX}uploads/`;

/** A write token's upload slot: `<writer>~<slot>` names it in upload ids and R2 keys. */
export interface UploadSlot {
  /** The write token's secret name (`WRITE_TOKEN`, `WRITE_TOKEN_CI`…). */
  writer: string;
  slot: number;
}

/**
 * The writer's part of slot names, `<writer>~`: a prefix that starts exactly that writer's
 * slot names. Secret names are `[A-Za-z0-9_]` in practice; anything else is percent-encoded,
 * `~` included, so that no writer's prefix is the start of another's.
 */
export function writerSlotPrefix(writer: string): string {
  return `${encodeURIComponent(writer).replace(/~/g, "%7E")}~`;
}

/** `<writer>~<slot>`. */
export function uploadSlotName(s: UploadSlot): string {
  return `${writerSlotPrefix(s.writer)}${s.slot}`;
}

/** Splits `<writer>~<slot>`; null for anything else. */
export function parseUploadSlotName(name: string): UploadSlot | null {
  const m = /^([^~/]+)~(0|[1-9][0-9]{0,5})$/.exec(name);
  if (m === null) return null;
  let writer: string;
  try {
    writer = decodeURIComponent(m[1]!);
  } catch {
    return null;
  }
  return writerSlotPrefix(writer) === `${m[1]!}~` ? { writer, slot: Number(m[2]) } : null;
}

/** `multipart/assembled/<writer>~<slot>`: the R2 multipart upload's own key. */
export function multipartAssemblyKey(s: UploadSlot): string {
  return MULTIPART_ASSEMBLED_PREFIX + uploadSlotName(s);
}

/** Where a cache from before the D1 bookkeeping had R2 assemble the upload its record `multipart/uploads/<name>` describes. */
export function legacyMultipartAssemblyKey(slotName: string): string {
  return `${MULTIPART_PREFIX}objects/${slotName}/assembled`;
}

/** Splits `<filehash52>.nar[.ext]`; null for any other name. */
export function parseNarFileName(fileName: string): NarFileName | null {
  const m = NAR_FILE.exec(fileName);
  if (m === null) return null;
  return { fileHash: m[1]!, extension: m[2] ?? "" };
}

function isDrvBaseName(s: string): boolean {
  return s.endsWith(".drv") && parseStorePathBaseName(s) !== null;
}

/** Classifies an R2 key; null unless it has one of the layout's shapes. */
export function classifyKey(key: string): ObjectKey | null {
  if (NARINFO_FILE.test(key)) return { kind: "narinfo", key };
  if (LISTING_FILE.test(key)) return { kind: "listing", key };
  const slash = key.indexOf("/");
  if (slash < 0) return null;
  const prefix = key.slice(0, slash);
  const rest = key.slice(slash + 1);
  switch (prefix) {
    case "nar":
      return parseNarFileName(rest) !== null ? { kind: "nar", key } : null;
    case "log":
      return isDrvBaseName(rest) ? { kind: "log", key } : null;
    case "realisations": {
      const output = REALISATION_ID.exec(rest)?.[1];
      return output !== undefined && OUTPUT_NAME.test(output) ? { kind: "realisation", key } : null;
    }
    case "build-trace-v2": {
      const parts = rest.split("/");
      if (parts.length !== 2) return null;
      const [drv, file] = parts as [string, string];
      if (!isDrvBaseName(drv) || !file.endsWith(".doi")) return null;
      return OUTPUT_NAME.test(file.slice(0, -".doi".length)) ? { kind: "build-trace", key } : null;
    }
    case "debuginfo":
      return BUILD_ID.test(rest) ? { kind: "debuginfo", key } : null;
    default:
      return null;
  }
}

/** Kinds whose keys can contain `?` (store path and output names may): the query is part of the key. */
const QUERY_IN_KEY: ReadonlySet<string> = new Set(["log", "realisations", "build-trace-v2"]);

/**
 * The object a request URL names, or null. Takes the path after the origin (percent-decoded,
 * then validated, so `%2F` or `%2e%2e` cannot smuggle a slash or dot segment into a key). For
 * logs and realisations the query string belongs to the key, because Nix does not encode
 * the `?` that store path names may contain; elsewhere the query is ignored.
 */
export function keyFromUrl(url: URL): ObjectKey | null {
  const path = url.pathname;
  if (!path.startsWith("/")) return null;
  const prefix = path.slice(1).split("/", 1)[0]!;
  // url.search drops a lone trailing "?"; the serialised href keeps it.
  const raw = QUERY_IN_KEY.has(prefix) ? url.href.slice(url.origin.length).replace(/#.*$/, "") : path;
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw.slice(1));
  } catch {
    return null;
  }
  return classifyKey(decoded);
}
