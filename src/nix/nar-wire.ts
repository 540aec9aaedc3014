// The NAR (Nix ARchive) format's wire rules, shared by the writer (nar-writer.ts), the
// reader and validator (nar-reader.ts) and the listing (nar-listing.ts), as snix's
// nix-compat splits its `nar` module (PROTOCOL §1):
//
//   nar   = str("nix-archive-1") node
//   node  = str("(") str("type") body str(")")
//   body  = str("regular") [ str("executable") str("") ] str("contents") str(contents)
//         | str("symlink") str("target") str(target)
//         | str("directory") { entry }
//   entry = str("entry") str("(") str("name") str(name) str("node") node str(")")
//   str(s) = u64le(len(s)) s zero-padding-to-8
//
// Directory entries are sorted by the raw bytes of their names (not JavaScript string
// order) and must be unique; names may not be empty, ".", "..", or contain "/" or NUL.

import { utf8 } from "./encoding.ts";

export const NAR_MAGIC = "nix-archive-1";
/** Nix (2.35+) refuses to dump or parse nesting of this many directory levels or more. */
export const NAR_MAX_DEPTH = 64;
/** Longest entry name Nix (2.35+) accepts: NAME_MAX on the file systems Nix supports. */
export const NAR_MAX_NAME_LENGTH = 255;
/** Longest symlink target Nix (2.35+) accepts: PATH_MAX (4096) minus the terminating NUL. */
export const NAR_MAX_TARGET_LENGTH = 4095;
/** Longest tag Nix (2.35+) reads; every keyword is at most 13 bytes ("nix-archive-1"). */
export const NAR_MAX_TAG_LENGTH = 32;
/** An in-memory file system object (tests, small NARs); names and targets as UTF-8 strings. */
export type NarTree =
  | { type: "regular"; executable?: boolean; contents: Uint8Array }
  | { type: "symlink"; target: string }
  | { type: "directory"; entries: Record<string, NarTree> };

/** Zero bytes after a string of `length` bytes, up to the next multiple of 8. */
export function narPadding(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** u64 little-endian; exact for every safe integer (sizes up to 2^53 − 1). */
export function encodeU64(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${n} is not a NAR u64`);
  const out = new Uint8Array(8);
  writeU64(out, 0, n);
  return out;
}

/** Writes n as a u64 little-endian at buf[at..at+8]. */
export function writeU64(buf: Uint8Array, at: number, n: number): void {
  const lo = n % 0x1_0000_0000;
  const hi = (n - lo) / 0x1_0000_0000;
  buf[at] = lo & 0xff;
  buf[at + 1] = (lo >>> 8) & 0xff;
  buf[at + 2] = (lo >>> 16) & 0xff;
  buf[at + 3] = lo >>> 24;
  buf[at + 4] = hi & 0xff;
  buf[at + 5] = (hi >>> 8) & 0xff;
  buf[at + 6] = (hi >>> 16) & 0xff;
  buf[at + 7] = hi >>> 24;
}

/** str(s): length, bytes, zero padding to 8. */
export function encodeNarString(s: Uint8Array | string): Uint8Array {
  const bytes = typeof s === "string" ? utf8(s) : s;
  const out = new Uint8Array(8 + bytes.length + narPadding(bytes.length));
  writeU64(out, 0, bytes.length);
  out.set(bytes, 8);
  return out;
}

const DOT = 0x2e;
const SLASH = 0x2f;

/** Why `name` cannot be a NAR entry name, or null if it can. */
export function narEntryNameProblem(name: Uint8Array): string | null {
  if (name.length === 0) return "empty entry name";
  if (name.length > NAR_MAX_NAME_LENGTH) return `entry name longer than ${NAR_MAX_NAME_LENGTH} bytes`;
  if (name[0] === DOT && (name.length === 1 || (name.length === 2 && name[1] === DOT))) return `entry name "${name.length === 1 ? "." : ".."}"`;
  if (name.includes(SLASH)) return 'entry name contains "/"';
  if (name.includes(0)) return "entry name contains NUL";
  return null;
}

/** Why `target` cannot be a symlink target (Nix 2.35+ rules), or null if it can. */
export function narSymlinkTargetProblem(target: Uint8Array): string | null {
  if (target.length === 0) return "empty symlink target";
  if (target.length > NAR_MAX_TARGET_LENGTH) return `symlink target longer than ${NAR_MAX_TARGET_LENGTH} bytes`;
  if (target.includes(0)) return "symlink target contains NUL";
  return null;
}
