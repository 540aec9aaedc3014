// SHA-256 hashes and their textual forms (PROTOCOL §2.3).
//
// Nix writes `sha256:<52 nix32 chars>` in narinfo files and fingerprints. It reads, and
// so do we: `sha256:` + 52 nix32 | 64 hex (either case) | 44 base64, and SRI
// `sha256-<44 base64>`. Other algorithms are not used by binary caches for NarHash.

import { fromBase64, fromHex, toBase64 } from "./encoding.ts";
import { NixFormatError } from "./errors.ts";
import { decodeNix32, encodeNix32 } from "./nix32.ts";

/** Byte length of a SHA-256 digest. */
export const SHA256_BYTES = 32;
const NIX32_CHARS = 52;
const HEX_CHARS = 64;
const BASE64_CHARS = 44;

/** SHA-256 of the data (WebCrypto; one shot, so only for data already in memory). */
export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

function decodeDigest(digest: string, original: string): Uint8Array {
  switch (digest.length) {
    case NIX32_CHARS:
      return decodeNix32(digest, SHA256_BYTES);
    case HEX_CHARS:
      return fromHex(digest);
    case BASE64_CHARS:
      return fromBase64(digest);
    default:
      throw new NixFormatError(`hash ${JSON.stringify(original)} has a digest of invalid length ${digest.length}`);
  }
}

/** Parses any accepted SHA-256 hash string to its 32 bytes; throws NixFormatError. */
export function parseSha256(s: string): Uint8Array {
  if (s.startsWith("sha256:")) return decodeDigest(s.slice("sha256:".length), s);
  if (s.startsWith("sha256-")) {
    const digest = s.slice("sha256-".length);
    if (digest.length !== BASE64_CHARS) throw new NixFormatError(`SRI hash ${JSON.stringify(s)} has an invalid length`);
    return fromBase64(digest);
  }
  throw new NixFormatError(`hash ${JSON.stringify(s)} is not of the form sha256:<digest> or sha256-<base64>`);
}

/** `sha256:<nix32>`: the form Nix writes and signs. */
export function formatSha256(bytes: Uint8Array): string {
  if (bytes.length !== SHA256_BYTES) throw new NixFormatError(`a SHA-256 digest has 32 bytes, got ${bytes.length}`);
  return `sha256:${encodeNix32(bytes)}`;
}

/** SRI form `sha256-<base64>` (what `nix path-info --json` reports). */
export function toSri(bytes: Uint8Array): string {
  if (bytes.length !== SHA256_BYTES) throw new NixFormatError(`a SHA-256 digest has 32 bytes, got ${bytes.length}`);
  return `sha256-${toBase64(bytes)}`;
}

/** Any accepted form → `sha256:<nix32>`; throws NixFormatError. */
export function normaliseSha256(s: string): string {
  return formatSha256(parseSha256(s));
}
