// The fence: the list of store paths and NARs a garbage collection is about to delete,
// published before it deletes anything, and read by every upload that could come to depend
// on one of them (narinfo PUT, pin). It is what makes a collection safe while pushes go on.
//
// The rule (see gc/collector.ts for the whole protocol):
//   1. The collector writes the fence, notes the time A it was written, and waits until
//      A + GC_UPLOAD_WINDOW_SECONDS before it looks at the bucket again.
//   2. An upload reads the fence *first* (time g0), refuses with 422 when its path, one of its
//      references or its NAR is fenced, and otherwise writes its narinfo before
//      g0 + window/2, or gives up with 409 (uploads are a few small R2 calls; window/2
//      leaves room for clock skew between machines).
//   3. After the wait the collector lists every narinfo again; whatever is present and in
//      use by then (so any upload that read the fence before it existed, and finished by
//      A + window) keeps the fenced paths it references. Only then does it delete, and only
//      fenced objects; the fence comes down when the deletions are done.
// An upload therefore either saw the fence and did not reference anything in it, or
// finished before the collector's second look, which then kept what it references.
//
// Document (JSON): {"run": id, "announcedAt": ms, "paths": "<hash32><hash32>…",
// "nars": "<filehash52><filehash52>…"}; both strings are sorted concatenations of
// fixed-width keys (gc/packed-keys.ts), searched by bisection (no per-key parsing on the
// upload path).

import { parseJsonObject } from "../json-document.ts";
import { HASH_PART_LENGTH } from "../nix/store-path.ts";
import { packedContains } from "./packed-keys.ts";

/** Length of a NAR file hash (nix32 sha256). */
export const NAR_FILE_HASH_LENGTH = 52;

export interface Fence {
  runId: string;
  /** When the fence was written (ms). */
  announcedAt: number;
  /** Sorted concatenated hash parts of the narinfos to delete. */
  paths: string;
  /** Sorted concatenated file hashes of the NARs to delete. */
  nars: string;
}

export function formatFence(fence: Fence): string {
  return JSON.stringify({ run: fence.runId, announcedAt: fence.announcedAt, paths: fence.paths, nars: fence.nars });
}

/** The fence in `text`, or null when it is not one (a damaged fence fences nothing). */
export function parseFence(text: string): Fence | null {
  const doc = parseJsonObject(text);
  if (doc === null) return null;
  const { run, announcedAt, paths, nars } = doc;
  if (typeof run !== "string" || typeof announcedAt !== "number" || typeof paths !== "string" || typeof nars !== "string") return null;
  if (paths.length % HASH_PART_LENGTH !== 0 || nars.length % NAR_FILE_HASH_LENGTH !== 0) return null;
  return { runId: run, announcedAt, paths, nars };
}

/** Whether the narinfo with this hash part is about to be deleted. */
export function fencesPath(fence: Fence, hashPart: string): boolean {
  return packedContains(fence.paths, HASH_PART_LENGTH, hashPart);
}

/** Whether the NAR with this file hash is about to be deleted. */
export function fencesNar(fence: Fence, fileHash: string): boolean {
  return packedContains(fence.nars, NAR_FILE_HASH_LENGTH, fileHash);
}
