// Byte encodings shared by the core: hex, standard base64 (RFC 4648 §4, padded, strict),
// UTF-8, and unsigned lexicographic byte comparison. Runtime-neutral (no Buffer, no atob)
// so the same code runs in workerd and Node.

import { NixFormatError } from "./errors.ts";

const HEX_DIGITS = "0123456789abcdef";
const BYTE_TO_HEX: string[] = Array.from({ length: 256 }, (_, i) => HEX_DIGITS[i >> 4]! + HEX_DIGITS[i & 15]!);

/** Lower-case hex of the bytes. */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_HEX[bytes[i]!];
  return out;
}

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48; // 0-9
  if (code >= 97 && code <= 102) return code - 87; // a-f
  if (code >= 65 && code <= 70) return code - 55; // A-F
  return -1;
}

/** Decodes hex (either case, even length); throws NixFormatError on anything else. */
export function fromHex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new NixFormatError(`hex string has odd length ${s.length}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexValue(s.charCodeAt(2 * i));
    const lo = hexValue(s.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) throw new NixFormatError(`invalid hex digit near position ${2 * i}`);
    out[i] = (hi << 4) | lo;
  }
  return out;
}

const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < BASE64_ALPHABET.length; i++) BASE64_VALUE[BASE64_ALPHABET.charCodeAt(i)] = i;

/** Standard base64 with `=` padding, as Nix writes keys, signatures and SRI hashes. */
export function toBase64(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += BASE64_ALPHABET[n >> 18]! + BASE64_ALPHABET[(n >> 12) & 63]! + BASE64_ALPHABET[(n >> 6) & 63]! + BASE64_ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += BASE64_ALPHABET[n >> 18]! + BASE64_ALPHABET[(n >> 12) & 63]! + "==";
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += BASE64_ALPHABET[n >> 18]! + BASE64_ALPHABET[(n >> 12) & 63]! + BASE64_ALPHABET[(n >> 6) & 63]! + "=";
  }
  return out;
}

function base64Value(s: string, i: number): number {
  const code = s.charCodeAt(i);
  const v = code < 128 ? BASE64_VALUE[code]! : -1;
  if (v < 0) throw new NixFormatError(`invalid base64 character at position ${i}`);
  return v;
}

/**
 * Strict standard base64: length a multiple of 4, `=` only as final padding, no
 * whitespace, and the unused bits of the last symbol zero (the canonical encoding), so
 * that every accepted string is exactly what `toBase64` gives back.
 */
export function fromBase64(s: string): Uint8Array {
  if (s.length % 4 !== 0) throw new NixFormatError(`base64 length ${s.length} is not a multiple of 4`);
  let pad = 0;
  if (s.endsWith("==")) pad = 2;
  else if (s.endsWith("=")) pad = 1;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  const full = pad === 0 ? s.length : s.length - 4;
  let o = 0;
  for (let i = 0; i < full; i += 4) {
    const n = (base64Value(s, i) << 18) | (base64Value(s, i + 1) << 12) | (base64Value(s, i + 2) << 6) | base64Value(s, i + 3);
    out[o++] = n >> 16;
    out[o++] = (n >> 8) & 255;
    out[o++] = n & 255;
  }
  if (pad === 2) {
    const a = base64Value(s, full);
    const b = base64Value(s, full + 1);
    if ((b & 15) !== 0) throw new NixFormatError("non-canonical base64 (unused bits set)");
    out[o] = (a << 2) | (b >> 4);
  } else if (pad === 1) {
    const a = base64Value(s, full);
    const b = base64Value(s, full + 1);
    const c = base64Value(s, full + 2);
    if ((c & 3) !== 0) throw new NixFormatError("non-canonical base64 (unused bits set)");
    out[o] = (a << 2) | (b >> 4);
    out[o + 1] = ((b & 15) << 4) | (c >> 2);
  }
  return out;
}

const ENCODER = new TextEncoder();

/** UTF-8 bytes of a string (lone surrogates become U+FFFD, as TextEncoder does). */
export function utf8(s: string): Uint8Array {
  return ENCODER.encode(s);
}

/** Unsigned lexicographic order of raw bytes (memcmp, then shorter first): NAR entry order. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Concatenates byte arrays into one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
