// The upload side of the fence (gc/fence.ts): every write that makes a narinfo depend on
// stored objects (a narinfo upload, a write-through copy, a pin, an index row adopted for
// an object; path-index/adoption.ts) opens a gate *before* it
// checks that those objects exist, refuses what a collection is about to delete, and writes
// within half the upload window of opening the gate.

import { fail } from "../errors.ts";
import type { NarInfo } from "../nix/narinfo.ts";
import { HASH_PART_LENGTH, parseStorePath } from "../nix/store-path.ts";
import { existsMany, headObject } from "../storage/bucket.ts";
import { FENCE_KEY, getTextObject } from "../storage/gc-store.ts";
import { NAR_PREFIX, narInfoKey, parseNarFileName } from "../storage/keys.ts";
import { fencesNar, fencesPath, parseFence, type Fence } from "./fence.ts";
import { MIN_UPLOAD_WINDOW_MS } from "./settings.ts";

const AFTER_COLLECTION = "push it again once the collection has finished (a few minutes; `uploader gc` shows its progress)";

export class UploadGate {
  readonly #fence: Fence | null;
  readonly #deadline: number;
  readonly #clock: () => number;

  constructor(fence: Fence | null, deadline: number, clock: () => number) {
    this.#fence = fence;
    this.#deadline = deadline;
    this.#clock = clock;
  }

  /** Whether the store path with this hash part is about to be deleted. */
  fencesPath(hashPart: string): boolean {
    return this.#fence !== null && fencesPath(this.#fence, hashPart);
  }

  /** Throws 422 when the store path with this hash part is about to be deleted. */
  checkPath(hashPart: string, storePath: string): void {
    if (this.#fence !== null && fencesPath(this.#fence, hashPart)) {
      throw fail("unprocessable", `${storePath} is being garbage-collected right now (old and unused); ${AFTER_COLLECTION}`);
    }
  }

  /** Throws 422 when the narinfo's path, one of its references or its NAR is about to be deleted. */
  checkNarInfo(info: NarInfo): void {
    const fence = this.#fence;
    if (fence === null) return;
    const self = parseStorePath(info.storePath);
    if (self !== null) this.checkPath(self.hash, info.storePath);
    for (const ref of info.references) {
      if (fencesPath(fence, ref.slice(0, HASH_PART_LENGTH))) {
        throw fail("unprocessable", `the reference ${ref} is being garbage-collected right now; ${AFTER_COLLECTION}`);
      }
    }
    const file = info.url.startsWith(NAR_PREFIX) ? parseNarFileName(info.url.slice(NAR_PREFIX.length)) : null;
    if (file !== null && fencesNar(fence, file.fileHash)) {
      throw fail("unprocessable", `the NAR ${info.url} is being garbage-collected right now; upload it again, or ${AFTER_COLLECTION}`);
    }
  }

  /**
   * Throws 409 when a write now could land after a collection's second look (the upload
   * took more than half the window since the gate opened). Call right before writing.
   */
  assertInTime(): void {
    if (this.#clock() > this.#deadline) {
      throw fail("conflict", "the upload took too long to be safe during garbage collection; retry it");
    }
  }
}

/**
 * Reads the fence; call before checking that anything the write depends on exists.
 * `windowMs` is GC_UPLOAD_WINDOW_SECONDS (settings.gc.uploadWindowMs).
 */
export async function openUploadGate(bucket: R2Bucket, windowMs: number, clock: () => number = Date.now): Promise<UploadGate> {
  const opened = clock();
  const stored = await getTextObject(bucket, FENCE_KEY);
  const fence = stored === null ? null : parseFence(stored.text);
  return new UploadGate(fence, opened + windowMs / 2, clock);
}

/**
 * A gate for a writer that checked the narinfo's NAR and references before it could open
 * one (a background copy): opens the gate with the shortest window any deployment may set,
 * then checks the NAR and the references again, so the order gate → checks → write holds.
 * Throws 422 when something is missing or fenced.
 */
export async function openGateAndRecheck(bucket: R2Bucket, info: NarInfo, clock: () => number = Date.now): Promise<UploadGate> {
  const gate = await openUploadGate(bucket, MIN_UPLOAD_WINDOW_MS, clock);
  gate.checkNarInfo(info);
  const self = parseStorePath(info.storePath)?.hash;
  const refs = info.references.map((r) => r.slice(0, HASH_PART_LENGTH)).filter((h) => h !== self);
  const [nar, present] = await Promise.all([
    info.url.startsWith(NAR_PREFIX) ? headObject(bucket, info.url) : Promise.resolve(null),
    existsMany(bucket, refs.map(narInfoKey)),
  ]);
  if (nar === null) throw fail("unprocessable", `the NAR ${info.url} is not in the cache`);
  const missing = refs.filter((_, i) => !present[i]);
  if (missing.length > 0) throw fail("unprocessable", `references not in the cache: ${missing.slice(0, 5).join(", ")}`);
  return gate;
}
