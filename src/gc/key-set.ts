// An exact set of fixed-length nix32 strings (store path hash parts, NAR file hashes) with
// one "expanded" flag per member, living in a single ArrayBuffer.
//
// Garbage collection carries its mark from one Worker invocation to the next in R2. A
// JavaScript Set of 20,000 strings costs ~5 ms of CPU to rebuild from JSON, half of the free
// plan's 10 ms; this set is read back with no parsing at all (`fromBuffer` wraps the bytes R2
// returns) and each lookup touches a few words.
//
// Layout (Uint32 words): header [MAGIC, keyChars, capacity, count, seed], then `capacity`
// slots of (keyWords + 1) words: the key's nix32 digits packed 6 per word (30 bits), then a
// flags word (bit 0 occupied, bit 1 expanded). Open addressing with linear probing; the
// table doubles when more than half full. Keys are compared in full, never by a digest: a
// collision would let a path's references go unmarked, so only equality is trusted. The
// probe start is a seeded mix of all key words, so chosen hash parts cannot pile up in one
// run of slots.

import { NIX32_ALPHABET } from "../nix/nix32.ts";

const MAGIC = 0x6e656331; // "nec1"
const HEADER_WORDS = 5;
const DIGITS_PER_WORD = 6;
const OCCUPIED = 1;
const EXPANDED = 2;
/** Smallest table: 1024 slots, a few KB, for small caches and tests. */
const MIN_CAPACITY = 1024;

/** nix32 character code → digit value, or -1. */
const DIGIT = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT[NIX32_ALPHABET.charCodeAt(i)] = i;

function wordsFor(keyChars: number): number {
  return Math.ceil(keyChars / DIGITS_PER_WORD);
}

function capacityFor(expected: number): number {
  let capacity = MIN_CAPACITY;
  while (capacity < expected * 2) capacity *= 2;
  return capacity;
}

/** What the set holds of a key (KeySet.state). */
export const KEY_ABSENT = 0;
/** A member, not flagged expanded: for the collector, live and its references not yet followed. */
export const KEY_MEMBER = 1;
/** A member flagged expanded: its references have been (or are being) followed. */
export const KEY_EXPANDED = 2;
export type KeyState = typeof KEY_ABSENT | typeof KEY_MEMBER | typeof KEY_EXPANDED;

export class KeySet {
  readonly #keyChars: number;
  readonly #keyWords: number;
  readonly #slotWords: number;
  #words: Uint32Array;
  #capacity: number;
  #count: number;
  readonly #seed: number;
  /** Scratch space for the key being looked up (no allocation per lookup). */
  readonly #scratch: Uint32Array;

  private constructor(words: Uint32Array) {
    this.#words = words;
    this.#keyChars = words[1]!;
    this.#keyWords = wordsFor(this.#keyChars);
    this.#slotWords = this.#keyWords + 1;
    this.#capacity = words[2]!;
    this.#count = words[3]!;
    this.#seed = words[4]!;
    this.#scratch = new Uint32Array(this.#keyWords);
  }

  /** An empty set of `keyChars`-long keys, sized for about `expected` members. */
  static create(keyChars: number, expected = 0, seed = (Math.random() * 0x100000000) >>> 0): KeySet {
    const capacity = capacityFor(expected);
    const words = new Uint32Array(HEADER_WORDS + capacity * (wordsFor(keyChars) + 1));
    words.set([MAGIC, keyChars, capacity, 0, seed]);
    return new KeySet(words);
  }

  /** The set stored in `buffer` (as `buffer` returned it); null when it is not one. */
  static fromBuffer(buffer: ArrayBuffer, keyChars: number): KeySet | null {
    if (buffer.byteLength % 4 !== 0) return null;
    return KeySet.fromWords(new Uint32Array(buffer), keyChars);
  }

  /** The set stored in `words` (as `words` returned it, possibly within a larger buffer); null when it is not one. */
  static fromWords(words: Uint32Array, keyChars: number): KeySet | null {
    if (words.length < HEADER_WORDS) return null;
    const capacity = words[2]!;
    if (words[0] !== MAGIC || words[1] !== keyChars || (capacity & (capacity - 1)) !== 0 || capacity < MIN_CAPACITY) return null;
    if (words.length !== HEADER_WORDS + capacity * (wordsFor(keyChars) + 1)) return null;
    return new KeySet(words);
  }

  /** The set's words (a view, valid until the next insertion), to store or to copy into a larger buffer. */
  get words(): Uint32Array {
    this.#words[3] = this.#count;
    return this.#words;
  }

  get size(): number {
    return this.#count;
  }

  get keyChars(): number {
    return this.#keyChars;
  }

  /** Whether `key` is a member (false for a string that cannot be a key). */
  has(key: string): boolean {
    return this.#encode(key) && this.#lookup() >= 0;
  }

  /** Adds `key` (unflagged); true when it was not there before. Throws for a non-key. */
  add(key: string): boolean {
    if (!this.#encode(key)) throw new RangeError(`not a ${this.#keyChars}-character nix32 key: ${JSON.stringify(key)}`);
    return this.#insertEncoded() !== null;
  }

  /**
   * Adds the key at `at` in `packed` (keys concatenated), as add does; true when it was not
   * there before. Throws when `packed` has no key there.
   */
  addAt(packed: string, at: number): boolean {
    if (!this.#encode(packed, at)) throw new RangeError(`not a ${this.#keyChars}-character nix32 key: ${JSON.stringify(packed.slice(at, at + this.#keyChars))}`);
    return this.#insertEncoded() !== null;
  }

  /** Whether `key` is a member, and whether it is flagged expanded (KEY_EXPANDED). */
  state(key: string): KeyState {
    if (!this.#encode(key)) return KEY_ABSENT;
    const slot = this.#lookup();
    if (slot < 0) return KEY_ABSENT;
    return (this.#words[this.#flagIndex(slot)]! & EXPANDED) !== 0 ? KEY_EXPANDED : KEY_MEMBER;
  }

  /** Whether `key` is a member with the expanded flag set. */
  isExpanded(key: string): boolean {
    return this.state(key) === KEY_EXPANDED;
  }

  /** Sets the expanded flag of `key`, adding it first when needed. */
  setExpanded(key: string): void {
    if (!this.#encode(key)) throw new RangeError(`not a ${this.#keyChars}-character nix32 key: ${JSON.stringify(key)}`);
    const found = this.#lookup();
    const slot = found >= 0 ? found : this.#insertEncoded()!;
    this.#words[this.#flagIndex(slot)]! |= EXPANDED;
  }

  /** Whether `key` has the length and alphabet of this set's keys. */
  static isKey(key: string, keyChars: number): boolean {
    if (key.length !== keyChars) return false;
    for (let i = 0; i < keyChars; i++) {
      const code = key.charCodeAt(i);
      if (code >= 128 || DIGIT[code]! < 0) return false;
    }
    return true;
  }

  #flagIndex(slot: number): number {
    return HEADER_WORDS + slot * this.#slotWords + this.#keyWords;
  }

  /**
   * Packs `key` into the scratch words; false for a wrong length or a non-nix32 character.
   * With `at`, the key is the one at `at` in `key` (which must hold all of it).
   */
  #encode(key: string, at = -1): boolean {
    const chars = this.#keyChars;
    if (at < 0 ? key.length !== chars : at + chars > key.length) return false;
    const start = Math.max(at, 0);
    const out = this.#scratch;
    for (let i = 0, j = start; i < out.length; i++) {
      let word = 0;
      const end = Math.min(start + chars, j + DIGITS_PER_WORD);
      for (let shift = 0; j < end; j++, shift += 5) {
        const code = key.charCodeAt(j);
        const digit = code < 128 ? DIGIT[code]! : -1;
        if (digit < 0) return false;
        word |= digit << shift;
      }
      out[i] = word;
    }
    return true;
  }

  #startSlot(key: Uint32Array): number {
    let h = this.#seed;
    for (let i = 0; i < key.length; i++) {
      h = Math.imul(h ^ key[i]!, 0x9e3779b1);
      h ^= h >>> 15;
    }
    h = Math.imul(h ^ (h >>> 13), 0x85ebca6b);
    h ^= h >>> 16;
    return h & (this.#capacity - 1);
  }

  /**
   * The slot holding the encoded scratch key, or -(s + 1) where s is the free slot where it
   * would go.
   */
  #lookup(): number {
    const words = this.#words;
    const k = this.#scratch;
    const keyWords = this.#keyWords;
    const slotWords = this.#slotWords;
    const mask = this.#capacity - 1;
    for (let slot = this.#startSlot(k); ; slot = (slot + 1) & mask) {
      const base = HEADER_WORDS + slot * slotWords;
      if ((words[base + keyWords]! & OCCUPIED) === 0) return -(slot + 1);
      let i = 0;
      while (i < keyWords && words[base + i] === k[i]) i++;
      if (i === keyWords) return slot;
    }
  }

  /** Inserts the encoded scratch key; its slot, or null when it was there already. */
  #insertEncoded(): number | null {
    let found = this.#lookup();
    if (found >= 0) return null;
    if ((this.#count + 1) * 2 > this.#capacity) {
      this.#grow();
      found = this.#lookup();
    }
    const slot = -found - 1;
    const base = HEADER_WORDS + slot * this.#slotWords;
    this.#words.set(this.#scratch, base);
    this.#words[base + this.#keyWords] = OCCUPIED;
    this.#count++;
    return slot;
  }

  /** Puts encoded `key` with `flags` into its first free slot (the key must be absent). */
  #place(key: Uint32Array, flags: number): void {
    const words = this.#words;
    const mask = this.#capacity - 1;
    let slot = this.#startSlot(key);
    while ((words[HEADER_WORDS + slot * this.#slotWords + this.#keyWords]! & OCCUPIED) !== 0) slot = (slot + 1) & mask;
    const base = HEADER_WORDS + slot * this.#slotWords;
    words.set(key, base);
    words[base + this.#keyWords] = flags;
  }

  #grow(): void {
    const old = this.#words;
    const oldCapacity = this.#capacity;
    this.#capacity = oldCapacity * 2;
    this.#words = new Uint32Array(HEADER_WORDS + this.#capacity * this.#slotWords);
    this.#words.set([MAGIC, this.#keyChars, this.#capacity, this.#count, this.#seed]);
    const key = new Uint32Array(this.#keyWords);
    for (let slot = 0; slot < oldCapacity; slot++) {
      const base = HEADER_WORDS + slot * this.#slotWords;
      const flags = old[base + this.#keyWords]!;
      if ((flags & OCCUPIED) === 0) continue;
      key.set(old.subarray(base, base + this.#keyWords));
      this.#place(key, flags);
    }
  }
}
