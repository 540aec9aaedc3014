// The mark sets of a collection (the live paths and the NARs they use, two KeySets) as one
// R2 object, so a batch reads them with one get and writes them with one put:
//
//   Uint32 words: [MAGIC, n = the live set's word count, the live set's n words, the NAR set's words]
//
// Each set keeps its own header (gc/key-set.ts), checked when read back; the sets are
// wrapped, not parsed or copied, when read.

import { HASH_PART_LENGTH } from "../nix/store-path.ts";
import { NAR_FILE_HASH_LENGTH } from "./fence.ts";
import { KeySet } from "./key-set.ts";

const MAGIC = 0x6e656d32; // "nem2"
const HEADER_WORDS = 2;

export interface MarkSets {
  live: KeySet;
  nars: KeySet;
}

/** The bytes of `sets` as one object. */
export function formatMarkSets(sets: MarkSets): ArrayBuffer {
  const live = sets.live.words;
  const nars = sets.nars.words;
  const out = new Uint32Array(HEADER_WORDS + live.length + nars.length);
  out[0] = MAGIC;
  out[1] = live.length;
  out.set(live, HEADER_WORDS);
  out.set(nars, HEADER_WORDS + live.length);
  return out.buffer;
}

/** The sets stored in `buffer` (as formatMarkSets wrote them); null when it is not that. */
export function parseMarkSets(buffer: ArrayBuffer): MarkSets | null {
  if (buffer.byteLength % 4 !== 0 || buffer.byteLength < HEADER_WORDS * 4) return null;
  const words = new Uint32Array(buffer);
  const liveWords = words[1]!;
  if (words[0] !== MAGIC || liveWords > words.length - HEADER_WORDS) return null;
  const live = KeySet.fromWords(words.subarray(HEADER_WORDS, HEADER_WORDS + liveWords), HASH_PART_LENGTH);
  const nars = KeySet.fromWords(words.subarray(HEADER_WORDS + liveWords), NAR_FILE_HASH_LENGTH);
  return live === null || nars === null ? null : { live, nars };
}
