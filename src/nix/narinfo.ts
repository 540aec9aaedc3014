// `.narinfo` documents: parse and format, byte-exact as Nix reads and writes them
// (PROTOCOL §3).
//
//   narinfo = { line }            every line is  Key ": " value "\n"  (one space, LF only,
//   line    = key ": " value "\n"  final newline required; the value runs to the next LF)
//
// Nix writes the fields in this order (NarInfo::to_string), which formatNarInfo follows:
//   StorePath URL Compression FileHash FileSize NarHash NarSize References Deriver System
//   Sig… CA
// Unknown fields are kept in `extra` and written after CA. `References: ` keeps its trailing
// space when there are no references; a narinfo that has no References line at all (as
// harmonia and nix-serve write them) remembers that in `omitReferencesLine`.
//
// The parser follows Nix's meaning of every field but is stricter than Nix's loop where
// Nix's leniency only hides mistakes: CRLF, a missing space after the colon, a missing
// final newline, repeated single-valued fields, malformed Sig lines (fatal since Nix 2.34),
// unknown Compression values (rejected since 2.35) and invalid store paths are all errors.

import { NarInfoError, NixFormatError } from "./errors.ts";
import { parseSha256 } from "./hash.ts";
import { parseSignature } from "./signature.ts";
import { HASH_PART_LENGTH, isBaseNameList, parseStorePath, parseStorePathBaseName, STORE_DIR } from "./store-path.ts";

export interface NarInfo {
  /** Full path, /nix/store/<hash>-<name>. */
  storePath: string;
  url: string;
  /** Undefined when the line is absent (Nix then means bzip2); "" is kept as written. */
  compression?: string;
  /** As written (any accepted hash form). */
  fileHash?: string;
  fileSize?: number;
  /** As written (any accepted hash form); the fingerprint re-encodes it to nix32. */
  narHash: string;
  narSize: number;
  /** Base names `<hash>-<name>`, as written (Nix writes them sorted). */
  references: string[];
  /** Base name of the .drv. Nix's `unknown-deriver` placeholder parses as undefined. */
  deriver?: string;
  system?: string;
  /** `name:base64`, in file order (Nix writes them sorted). */
  sigs: string[];
  ca?: string;
  /** Unknown fields, in order; written after the known ones. */
  extra: Array<[key: string, value: string]>;
  /** True when the document had no References line and no references: format omits it too. */
  omitReferencesLine?: boolean;
}

/**
 * Largest narinfo accepted, in characters (bytes for the ASCII narinfos Nix writes). Nix
 * has no limit. Real narinfos with thousands of references exist (NixOS system closures,
 * texlive and Haskell package sets reference 2000–5000 paths at ~60 bytes each, a few
 * hundred KiB); 1 MiB still fits 4000 references of the maximal 244-char base name, while
 * keeping the Worker's parse of a hostile upload to a few milliseconds of CPU.
 */
export const MAX_NARINFO_LENGTH = 1024 * 1024;

/** Compression names current Nix accepts (2.35 rejects others); "" and absence mean bzip2. */
export const COMPRESSION_METHODS: readonly string[] = [
  "none", "br", "bzip2", "compress", "grzip", "gzip", "lrzip", "lz4", "lzip", "lzma", "lzop", "xz", "zstd",
];

/** File extension Nix gives each compression method's NAR files; methods not listed get none. */
const EXTENSION_OF_METHOD: Readonly<Record<string, string>> = {
  xz: ".xz",
  bzip2: ".bz2",
  zstd: ".zst",
  br: ".br",
  lz4: ".lz4",
  lzip: ".lzip",
};

/**
 * The extension (after `.nar`) of a NAR file compressed with `compression`, as the
 * narinfo says it: Nix's naming, `nar/<filehash>.nar.xz` (a missing or empty Compression
 * means bzip2, so `.bz2`).
 */
export function extensionFor(compression: string | undefined): string {
  const method = compression === undefined || compression === "" ? "bzip2" : compression;
  return EXTENSION_OF_METHOD[method] ?? "";
}

/** Nix's placeholder for "no deriver" (Deriver line of old narinfos). */
const UNKNOWN_DERIVER = "unknown-deriver";

// Field keys as Nix writes them and as tools add them: a letter, then letters, digits, `-`, `_`.
const KEY = /^[A-Za-z][A-Za-z0-9_-]*$/;
// Sizes: plain decimal without leading zeros (what Nix writes), within JavaScript's exact range.
const DECIMAL = /^(0|[1-9][0-9]*)$/;
// CA: `text:…` or `fixed:…` (fixed:r:, fixed:git: …), no whitespace.
const CONTENT_ADDRESS = /^(text|fixed):\S+$/;

const SINGLE_VALUED = new Set([
  "StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "References", "Deriver", "System", "CA",
]);

function parseSize(field: string, value: string): number {
  if (!DECIMAL.test(value)) throw new NarInfoError(field, `${JSON.stringify(value)} is not a decimal size`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new NarInfoError(field, `${value} is too large`);
  return n;
}

function checkHash(field: string, value: string): string {
  try {
    parseSha256(value);
  } catch (e) {
    if (e instanceof NixFormatError) throw new NarInfoError(field, e.message);
    throw e;
  }
  return value;
}

/** True when every name is greater than the one before it (so none is listed twice). */
function strictlyAscending(names: readonly string[]): boolean {
  for (let i = 1; i < names.length; i++) if (!(names[i - 1]! < names[i]!)) return false;
  return true;
}

/**
 * The base names of a non-empty References value, each valid and listed once. A narinfo
 * of hundreds of references is checked with one regex run, and, as Nix writes them sorted,
 * once-only by comparing neighbours; the name-by-name loop runs only to name what is wrong.
 */
function checkReferences(field: string, value: string): string[] {
  const references = value.split(" ");
  if (isBaseNameList(value) && strictlyAscending(references)) return references;
  const unique = new Set<string>();
  for (const ref of references) {
    if (parseStorePathBaseName(ref) === null) throw new NarInfoError(field, `${JSON.stringify(ref)} is not a valid store path base name`);
    if (unique.has(ref)) throw new NarInfoError(field, `${ref} is listed twice`);
    unique.add(ref);
  }
  return references;
}

/** Parses a narinfo document; throws NarInfoError naming the offending field. */
export function parseNarInfo(text: string): NarInfo {
  if (text.length > MAX_NARINFO_LENGTH) {
    throw new NarInfoError("(document)", `larger than ${MAX_NARINFO_LENGTH} characters`);
  }
  if (text.length === 0) throw new NarInfoError("(document)", "empty document");

  const lines = text.split("\n");
  // split() leaves "" after the final LF; anything else there is an unterminated last line.
  const last = lines.pop()!;
  if (last !== "") {
    const colon = last.indexOf(":");
    throw new NarInfoError(colon > 0 ? last.slice(0, colon) : `line ${lines.length + 1}`, "missing final newline");
  }

  let storePath: string | undefined;
  let url: string | undefined;
  let compression: string | undefined;
  let fileHash: string | undefined;
  let fileSize: number | undefined;
  let narHash: string | undefined;
  let narSize: number | undefined;
  let references: string[] | undefined;
  let deriver: string | undefined;
  let system: string | undefined;
  let ca: string | undefined;
  const sigs: string[] = [];
  const extra: Array<[string, string]> = [];
  const seen = new Set<string>();

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    const lineField = `line ${i + 1}`;
    if (line.includes("\r")) {
      throw new NarInfoError(colon > 0 ? line.slice(0, colon) : lineField, "carriage return in line (CRLF line endings are not allowed)");
    }
    if (colon < 0) throw new NarInfoError(lineField, `expected "Key: value", got ${JSON.stringify(line.slice(0, 80))}`);
    const key = line.slice(0, colon);
    if (!KEY.test(key)) {
      // Name the field when only surrounding whitespace spoils it (" URL: …", which Nix
      // would treat as an unknown key, leaving URL missing).
      const trimmed = key.trim();
      throw new NarInfoError(KEY.test(trimmed) ? trimmed : lineField, `invalid key ${JSON.stringify(key.slice(0, 80))}`);
    }
    if (line[colon + 1] !== " ") throw new NarInfoError(key, 'expected exactly one space after ":"');
    const value = line.slice(colon + 2);

    if (SINGLE_VALUED.has(key)) {
      if (seen.has(key)) throw new NarInfoError(key, "field appears more than once");
      seen.add(key);
    }

    switch (key) {
      case "StorePath":
        if (parseStorePath(value) === null) throw new NarInfoError(key, `${JSON.stringify(value)} is not a valid ${STORE_DIR} path`);
        storePath = value;
        break;
      case "URL":
        if (value === "") throw new NarInfoError(key, "empty URL");
        url = value;
        break;
      case "Compression":
        if (value !== "" && !COMPRESSION_METHODS.includes(value)) {
          throw new NarInfoError(key, `unknown compression method ${JSON.stringify(value)}`);
        }
        compression = value;
        break;
      case "FileHash":
        fileHash = checkHash(key, value);
        break;
      case "FileSize":
        fileSize = parseSize(key, value);
        break;
      case "NarHash":
        narHash = checkHash(key, value);
        break;
      case "NarSize":
        narSize = parseSize(key, value);
        if (narSize === 0) throw new NarInfoError(key, "NarSize must be greater than 0");
        break;
      case "References":
        references = value === "" ? [] : checkReferences(key, value);
        break;
      case "Deriver":
        if (value === UNKNOWN_DERIVER) break;
        if (parseStorePathBaseName(value) === null) throw new NarInfoError(key, `${JSON.stringify(value)} is not a valid store path base name`);
        deriver = value;
        break;
      case "System":
        system = value;
        break;
      case "Sig":
        try {
          parseSignature(value);
        } catch (e) {
          if (e instanceof NixFormatError) throw new NarInfoError(key, e.message);
          throw e;
        }
        sigs.push(value);
        break;
      case "CA":
        if (!CONTENT_ADDRESS.test(value)) throw new NarInfoError(key, `${JSON.stringify(value)} is not a content address`);
        ca = value;
        break;
      default:
        extra.push([key, value]);
    }
  }

  if (storePath === undefined) throw new NarInfoError("StorePath", "missing");
  if (url === undefined) throw new NarInfoError("URL", "missing");
  if (narHash === undefined) throw new NarInfoError("NarHash", "missing");
  if (narSize === undefined) throw new NarInfoError("NarSize", "missing");

  const info: NarInfo = { storePath, url, narHash, narSize, references: references ?? [], sigs, extra };
  if (compression !== undefined) info.compression = compression;
  if (fileHash !== undefined) info.fileHash = fileHash;
  if (fileSize !== undefined) info.fileSize = fileSize;
  if (deriver !== undefined) info.deriver = deriver;
  if (system !== undefined) info.system = system;
  if (ca !== undefined) info.ca = ca;
  if (references === undefined) info.omitReferencesLine = true;
  return info;
}

/**
 * Formats a narinfo in Nix's field order, byte-exact (`Key: value\n`). Values are written
 * as given (hash forms, reference and Sig order); Nix itself writes nix32 hashes and sorted
 * References and Sig lines. Throws NarInfoError for a value that would break the line
 * syntax (a line break) or a size that is not a non-negative integer.
 */
export function formatNarInfo(info: NarInfo): string {
  let out = "";
  const line = (key: string, value: string): void => {
    if (value.includes("\n") || value.includes("\r")) throw new NarInfoError(key, "value contains a line break");
    out += `${key}: ${value}\n`;
  };
  const size = (key: string, n: number): string => {
    if (!Number.isSafeInteger(n) || n < 0) throw new NarInfoError(key, `${n} is not a size`);
    return String(n);
  };

  line("StorePath", info.storePath);
  line("URL", info.url);
  if (info.compression !== undefined) line("Compression", info.compression);
  if (info.fileHash !== undefined) line("FileHash", info.fileHash);
  if (info.fileSize !== undefined) line("FileSize", size("FileSize", info.fileSize));
  line("NarHash", info.narHash);
  line("NarSize", size("NarSize", info.narSize));
  if (info.references.length > 0 || !info.omitReferencesLine) line("References", info.references.join(" "));
  if (info.deriver !== undefined) line("Deriver", info.deriver);
  if (info.system !== undefined) line("System", info.system);
  for (const sig of info.sigs) line("Sig", sig);
  if (info.ca !== undefined) line("CA", info.ca);
  for (const [key, value] of info.extra) {
    if (!KEY.test(key) || SINGLE_VALUED.has(key) || key === "Sig") {
      throw new NarInfoError(key, "not a valid key for an extra (unknown) field");
    }
    line(key, value);
  }
  return out;
}

/** The 32-char hash part of the narinfo's StorePath (its `<hash>.narinfo` name). */
export function narInfoHashPart(info: Pick<NarInfo, "storePath">): string {
  const p = parseStorePath(info.storePath);
  if (p === null) throw new NarInfoError("StorePath", `${JSON.stringify(info.storePath)} is not a valid ${STORE_DIR} path`);
  return p.hash;
}

const referenceHashesOf = new WeakMap<readonly string[], { storePath: string; hashes: readonly string[] }>();

/**
 * The hash parts of the narinfo's references other than its own path, each once, in
 * order: what the index and the collector follow. References are those parseNarInfo
 * checked (valid base names); computed once per references array (a narinfo of 900
 * references is asked for them several times on its way into the cache).
 */
export function referenceHashes(info: Pick<NarInfo, "storePath" | "references">): readonly string[] {
  const cached = referenceHashesOf.get(info.references);
  if (cached !== undefined && cached.storePath === info.storePath) return cached.hashes;
  const self = parseStorePath(info.storePath)?.hash;
  let hashes: string[];
  if (strictlyAscending(info.references)) {
    // Sorted (as Nix writes them): names sharing a hash part are neighbours.
    hashes = [];
    let previous: string | undefined;
    for (const ref of info.references) {
      const hash = ref.slice(0, HASH_PART_LENGTH);
      if (hash !== self && hash !== previous) hashes.push(hash);
      previous = hash;
    }
  } else {
    const seen = new Set<string>();
    for (const ref of info.references) {
      const hash = ref.slice(0, HASH_PART_LENGTH);
      if (hash !== self) seen.add(hash);
    }
    hashes = [...seen];
  }
  referenceHashesOf.set(info.references, { storePath: info.storePath, hashes });
  return hashes;
}

/**
 * The narinfo text with its URL line replaced and every other byte kept, so signatures and
 * unknown fields stay exactly as written (URL is not signed). `text` must have passed
 * parseNarInfo, which guarantees exactly one `URL: ` line.
 */
export function replaceNarInfoUrl(text: string, url: string): string {
  return text.replace(/^URL: .*$/m, () => `URL: ${url}`);
}
