// Writing an accepted narinfo under the immutability rule:
//   - nothing stored yet                        → store it (201)
//   - the stored bytes are the same             → nothing to do (204)
//   - same path, hashes, sizes, references, URL,
//     compression, deriver, CA and other fields,
//     and only signatures differ                → store the union of both Sig sets (204),
//                                                 which is how `nix store sign` and a second
//                                                 signer add signatures (PROTOCOL §4.3),
//                                                 within the bounds of ingest/signatures.ts
//   - anything else differs                     → 409 naming the first differing field
//   - the stored document cannot be read        → 409: what this cache cannot read it
//                                                 cannot compare, so it never replaces it
// Every document written stays within MAX_NARINFO_LENGTH, the limit the Worker's own parser
// (and garbage collection) reads: an upload that would pass it is refused with 413.
// Writes are conditional (R2 onlyIf): the first on nothing being stored yet, later ones on
// the stored narinfo read, so two racing uploads cannot both win; the loser reads and is
// judged against the winner.
// Every write carries the narinfo's GC metadata (storage/narinfo-meta.ts: push time,
// references, NAR) and happens through an upload gate (gc/upload-gate.ts), so it cannot
// race a garbage collection deleting what the narinfo depends on. After the object, the
// path's row goes into the D1 index (storage/path-index.ts), with who pushed it; an
// identical re-upload records the row again (adopting an object a crash left unindexed)
// and moves its push time on.

import { NixFormatError } from "../nix/errors.ts";
import { normaliseSha256 } from "../nix/hash.ts";
import { formatNarInfo, MAX_NARINFO_LENGTH, parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { fail } from "../errors.ts";
import { encodeNarInfoMeta } from "../storage/narinfo-meta.ts";
import { getNarInfoObject, putNarInfoObject } from "../storage/narinfo-object.ts";
import { openGateAndRecheck, type UploadGate } from "../gc/upload-gate.ts";
import { recordPath, rowOf } from "../storage/path-index.ts";
import { checkSignatures, mergeSignatures } from "./signatures.ts";

export type StoreOutcome = "created" | "unchanged" | "merged";

/** Tries after the first lost race (the stored narinfo read and judged) before a 409. */
const RACE_RETRIES = 1;

function normalisedHash(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  try {
    return normaliseSha256(s);
  } catch (e) {
    if (e instanceof NixFormatError) return s;
    throw e;
  }
}

/** The fields that must agree for two narinfos to describe the same stored path. */
function identity(info: NarInfo): Array<[field: string, value: string]> {
  return [
    ["StorePath", info.storePath],
    ["URL", info.url],
    ["Compression", info.compression ?? "(none)"],
    ["FileHash", normalisedHash(info.fileHash) ?? "(none)"],
    ["FileSize", String(info.fileSize ?? "(none)")],
    ["NarHash", normalisedHash(info.narHash)!],
    ["NarSize", String(info.narSize)],
    ["References", info.references.join(" ")],
    ["Deriver", info.deriver ?? "(none)"],
    ["System", info.system ?? "(none)"],
    ["CA", info.ca ?? "(none)"],
    ["other fields", JSON.stringify(info.extra)],
  ];
}

/** The first field on which the two differ (signatures aside), or null. */
export function differingField(a: NarInfo, b: NarInfo): string | null {
  const x = identity(a);
  const y = identity(b);
  for (let i = 0; i < x.length; i++) if (x[i]![1] !== y[i]![1]) return x[i]![0];
  return null;
}

type Decision = { write: false; outcome: StoreOutcome } | { write: true; text: string; outcome: StoreOutcome };

/** The text to store for `info`; 413 past what the Worker itself parses. */
function boundedText(info: NarInfo): string {
  const text = formatNarInfo(info);
  if (text.length > MAX_NARINFO_LENGTH) {
    throw fail("payload_too_large", `the narinfo of ${info.storePath} would be ${text.length} characters; this cache stores at most ${MAX_NARINFO_LENGTH}`);
  }
  return text;
}

/** What to do given the stored narinfo (null when none) and the accepted upload. */
export function decide(stored: string | null, incoming: NarInfo): Decision {
  checkSignatures(incoming.sigs, incoming.storePath);
  if (stored === null) return { write: true, text: boundedText(incoming), outcome: "created" };
  if (stored === formatNarInfo(incoming)) return { write: false, outcome: "unchanged" };
  let current: NarInfo;
  try {
    current = parseNarInfo(stored);
  } catch (e) {
    // Not written by this version (another tool, or rules since made stricter). What cannot
    // be compared cannot be shown to be the same path: it stays, and so does the conflict.
    if (e instanceof NixFormatError) {
      throw fail("conflict", `the narinfo stored for ${incoming.storePath} cannot be read by this cache (${e.message}); it is kept as it is: an admin can delete it, then push again`);
    }
    throw e;
  }
  const field = differingField(current, incoming);
  if (field !== null) {
    throw fail("conflict", `a different narinfo is already stored for ${incoming.storePath} (${field} differs); stored paths are immutable`);
  }
  const sigs = mergeSignatures(current.sigs, incoming.sigs, incoming.storePath);
  if (sigs === null) return { write: false, outcome: "unchanged" };
  return { write: true, text: boundedText({ ...current, sigs }), outcome: "merged" };
}

export interface StoreOptions {
  /** The index the path's row goes into, after its object. */
  db: D1Database;
  /** Who stores it: the write token's secret name, or null for a write-through copy. */
  token: string | null;
  /**
   * The gate the caller opened before checking the narinfo's NAR and references (the
   * upload route). Without one, storeNarInfo opens one and checks them again.
   */
  gate?: UploadGate;
  clock?: () => number;
}

/** Stores `incoming` at `key` following the immutability rule. */
export async function storeNarInfo(bucket: R2Bucket, key: string, incoming: NarInfo, options: StoreOptions): Promise<StoreOutcome> {
  const clock = options.clock ?? Date.now;
  const gate = options.gate ?? (await openGateAndRecheck(bucket, incoming, clock));
  const row = rowOf(incoming, options.token, clock());
  // The first attempt assumes nothing is stored, the common case of an upload (the uploader
  // and Nix ask before they push): its write is conditional on that, so it saves a read
  // and decides the same. When something is there, the stored narinfo is read and judged.
  for (let attempt = 0; attempt <= RACE_RETRIES + 1; attempt++) {
    const stored = attempt === 0 ? null : await getNarInfoObject(bucket, key);
    const decision = decide(stored?.text ?? null, incoming);
    if (!decision.write) {
      // The same path again: it is in use. Its row is written again (a crash may have left
      // the object unindexed) with the later push time; the facts in a row never change.
      gate.assertInTime();
      if (row !== null) await recordPath(options.db, row, null, null);
      return decision.outcome;
    }
    gate.assertInTime();
    // Only signatures can differ between `incoming` and what is written: same metadata.
    const meta = encodeNarInfoMeta(incoming, clock());
    const written = await putNarInfoObject(bucket, key, decision.text, meta, stored === null ? { ifAbsent: true } : { ifEtag: stored.etag });
    if (written) {
      if (row !== null) await recordPath(options.db, row, decision.outcome === "created" ? "publish" : "sign", options.token);
      return decision.outcome;
    }
  }
  throw fail("conflict", "another upload of this narinfo happened at the same time; retry");
}
