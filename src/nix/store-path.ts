// Store paths: `<storeDir>/<hash>-<name>` (PROTOCOL §7), with the strict rules of Nix 2.21+
// plus the dash check of current master.
//
//   hash  = 32 chars of the nix32 alphabet [0-9a-df-np-sv-z] (any such string is valid)
//   base  = hash "-" name                       (the dash at index 32 is required)
//   name  = 1..211 chars of [A-Za-z0-9+\-._?=], not "." or "..", not starting ".-" or "..-"
//
// Parsers return null for anything invalid: a store path is a lookup key, and the caller
// decides what an invalid one means (a 400, a NarInfoError naming the field, …).

import { NIX32_ALPHABET } from "./nix32.ts";

/** The only store directory this cache serves (binary caches are per store dir). */
export const STORE_DIR = "/nix/store";

/** Hash part length: 160 bits in nix32. */
export const HASH_PART_LENGTH = 32;
/** Longest name Nix accepts (`name longer than 211 characters` otherwise, PROTOCOL §7). */
export const MAX_NAME_LENGTH = 211;

export interface StorePath {
  hash: string;
  name: string;
}

const HASH_PART = new RegExp(`^[${NIX32_ALPHABET}]{${HASH_PART_LENGTH}}$`);
// The negative lookahead is Nix's own regex (path-regex.hh): the name may not be `.` or
// `..`, nor start with `.-` or `..-`, since 2.21.
const NAME = new RegExp(`^(?!\\.\\.?(-|$))[0-9a-zA-Z+\\-._?=]{1,${MAX_NAME_LENGTH}}$`);
// A list of base names separated by single spaces (a narinfo's References), checked in one
// native regex run instead of one per name: the same hash and name rules, where the end of
// a name is a space or the end of the list. The name's length limit is checked apart: a
// counted repeat ({1,211}) keeps a backtrack point per character, and on 900 names that
// made the check ~17 times slower wherever V8 interprets the regex (its first runs).
const BASE_NAME_IN_LIST = `[${NIX32_ALPHABET}]{${HASH_PART_LENGTH}}-(?!\\.\\.?(?:-| |$))[0-9a-zA-Z+\\-._?=]+`;
const BASE_NAME_LIST = new RegExp(`^(?:${BASE_NAME_IN_LIST}(?: (?!$)|$))+$`);
/** Longest base name: the hash part, the dash and the longest name. */
const MAX_BASE_NAME_LENGTH = HASH_PART_LENGTH + 1 + MAX_NAME_LENGTH;
// Characters of hash parts and spaces; where the spaces are is checked apart (a counted
// repeat is slow where V8 interprets the regex, as above).
const HASH_PART_LIST_CHARS = new RegExp(`^[${NIX32_ALPHABET} ]*$`);

/** True for 32 characters of the nix32 alphabet. */
export function isHashPart(s: string): boolean {
  return HASH_PART.test(s);
}

/** True for a valid store path name (the part after `<hash>-`). */
export function isStorePathName(s: string): boolean {
  return NAME.test(s);
}

/** Parses `<hash>-<name>`; null if invalid. */
export function parseStorePathBaseName(base: string): StorePath | null {
  if (base.length < HASH_PART_LENGTH + 2 || base[HASH_PART_LENGTH] !== "-") return null;
  const hash = base.slice(0, HASH_PART_LENGTH);
  const name = base.slice(HASH_PART_LENGTH + 1);
  if (!isHashPart(hash) || !isStorePathName(name)) return null;
  return { hash, name };
}

/**
 * True when `list` is one or more valid base names (`<hash>-<name>`) separated by single
 * spaces: what parseStorePathBaseName accepts for each, without splitting first.
 */
export function isBaseNameList(list: string): boolean {
  if (!BASE_NAME_LIST.test(list)) return false;
  for (let start = 0; ; ) {
    const space = list.indexOf(" ", start);
    const end = space < 0 ? list.length : space;
    if (end - start > MAX_BASE_NAME_LENGTH) return false;
    if (space < 0) return true;
    start = space + 1;
  }
}

/** True when `list` is zero or more hash parts separated by single spaces (one regex run). */
export function isHashPartList(list: string): boolean {
  if (list === "") return true;
  if ((list.length + 1) % (HASH_PART_LENGTH + 1) !== 0 || !HASH_PART_LIST_CHARS.test(list)) return false;
  // Each part's first space is right after its 32 characters, and the last part has none.
  for (let start = 0; start < list.length; start += HASH_PART_LENGTH + 1) {
    const end = start + HASH_PART_LENGTH;
    if (list.indexOf(" ", start) !== (end < list.length ? end : -1)) return false;
  }
  return true;
}

/** Parses `<storeDir>/<hash>-<name>`; null if invalid or in another store directory. */
export function parseStorePath(full: string, storeDir: string = STORE_DIR): StorePath | null {
  const prefix = storeDir + "/";
  if (!full.startsWith(prefix)) return null;
  return parseStorePathBaseName(full.slice(prefix.length));
}

/** `<hash>-<name>`. */
export function storePathBaseName(p: StorePath): string {
  return `${p.hash}-${p.name}`;
}

/** `<storeDir>/<hash>-<name>`. */
export function formatStorePath(p: StorePath, storeDir: string = STORE_DIR): string {
  return `${storeDir}/${storePathBaseName(p)}`;
}
