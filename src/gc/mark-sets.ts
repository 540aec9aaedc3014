// A collection's marking state that grows with the bucket, as one R2 object: the live set
// and the NAR set (two KeySets), and the queues of paths still to follow (packed hash
// parts). A batch of the mark reads it with one get and writes it with one put; the state
// row (D1, read and written by every batch) stays small however large the queues grow.
//
//   Uint32 words: [MAGIC, L = the live set's words, N = the NAR set's words,
//                  Q, U, V = characters of the queue, unindexed and unlisted queues]
//                 the live set's L words, the NAR set's N words,
//                 then the Q + U + V characters of the queues (ASCII), padded to a word
//
// Each set keeps its own header (gc/key-set.ts), checked when read back; the sets are
// wrapped, not parsed or copied, when read.

import { HASH_PART_LENGTH } from "../nix/store-path.ts";
import { NAR_FILE_HASH_LENGTH } from "./fence.ts";
import { KeySet } from "./key-set.ts";

const MAGIC = 0x6e656d32; // "nem2"
const HEADER_WORDS = 6;

/** Live paths whose references still have to be read (gc/run-state.ts RunState has their meaning). */
export interface MarkQueues {
  queue: string;
  unindexed: string;
  unlisted: string;
}

export interface MarkSets {
  live: KeySet;
  nars: KeySet;
  queues: MarkQueues;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The bytes of `sets` as one object. */
export function formatMarkSets(sets: MarkSets): ArrayBuffer {
  const live = sets.live.words;
  const nars = sets.nars.words;
  const { queue, unindexed, unlisted } = sets.queues;
  const text = queue + unindexed + unlisted;
  const setWords = HEADER_WORDS + live.length + nars.length;
  const out = new Uint32Array(setWords + Math.ceil(text.length / 4));
  out.set([MAGIC, live.length, nars.length, queue.length, unindexed.length, unlisted.length]);
  out.set(live, HEADER_WORDS);
  out.set(nars, HEADER_WORDS + live.length);
  const written = encoder.encodeInto(text, new Uint8Array(out.buffer, setWords * 4));
  // Hash parts are ASCII: one byte each. Anything else would not read back.
  if (written.read !== text.length || written.written !== text.length) throw new Error("a mark queue holds a character that is not ASCII");
  return out.buffer;
}

/** The sets and queues stored in `buffer` (as formatMarkSets wrote them); null when it is not that. */
export function parseMarkSets(buffer: ArrayBuffer): MarkSets | null {
  if (buffer.byteLength % 4 !== 0 || buffer.byteLength < HEADER_WORDS * 4) return null;
  const words = new Uint32Array(buffer);
  const [magic, liveWords, narsWords, q, u, v] = words.subarray(0, HEADER_WORDS) as unknown as number[];
  const setWords = HEADER_WORDS + liveWords! + narsWords!;
  const chars = q! + u! + v!;
  if (magic !== MAGIC || setWords + Math.ceil(chars / 4) !== words.length) return null;
  if (q! % HASH_PART_LENGTH !== 0 || u! % HASH_PART_LENGTH !== 0 || v! % HASH_PART_LENGTH !== 0) return null;
  const live = KeySet.fromWords(words.subarray(HEADER_WORDS, HEADER_WORDS + liveWords!), HASH_PART_LENGTH);
  const nars = KeySet.fromWords(words.subarray(HEADER_WORDS + liveWords!, setWords), NAR_FILE_HASH_LENGTH);
  if (live === null || nars === null) return null;
  const text = decoder.decode(new Uint8Array(buffer, setWords * 4, chars));
  if (text.length !== chars) return null;
  return { live, nars, queues: { queue: text.slice(0, q), unindexed: text.slice(q, q! + u!), unlisted: text.slice(q! + u!) } };
}
