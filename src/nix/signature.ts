// Binary cache signing keys and narinfo signatures (PROTOCOL §4).
//
//   public key  = name ":" base64(32-byte Ed25519 public key)
//   secret key  = name ":" base64(32-byte seed ‖ 32-byte public key)   (libsodium layout)
//   signature   = name ":" base64(64-byte Ed25519 signature)            (a narinfo Sig line)
//   fingerprint = "1;" StorePath ";" NarHash(sha256:nix32) ";" NarSize ";" sorted full reference paths joined by ","
//
// The name is everything before the first ":". Signing is pure Ed25519 over the UTF-8
// fingerprint and deterministic, so re-signing reproduces Nix's Sig byte for byte.
//
// Signing and verifying use the runtime's native Ed25519 (WebCrypto: workerd, Node 24)
// when it has one, and @noble/ed25519 otherwise. The native path matters in the Worker: the
// JavaScript implementation builds its base-point tables on first use, tens of milliseconds
// of CPU in every fresh isolate, more than a free-plan request may spend.

import { getPublicKeyAsync, Point, signAsync, verifyAsync } from "@noble/ed25519";
import { compareBytes, fromBase64, toBase64, utf8 } from "./encoding.ts";
import { KeyError, NarInfoError, NixFormatError } from "./errors.ts";
import { normaliseSha256 } from "./hash.ts";
import type { NarInfo } from "./narinfo.ts";
import { sha512Sync } from "./sha512.ts";
import { STORE_DIR } from "./store-path.ts";

export interface PublicKey {
  name: string;
  /** 32 bytes. */
  key: Uint8Array;
}

export interface SecretKey {
  name: string;
  /** 32-byte Ed25519 seed (the first half of Nix's 64-byte secret). */
  seed: Uint8Array;
  /** 32 bytes, derived from the seed. */
  publicKey: Uint8Array;
}

export interface Signature {
  /** Key name, e.g. `cache.nixos.org-1`. */
  name: string;
  /** 64 bytes. */
  sig: Uint8Array;
}

const PUBLIC_KEY_BYTES = 32;
const SEED_BYTES = 32;
const SIGNATURE_BYTES = 64;

// Names we create: the convention `host-N`, as snix accepts them. Parsing is more lenient
// (Nix only requires a non-empty name) but rejects whitespace and control characters, which
// can only come from a mangled key.
const NEW_KEY_NAME = /^[A-Za-z0-9.-]+$/;
const NAME = /^[^\s\x00-\x1f\x7f]+$/;

function splitNamed(s: string, what: string, make: (msg: string) => Error): [string, Uint8Array] {
  const colon = s.indexOf(":");
  if (colon < 0) throw make(`${what} has no ":" between name and key`);
  const name = s.slice(0, colon);
  if (name === "") throw make(`${what} has an empty name`);
  if (!NAME.test(name)) throw make(`${what} name ${JSON.stringify(name)} contains whitespace or control characters`);
  try {
    return [name, fromBase64(s.slice(colon + 1))];
  } catch (e) {
    if (e instanceof NixFormatError) throw make(`${what} ${JSON.stringify(name)}: ${e.message}`);
    throw e;
  }
}

/**
 * Parses a `Sig` value `name:base64(64 bytes)`; throws NixFormatError when the colon or
 * name is missing, the base64 is invalid or the signature is not 64 bytes.
 */
export function parseSignature(s: string): Signature {
  const [name, sig] = splitNamed(s, "signature", (m) => new NixFormatError(m));
  if (sig.length !== SIGNATURE_BYTES) throw new NixFormatError(`signature ${JSON.stringify(name)} has ${sig.length} bytes, expected 64`);
  return { name, sig };
}

export function formatSignature(s: Signature): string {
  return `${s.name}:${toBase64(s.sig)}`;
}

/** Parses `name:base64(32 bytes)`; surrounding whitespace (a key file's newline) is ignored. */
export function parsePublicKey(s: string): PublicKey {
  const [name, key] = splitNamed(s.trim(), "public key", (m) => new KeyError(m));
  if (key.length !== PUBLIC_KEY_BYTES) throw new KeyError(`public key ${JSON.stringify(name)} has ${key.length} bytes, expected 32`);
  return { name, key };
}

export function formatPublicKey(k: PublicKey): string {
  return `${k.name}:${toBase64(k.key)}`;
}

// The Ed25519 public key of a seed (RFC 8032 §5.1.5), synchronously: hash, clamp, multiply.
function derivePublicKey(seed: Uint8Array): Uint8Array {
  const head = sha512Sync(seed).slice(0, 32);
  head[0]! &= 248;
  head[31]! &= 127;
  head[31]! |= 64;
  let scalar = 0n;
  for (let i = 31; i >= 0; i--) scalar = (scalar << 8n) | BigInt(head[i]!);
  return Point.BASE.multiply(scalar % Point.CURVE().n).toBytes();
}

/**
 * Parses a Nix secret key `name:base64(seed ‖ public key)` and checks that the public half
 * belongs to the seed (a mismatch means a corrupted or hand-assembled key, which would sign
 * with one key and advertise another). Surrounding whitespace is ignored. With
 * `checkPublicHalf: false` the check is left to signNarInfo, which makes it natively (the
 * Worker parses its key on every isolate's first request, where the JavaScript check costs
 * tens of milliseconds of CPU).
 */
export function parseSecretKey(s: string, options: { checkPublicHalf?: boolean } = {}): SecretKey {
  const [name, bytes] = splitNamed(s.trim(), "secret key", (m) => new KeyError(m));
  if (bytes.length !== SEED_BYTES + PUBLIC_KEY_BYTES) {
    throw new KeyError(`secret key ${JSON.stringify(name)} has ${bytes.length} bytes, expected 64`);
  }
  const seed = bytes.slice(0, SEED_BYTES);
  const publicKey = bytes.slice(SEED_BYTES);
  if (options.checkPublicHalf !== false && compareBytes(derivePublicKey(seed), publicKey) !== 0) {
    throw new KeyError(`secret key ${JSON.stringify(name)}: the public half does not belong to the seed`);
  }
  return { name, seed, publicKey };
}

export function formatSecretKey(k: SecretKey): string {
  const bytes = new Uint8Array(SEED_BYTES + PUBLIC_KEY_BYTES);
  bytes.set(k.seed);
  bytes.set(k.publicKey, SEED_BYTES);
  return `${k.name}:${toBase64(bytes)}`;
}

/** A fresh key pair, like `nix key generate-secret --key-name <name>`. */
export async function generateKeyPair(name: string): Promise<SecretKey> {
  if (!NEW_KEY_NAME.test(name)) throw new KeyError(`key name ${JSON.stringify(name)} must match ${NEW_KEY_NAME.source}`);
  const seed = crypto.getRandomValues(new Uint8Array(SEED_BYTES));
  return { name, seed, publicKey: await getPublicKeyAsync(seed) };
}

export function publicKeyOf(k: SecretKey): PublicKey {
  return { name: k.name, key: k.publicKey };
}

/**
 * The exact string Nix signs (ValidPathInfo::fingerprint): NarHash re-encoded to
 * `sha256:<nix32>` whatever form the narinfo used, references as full paths sorted
 * bytewise. Throws NarInfoError for NarSize 0 (Nix refuses too) or a bad NarHash.
 */
export function fingerprint(
  info: Pick<NarInfo, "storePath" | "narHash" | "narSize" | "references">,
  storeDir: string = STORE_DIR,
): string {
  if (!Number.isSafeInteger(info.narSize) || info.narSize <= 0) throw new NarInfoError("NarSize", "cannot fingerprint a path with NarSize 0");
  let narHash: string;
  try {
    narHash = normaliseSha256(info.narHash);
  } catch (e) {
    if (e instanceof NixFormatError) throw new NarInfoError("NarHash", e.message);
    throw e;
  }
  const sorted = sortedReferences(info.references);
  // Each as a full store path: the prefix goes in with the separators, one join for all.
  const paths = sorted.length === 0 ? "" : `${storeDir}/${sorted.join(`,${storeDir}/`)}`;
  return `1;${info.storePath};${narHash};${info.narSize};${paths}`;
}

/** A UTF-16 surrogate: the only code units whose order is not their UTF-8 bytes' order. */
const SURROGATE = /[\uD800-\uDFFF]/;

/**
 * The references (base names) sorted bytewise (their UTF-8 bytes, as Nix sorts the full
 * paths: the common `<storeDir>/` prefix changes no comparison). Already sorted, as Nix
 * writes them, they are returned as they are.
 */
function sortedReferences(references: readonly string[]): readonly string[] {
  // Without surrogates, JavaScript's string order (by UTF-16 code unit) is code point order,
  // which is UTF-8 byte order. Store path names are ASCII, so this is every narinfo that
  // parsed.
  if (!SURROGATE.test(references.join(""))) {
    for (let i = 1; i < references.length; i++) if (references[i - 1]! > references[i]!) return [...references].sort();
    return references;
  }
  // Encoded once each, then sorted by bytes: encoding inside the comparator cost
  // milliseconds for the hundreds of references big paths have.
  return references
    .map((text) => ({ text, bytes: utf8(text) }))
    .sort((a, b) => compareBytes(a.bytes, b.bytes))
    .map((r) => r.text);
}

/** PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410): this prefix, then the seed. */
const PKCS8_ED25519_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

function base64UrlToBytes(s: string): Uint8Array {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
}

/** A key of the runtime's WebCrypto (its type name differs between workerd's and Node's typings). */
type NativeKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

/**
 * Native signing keys by the key's bytes (not by the parsed object, so that a key parsed
 * again, e.g. the Worker's settings for another Env object, finds its import done); null:
 * the runtime has no native Ed25519.
 */
const nativeSigners = new Map<string, Promise<NativeKey | null>>();

function signerOf(key: SecretKey): Promise<NativeKey | null> {
  const id = `${toBase64(key.seed)} ${toBase64(key.publicKey)}`;
  let signer = nativeSigners.get(id);
  if (signer === undefined) {
    signer = importSigner(key);
    nativeSigners.set(id, signer);
  }
  return signer;
}

async function importSigner(key: SecretKey): Promise<NativeKey | null> {
  const pkcs8 = new Uint8Array(PKCS8_ED25519_PREFIX.length + SEED_BYTES);
  pkcs8.set(PKCS8_ED25519_PREFIX);
  pkcs8.set(key.seed, PKCS8_ED25519_PREFIX.length);
  let signer: NativeKey;
  let derived: Uint8Array;
  try {
    signer = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    const jwk = (await crypto.subtle.exportKey("jwk", signer)) as { x?: string };
    derived = base64UrlToBytes(jwk.x ?? "");
  } catch {
    return null;
  }
  if (compareBytes(derived, key.publicKey) !== 0) {
    throw new KeyError(`secret key ${JSON.stringify(key.name)}: the public half does not belong to the seed`);
  }
  return signer;
}

/** Native public keys by the key's bytes (as nativeSigners); null: no native Ed25519. */
const nativeVerifiers = new Map<string, Promise<NativeKey | null>>();

function verifierOf(key: PublicKey): Promise<NativeKey | null> {
  const id = toBase64(key.key);
  let verifier = nativeVerifiers.get(id);
  if (verifier === undefined) {
    verifier = importVerifier(key);
    nativeVerifiers.set(id, verifier);
  }
  return verifier;
}

/**
 * Starts importing the keys into the runtime's WebCrypto ahead of their first use (the
 * Worker does this at startup, src/warm-up.ts). The promise rejects when a secret key's
 * halves do not belong together, as signing with it would.
 */
export async function prepareKeys(secret: SecretKey | null, trusted: readonly PublicKey[]): Promise<void> {
  await Promise.all([...(secret === null ? [] : [signerOf(secret)]), ...trusted.map(verifierOf)]);
}

async function importVerifier(key: PublicKey): Promise<NativeKey | null> {
  try {
    return await crypto.subtle.importKey("raw", key.key, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    return null;
  }
}

async function ed25519Sign(message: Uint8Array, key: SecretKey): Promise<Uint8Array> {
  const native = await signerOf(key);
  if (native !== null) return new Uint8Array(await crypto.subtle.sign("Ed25519", native, message));
  // No native Ed25519: the JavaScript one, after the check parseSecretKey may have skipped.
  if (compareBytes(derivePublicKey(key.seed), key.publicKey) !== 0) {
    throw new KeyError(`secret key ${JSON.stringify(key.name)}: the public half does not belong to the seed`);
  }
  return signAsync(message, key.seed);
}

async function ed25519Verify(sig: Uint8Array, message: Uint8Array, key: PublicKey): Promise<boolean> {
  const native = await verifierOf(key);
  if (native !== null) return crypto.subtle.verify("Ed25519", native, sig, message);
  return verifyAsync(sig, message, key.key, { zip215: false });
}

/** Signs the narinfo's fingerprint: `name:base64(signature)`, a Sig value. */
export async function signNarInfo(
  info: Pick<NarInfo, "storePath" | "narHash" | "narSize" | "references">,
  key: SecretKey,
): Promise<string> {
  const sig = await ed25519Sign(utf8(fingerprint(info)), key);
  return formatSignature({ name: key.name, sig });
}

/**
 * True when at least one Sig is a valid signature by a trusted key (matched by name, as
 * Nix does). Signatures by untrusted names are skipped; malformed ones never throw, they
 * just do not count. Verification is strict RFC 8032 (no ZIP-215 leniency), like libsodium.
 */
export async function verifyNarInfo(
  info: Pick<NarInfo, "storePath" | "narHash" | "narSize" | "references" | "sigs">,
  trusted: readonly PublicKey[],
): Promise<boolean> {
  let message: Uint8Array;
  try {
    message = utf8(fingerprint(info));
  } catch {
    return false;
  }
  for (const s of info.sigs) {
    let parsed: Signature;
    try {
      parsed = parseSignature(s);
    } catch {
      continue;
    }
    for (const key of trusted) {
      if (key.name !== parsed.name) continue;
      try {
        if (await ed25519Verify(parsed.sig, message, key)) return true;
      } catch {
        // A malformed public key or signature encoding counts as "not valid".
      }
    }
  }
  return false;
}

/** The narinfo with `sig` added (unless already present), Sig lines in Nix's sorted order. */
export function withSignature(info: NarInfo, sig: string): NarInfo {
  try {
    parseSignature(sig);
  } catch (e) {
    if (e instanceof NixFormatError) throw new NarInfoError("Sig", e.message);
    throw e;
  }
  if (info.sigs.includes(sig)) return info;
  const sigs = [...info.sigs, sig].sort((a, b) => compareBytes(utf8(a), utf8(b)));
  return { ...info, sigs };
}
