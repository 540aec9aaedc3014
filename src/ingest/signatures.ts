// Which `Sig` lines a stored narinfo may carry, and how a later upload adds to them. Any
// write token may add signatures to a published path (that is how `nix store sign` and a
// second signer work, PROTOCOL §4.3), so this is where a hostile token would try to bloat
// a document past what the Worker parses, or make merging and verifying cost seconds:
//
//   - at most MAX_SIGNATURES Sig lines per narinfo, after any merge;
//   - a key name of at most MAX_KEY_NAME_LENGTH characters (so one line stays short);
//   - one signature per key name: Ed25519 signing is deterministic, so one key gives one
//     signature per path, and a second, different one under the same name can only be a
//     forgery or a corrupted copy. This also means each trusted key is verified at most
//     once per narinfo;
//   - merging is a union by key name in one pass; a different signature under a name the
//     stored narinfo already has is a conflict, never a replacement.
//
// The narinfo parser (src/nix/narinfo.ts) already refuses malformed Sig values.

import { compareBytes, utf8 } from "../nix/encoding.ts";
import { fail } from "../errors.ts";

/**
 * Most Sig lines one narinfo may carry. A path collects one signature per signer (the
 * builder's key, a CI key, this cache's SIGNING_KEY, a second cache's key): real narinfos
 * have one to three. Sixteen leaves room for any real set-up while bounding the document
 * (16 × ~350 bytes) and the verification work.
 */
export const MAX_SIGNATURES = 16;

/**
 * Longest key name in a Sig line. Key names are conventionally `<host name>-<n>`, and a DNS
 * name has at most 253 characters.
 */
export const MAX_KEY_NAME_LENGTH = 256;

/** The key name of a Sig value (`name:base64`); the parser guarantees the colon. */
export function keyNameOf(sig: string): string {
  return sig.slice(0, sig.indexOf(":"));
}

/** Sig values in the order Nix writes them (a sorted set). */
function sortSigs(sigs: string[]): string[] {
  return sigs.sort((a, b) => compareBytes(utf8(a), utf8(b)));
}

/** Throws a 4xx unless `sigs` (one narinfo's Sig lines) follow the rules above. */
export function checkSignatures(sigs: readonly string[], storePath: string): void {
  if (sigs.length > MAX_SIGNATURES) {
    throw fail("payload_too_large", `the narinfo of ${storePath} has ${sigs.length} signatures; this cache keeps at most ${MAX_SIGNATURES} per path`);
  }
  const names = new Set<string>();
  for (const sig of sigs) {
    const name = keyNameOf(sig);
    if (name.length > MAX_KEY_NAME_LENGTH) {
      throw fail("payload_too_large", `a signature's key name is ${name.length} characters long; this cache accepts at most ${MAX_KEY_NAME_LENGTH}`);
    }
    if (names.has(name)) throw fail("bad_request", `the narinfo has two signatures by key ${JSON.stringify(name)}; a key signs a path once`);
    names.add(name);
  }
}

/**
 * The union of a stored narinfo's signatures and an upload's, by key name, in Nix's
 * order; null when the upload adds nothing. Throws 409 when the upload brings a different
 * signature under a name already stored, 413 past MAX_SIGNATURES.
 */
export function mergeSignatures(stored: readonly string[], incoming: readonly string[], storePath: string): string[] | null {
  const byName = new Map<string, string>();
  for (const sig of stored) byName.set(keyNameOf(sig), sig);
  const added: string[] = [];
  for (const sig of incoming) {
    const name = keyNameOf(sig);
    const present = byName.get(name);
    if (present === sig) continue;
    if (present !== undefined) {
      throw fail("conflict", `${storePath} already has a different signature by key ${JSON.stringify(name)}; signatures can be added, not replaced`);
    }
    byName.set(name, sig);
    added.push(sig);
  }
  if (added.length === 0) return null;
  const merged = [...stored, ...added];
  checkSignatures(merged, storePath);
  return sortSigs(merged);
}

/** `sigs` without signatures by key `name`, plus `own`, in Nix's order. */
export function replaceOwnSignature(sigs: readonly string[], name: string, own: string): string[] {
  return sortSigs([...sigs.filter((sig) => keyNameOf(sig) !== name), own]);
}
