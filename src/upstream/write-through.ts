// Write-through: copying a path served from an upstream into the bucket in the background
// (ctx.waitUntil), so later clients get it from here, even when the upstream is gone.
//
// A copy is held to the rules of any upload, and to closure integrity:
//   - its narinfo carries a valid signature by one of AGGREGATE_WRITE_THROUGH_KEYS;
//   - its NAR is in the upstream's `nar/` directory under this cache's key shape
//     (`nar/<filehash52>.nar[.ext]`, extension matching Compression), with FileHash and
//     FileSize present: it is streamed into R2 with the name's sha256, so R2 itself refuses
//     bytes that do not hash to it, and a body of another length fails;
//   - the narinfo is stored only after its NAR, and only when every reference other than
//     itself is already in the bucket. Missing references are copied first, depth first
//     (bottom-up), within the request's budgets; if one cannot be copied, nothing that
//     refers to it is stored. A later request picks up where this one stopped.
// The stored narinfo is the upstream's with URL `nar/<file>`: signatures untouched, not
// re-signed with SIGNING_KEY (clients trust the upstream's key for it, as before).
//
// Copies are started by reads, anonymous ones included, so they spend a daily budget
// (AGGREGATE_WRITE_THROUGH_DAILY_BYTES and _OBJECTS, storage/write-through-budget.ts):
// each path reserves its NAR's FileSize plus its narinfo's length, and its objects (the
// NAR unless the bucket has it, and the narinfo), before anything of it is stored. Once
// the day's budget is spent, reads are still served through the upstream, but nothing is
// copied until the next UTC day; the first copy refused for it logs that.
// Every failure is logged and leaves the bucket as a valid cache; nothing is thrown.

import { toHex, utf8 } from "../nix/encoding.ts";
import { SHA256_BYTES } from "../nix/hash.ts";
import { formatNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { decodeNix32 } from "../nix/nix32.ts";
import { verifyNarInfo, type PublicKey } from "../nix/signature.ts";
import { HASH_PART_LENGTH, parseStorePath, storePathBaseName } from "../nix/store-path.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { headObject, putStream } from "../storage/bucket.ts";
import { storedPaths } from "../storage/narinfo-object.ts";
import { narInfoKey, NAR_PREFIX, parseNarFileName } from "../storage/keys.ts";
import { isSpent, reserve, usageOn, type Amount } from "../storage/write-through-budget.ts";
import { checkDocument } from "../ingest/narinfo-acceptance.ts";
import { storeNarInfo } from "../ingest/narinfo-store.ts";
import { SubrequestBudget } from "./budget.ts";
import { upstreamFetch } from "./client.ts";
import { lookupNarInfo, type LookupContext, type UpstreamHit } from "./lookup.ts";

/**
 * Largest NAR copied. The copy runs after the response, and Workers end background work
 * 30 s after it; 256 MiB is what a good link between the edge and a CDN moves in that
 * time. Larger paths stay served through the upstream, and so do the paths referring to
 * them (closure integrity).
 */
export const MAX_WRITE_THROUGH_NAR_BYTES = 256 * 1024 * 1024;

/** How long fetching and storing one NAR may take: inside the 30 s of background work. */
export const WRITE_THROUGH_NAR_TIMEOUT_MS = 25_000;

/**
 * R2 operations one copy may spend (HEADs of narinfos, references and NARs, the writes).
 * A request may make about 1000 operations on Cloudflare services; the rest is left for
 * the request itself.
 */
export const WRITE_THROUGH_R2_OPERATIONS = 500;

/** What is stored for an eligible upstream path. */
interface StorableCopy {
  hit: UpstreamHit;
  /** The narinfo as stored: the upstream's, with URL `nar/<file>`. */
  info: NarInfo;
  /** R2 key of the NAR, `nar/<file>`. */
  narKey: string;
  sha256Hex: string;
  fileSize: number;
  /** The NAR on the upstream. */
  sourceUrl: string;
}

/** The copy to store for a hit, or null with the reason it is not eligible. */
export async function storableCopy(hit: UpstreamHit, hash: string, trusted: readonly PublicKey[]): Promise<StorableCopy | string> {
  if (hit.nar.kind !== "proxied") return "its NAR is not in the upstream's nar/ directory";
  const path = hit.nar.path;
  const file = path.slice(NAR_PREFIX.length);
  if (path.includes("?") || parseNarFileName(file) === null) return `its NAR name ${path} does not have this cache's key shape`;
  const info: NarInfo = { ...hit.info, url: path };
  let narKey: string;
  try {
    narKey = checkDocument(info, hash);
  } catch (e) {
    return `its narinfo would not be accepted as an upload (${e instanceof Error ? e.message : String(e)})`;
  }
  if (info.fileHash === undefined || info.fileSize === undefined) return "its narinfo lacks FileHash or FileSize";
  if (info.fileSize > MAX_WRITE_THROUGH_NAR_BYTES) return `its NAR has ${info.fileSize} bytes, over ${MAX_WRITE_THROUGH_NAR_BYTES}`;
  if (!(await verifyNarInfo(hit.info, trusted))) return "it has no valid signature by a key in AGGREGATE_WRITE_THROUGH_KEYS";
  const fileHash = parseNarFileName(file)!.fileHash;
  return {
    hit,
    info,
    narKey,
    sha256Hex: toHex(decodeNix32(fileHash, SHA256_BYTES)),
    fileSize: info.fileSize,
    sourceUrl: `${hit.upstream.url}/${path}`,
  };
}

/** Streams the NAR from the upstream into R2; true when it is stored. */
async function copyNar(copy: StorableCopy, bucket: R2Bucket, ctx: LookupContext, r2: SubrequestBudget): Promise<boolean> {
  const outcome = await upstreamFetch(copy.hit.upstream, copy.sourceUrl, {
    method: "GET",
    scope: "nar",
    // The bytes must be the file itself, not a transfer encoding of it.
    headers: { "Accept-Encoding": "identity" },
    timeoutMs: WRITE_THROUGH_NAR_TIMEOUT_MS,
    timeoutCovers: "whole",
    budget: ctx.budget,
  });
  if (outcome.kind === "failed") {
    console.warn(`write-through: ${copy.sourceUrl}: ${outcome.reason}`);
    return false;
  }
  const res = outcome.response;
  const declared = res.headers.get("Content-Length");
  if (res.status !== 200 || (declared !== null && Number(declared) !== copy.fileSize)) {
    console.warn(`write-through: ${copy.sourceUrl}: HTTP ${res.status}, ${declared ?? "no"} Content-Length for FileSize ${copy.fileSize}`);
    await res.body?.cancel();
    return false;
  }
  if (!r2.take()) {
    await res.body?.cancel();
    return false;
  }
  try {
    // No `absentBefore`: another request may be storing the same file right now, and
    // whatever R2 commits was verified against the sha256, so there is nothing to undo.
    await putStream(bucket, copy.narKey, res.body, {
      length: copy.fileSize,
      sha256Hex: copy.sha256Hex,
      contentType: CONTENT_TYPE.nar,
    });
    return true;
  } catch (err) {
    console.warn(`write-through: ${copy.sourceUrl} was not stored: ${err instanceof Error ? err.message : String(err)}`);
    return false;
  }
}

/**
 * Copies the path of `root` (and, first, whatever of its closure the bucket lacks) from
 * the upstreams into the bucket, as far as the budgets allow. Never throws.
 */
export async function writeThrough(root: UpstreamHit, bucket: R2Bucket, db: D1Database, ctx: LookupContext, now: () => number = Date.now): Promise<void> {
  const trusted = ctx.aggregation.writeThroughKeys;
  const limits = ctx.aggregation.writeThroughLimits;
  const r2 = new SubrequestBudget(WRITE_THROUGH_R2_OPERATIONS);
  let refusedLogged = false;
  const refused = (what: string, why: string): false => {
    if (!refusedLogged) console.warn(`write-through: ${what} is served from its upstream but not copied: ${why}`);
    refusedLogged = true;
    return false;
  };
  const spentReason = (usage: Amount): string =>
    `today's write-through budget is spent (${usage.bytes} of ${limits.bytes} bytes, ${usage.objects} of ${limits.objects} objects; ` +
    "AGGREGATE_WRITE_THROUGH_DAILY_BYTES/_OBJECTS); copies resume on the next UTC day";
  const done = new Map<string, Promise<boolean>>();
  const visiting = new Set<string>();

  // True when the path with this hash part is in the bucket once this returns.
  const fill = (hash: string, known: UpstreamHit | null): Promise<boolean> => {
    // A reference cycle other than a self-reference cannot occur in a Nix store; should an
    // upstream claim one, the paths on it are simply not stored (and nothing waits on itself).
    if (visiting.has(hash)) return Promise.resolve(false);
    let result = done.get(hash);
    if (result === undefined) {
      visiting.add(hash);
      result = fillOne(hash, known).finally(() => visiting.delete(hash));
      done.set(hash, result);
    }
    return result;
  };

  const fillOne = async (hash: string, known: UpstreamHit | null): Promise<boolean> => {
    if (!r2.take()) return false;
    if ((await headObject(bucket, narInfoKey(hash))) !== null) return true;
    const hit = known ?? (await lookupNarInfo(hash, ctx));
    if (hit === null) return false;
    const copy = await storableCopy(hit, hash, trusted);
    if (typeof copy === "string") {
      console.warn(`write-through: ${hit.info.storePath} from ${hit.upstream.url} is not stored: ${copy}`);
      return false;
    }
    const self = storePathBaseName(parseStorePath(copy.info.storePath)!);
    const references = copy.info.references.filter((ref) => ref !== self);
    if (!r2.take(references.length)) return false;
    // References count as present only as those exact store paths (hash part and name).
    const present = await storedPaths(bucket, references);
    for (let i = 0; i < references.length; i++) {
      if (present[i] === true) continue;
      if (!(await fill(references[i]!.slice(0, HASH_PART_LENGTH), null))) return false;
    }
    if (present.includes(false)) {
      // A hash part already stored under another name is not this reference: no hole allowed.
      if (!r2.take(references.length)) return false;
      if ((await storedPaths(bucket, references)).includes(false)) return false;
    }
    if (!r2.take()) return false;
    const existing = await headObject(bucket, copy.narKey);
    // Stored objects were verified against the name's sha256: the same file.
    if (existing !== null && existing.size !== copy.fileSize) return false;
    const narNeeded = existing === null;
    const want: Amount = {
      bytes: (narNeeded ? copy.fileSize : 0) + utf8(formatNarInfo(copy.info)).length,
      objects: narNeeded ? 2 : 1,
    };
    const reservation = await reserve(db, want, limits, now(), (n) => r2.take(n));
    if (reservation.kind === "spent") return refused(copy.info.storePath, spentReason(reservation.usage));
    if (reservation.kind === "contended") {
      const why = "its share of the daily budget could not be reserved now (this copy's operations are spent); a later read copies it";
      return refused(copy.info.storePath, why);
    }
    if (narNeeded && !(await copyNar(copy, bucket, ctx, r2))) return false;
    if (!r2.take(2)) return false;
    try {
      await storeNarInfo(bucket, narInfoKey(hash), copy.info, { db, token: null });
      return true;
    } catch (err) {
      // E.g. a push stored a different narinfo for the path meanwhile: that one stays.
      console.warn(`write-through: narinfo of ${copy.info.storePath} not stored: ${err instanceof Error ? err.message : String(err)}`);
      return false;
    }
  };

  try {
    // Spent for today: not a single lookup or copy more (one R2 read per read request).
    if (r2.take()) {
      const usage = await usageOn(db, now());
      if (isSpent(usage, limits)) {
        refused(root.info.storePath, spentReason(usage));
        return;
      }
    }
    const hash = parseStorePath(root.info.storePath)!.hash;
    await fill(hash, root);
  } catch (err) {
    console.warn("write-through failed", err);
  }
}
