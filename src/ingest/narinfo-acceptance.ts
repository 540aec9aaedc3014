// The rules a narinfo upload must pass before it is stored, each failure a 4xx saying why.
// The document itself (checked first, no storage access):
//   - StorePath's hash part is the `<hash>` of the URL it is PUT to;
//   - URL is `nar/<filehash52>.nar[.ext]` (relative, Nix's own naming);
//   - Compression matches the extension as Nix names files: zstd ↔ .zst, xz ↔ .xz,
//     bzip2 (also a missing or empty Compression, which Nix reads as bzip2) ↔ .bz2, br ↔ .br,
//     lz4 ↔ .lz4, lzip ↔ .lzip, and every other method (none, gzip, lzma, …) ↔ plain .nar;
//   - FileSize is present: Nix and the uploader always write it, and it is what ties the
//     narinfo to the stored NAR (the Worker never reads NAR bytes). FileHash, when present,
//     is the name's hash; with Compression none the file is the NAR, so FileSize must equal
//     NarSize and FileHash NarHash;
//   - its Sig lines within the bounds of ingest/signatures.ts (how many, how long, one per
//     key name), so that verifying them costs at most one check per trusted key;
//   - with TRUSTED_PUBLIC_KEYS set, a valid signature by one of them.
// Then the cache (R2 operations, within the free plan's per-request budget):
//   - the NAR is stored and has FileSize bytes;
//   - every reference other than the path itself is in the cache or served upstream
//     (UPSTREAM_CACHES, or AGGREGATE_UPSTREAMS, whose paths clients get through this cache)
//     as that exact store path: hash part and name (ingest/references.ts).
// Finally, with SIGNING_KEY set, the Worker adds its own signature, replacing any Sig the
// upload claims under the Worker's key name (the Worker alone signs with its key).

import { KeyError, NixFormatError } from "../nix/errors.ts";
import { normaliseSha256 } from "../nix/hash.ts";
import { extensionFor, type NarInfo } from "../nix/narinfo.ts";
import { signNarInfo, verifyNarInfo } from "../nix/signature.ts";
import { parseStorePath, storePathBaseName } from "../nix/store-path.ts";
import type { Settings } from "../env.ts";
import { fail } from "../errors.ts";
import { headObject } from "../storage/bucket.ts";
import { narKey, NAR_PREFIX, parseNarFileName } from "../storage/keys.ts";
import { referenceCaches } from "../upstream/settings.ts";
import { missingReferences, missingReferencesMessage } from "./references.ts";
import { checkSignatures, replaceOwnSignature } from "./signatures.ts";

// Nix's naming rule lives in the core, shared with the uploader (`uploader import`).
export { extensionFor };

function sameHash(a: string, b: string): boolean {
  try {
    return normaliseSha256(a) === normaliseSha256(b);
  } catch (e) {
    if (e instanceof NixFormatError) return false;
    throw e;
  }
}

/** The document-only rules; returns the R2 key of the NAR the narinfo points to. */
export function checkDocument(info: NarInfo, hashPart: string): string {
  const path = parseStorePath(info.storePath);
  if (path === null) throw fail("bad_request", "StorePath is not a valid /nix/store path");
  if (path.hash !== hashPart) {
    throw fail("bad_request", `StorePath ${info.storePath} does not belong at ${hashPart}.narinfo (its hash part is ${path.hash})`);
  }

  const file = info.url.startsWith(NAR_PREFIX) ? parseNarFileName(info.url.slice(NAR_PREFIX.length)) : null;
  if (file === null) {
    throw fail("bad_request", `URL ${JSON.stringify(info.url)} is not nar/<52-char nix32 file hash>.nar[.xz|.bz2|.zst|.br|.lz4|.lzip]`);
  }
  const expected = extensionFor(info.compression);
  if (file.extension !== expected) {
    const said = info.compression === undefined ? "no Compression line (Nix reads that as bzip2)" : `Compression ${JSON.stringify(info.compression)}`;
    throw fail("bad_request", `${said} needs a NAR file ending in .nar${expected}, but URL is ${info.url}`);
  }

  if (info.fileSize === undefined) throw fail("bad_request", "FileSize is missing; it is needed to check the stored NAR");
  if (info.fileHash !== undefined && !sameHash(info.fileHash, `sha256:${file.fileHash}`)) {
    throw fail("bad_request", "FileHash is not the hash in the NAR's file name");
  }
  if (info.compression === "none") {
    if (info.fileSize !== info.narSize) throw fail("bad_request", "with Compression none, FileSize must equal NarSize");
    if (info.fileHash !== undefined && !sameHash(info.fileHash, info.narHash)) {
      throw fail("bad_request", "with Compression none, FileHash must equal NarHash");
    }
  }
  checkSignatures(info.sigs, info.storePath);
  return narKey(info.url.slice(NAR_PREFIX.length));
}

/**
 * Applies every rule to a parsed narinfo uploaded to `<hashPart>.narinfo` and returns the
 * narinfo to store (with the Worker's signature when it has a key). Throws AppError.
 */
export async function acceptNarInfo(info: NarInfo, hashPart: string, bucket: R2Bucket, db: D1Database, settings: Settings): Promise<NarInfo> {
  const narObjectKey = checkDocument(info, hashPart);

  if (settings.trustedKeys.length > 0 && !(await verifyNarInfo(info, settings.trustedKeys))) {
    const names = settings.trustedKeys.map((k) => k.name).join(", ");
    throw fail("bad_request", `the narinfo has no valid signature by a trusted key (${names}); sign it before uploading`);
  }

  const nar = await headObject(bucket, narObjectKey);
  if (nar === null) throw fail("unprocessable", `the NAR ${info.url} is not in the cache; upload it before its narinfo`);
  if (nar.size !== info.fileSize) {
    throw fail("unprocessable", `FileSize is ${info.fileSize} but the stored NAR ${info.url} has ${nar.size} bytes`);
  }

  const self = storePathBaseName(parseStorePath(info.storePath)!);
  const others = info.references.filter((ref) => ref !== self);
  const caches = referenceCaches(settings.upstreamCaches, settings.aggregation);
  const missing = await missingReferences(bucket, db, others, caches);
  if (missing.length > 0) throw fail("unprocessable", missingReferencesMessage(missing, caches));

  if (settings.signingKey === null) return info;
  let own: string;
  try {
    own = await signNarInfo(info, settings.signingKey);
  } catch (e) {
    if (e instanceof KeyError) throw fail("misconfigured", "SIGNING_KEY's public half does not belong to its secret half; generate a new key (uploader keygen)");
    throw e;
  }
  return { ...info, sigs: replaceOwnSignature(info.sigs, settings.signingKey.name, own) };
}
