// Nix's base-32 ("nix32"), used for store path hash parts and `sha256:` hash strings.
//
// Alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no e o t u). The bytes are read as one
// little-endian integer and its 5-bit digits are written most significant first, so an
// n-byte input gives ceil(8n/5) characters (20 → 32, 32 → 52, 64 → 103). This is NOT
// RFC 4648 base32. Decoding needs the byte length and rejects bits beyond it (PROTOCOL §2).

import { NixFormatError } from "./errors.ts";

export const NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

const DIGIT_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT_VALUE[NIX32_ALPHABET.charCodeAt(i)] = i;

/** Number of nix32 characters for `byteLength` bytes: ceil(8n/5). */
export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

/** Encodes bytes as nix32 (Nix's `printHash32`). */
export function encodeNix32(bytes: Uint8Array): string {
  const n = bytes.length;
  let out = "";
  for (let k = nix32Length(n) - 1; k >= 0; k--) {
    const bit = k * 5;
    const i = bit >> 3;
    const j = bit & 7;
    let v = bytes[i]! >> j;
    if (i + 1 < n) v |= bytes[i + 1]! << (8 - j);
    out += NIX32_ALPHABET[v & 0x1f];
  }
  return out;
}

/**
 * Decodes a nix32 string of exactly `nix32Length(byteLength)` characters. Throws
 * NixFormatError on a wrong length, a character outside the alphabet (including
 * upper case), or non-zero bits beyond the last byte (e.g. a 52-char string that does
 * not start with 0 or 1).
 */
export function decodeNix32(s: string, byteLength: number): Uint8Array {
  const len = nix32Length(byteLength);
  if (s.length !== len) {
    throw new NixFormatError(`nix32 string has length ${s.length}, expected ${len} for ${byteLength} bytes`);
  }
  const out = new Uint8Array(byteLength);
  for (let k = 0; k < len; k++) {
    const code = s.charCodeAt(len - 1 - k);
    const d = code < 128 ? DIGIT_VALUE[code]! : -1;
    if (d < 0) throw new NixFormatError(`invalid nix32 character ${JSON.stringify(s[len - 1 - k])}`);
    const bit = k * 5;
    const i = bit >> 3;
    const j = bit & 7;
    out[i]! |= (d << j) & 0xff;
    const carry = d >> (8 - j);
    if (i + 1 < byteLength) out[i + 1]! |= carry;
    else if (carry !== 0) throw new NixFormatError("nix32 string has bits set beyond the hash length");
  }
  return out;
}
