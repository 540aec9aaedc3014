// Test helpers for NAR tests: an independent minimal encoder for hand-built NARs, chunk
// splitting, and stream collection.
import { fromHex } from "../../src/nix/encoding.ts";
import type { NarTree } from "../../src/nix/nar-wire.ts";
import { vectors } from "./fixtures.ts";

/** str(s) written out by hand: u64le length, bytes, zero padding (independent of nar-wire.ts). */
export function str(s: string | Uint8Array | number[]): number[] {
  const bytes = typeof s === "string" ? [...new TextEncoder().encode(s)] : [...s];
  const len = [0, 0, 0, 0, 0, 0, 0, 0];
  let n = bytes.length;
  for (let i = 0; i < 8; i++) {
    len[i] = n % 256;
    n = Math.floor(n / 256);
  }
  const pad = (8 - (bytes.length % 8)) % 8;
  return [...len, ...bytes, ...new Array<number>(pad).fill(0)];
}

/** Concatenation of str() tokens (strings) and raw byte arrays. */
export function nar(...parts: Array<string | number[]>): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => (typeof p === "string" ? str(p) : p)));
}

/** Replaces the first occurrence of the token str(from) with str(to) (hand-editing a NAR). */
export function replaceToken(bytes: Uint8Array, from: string, to: string | number[], occurrence = 0): Uint8Array {
  const needle = str(from);
  let seen = 0;
  for (let i = 0; i + needle.length <= bytes.length; i += 8) {
    if (needle.every((b, j) => bytes[i + j] === b)) {
      if (seen++ === occurrence) {
        return Uint8Array.from([...bytes.subarray(0, i), ...str(to), ...bytes.subarray(i + needle.length)]);
      }
    }
  }
  throw new Error(`token ${JSON.stringify(from)} not found`);
}

/** Offset of the n-th occurrence of the token str(s). */
export function tokenOffset(bytes: Uint8Array, s: string, occurrence = 0): number {
  const needle = str(s);
  let seen = 0;
  for (let i = 0; i + needle.length <= bytes.length; i += 8) {
    if (needle.every((b, j) => bytes[i + j] === b) && seen++ === occurrence) return i;
  }
  throw new Error(`token ${JSON.stringify(s)} not found`);
}

/** Splits bytes at the given cut points (any order, duplicates allowed; empty chunks kept). */
export function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts.map((c) => Math.min(Math.max(c, 0), bytes.length)).sort((a, b) => a - b), bytes.length];
  const out: Uint8Array[] = [];
  for (let i = 0; i + 1 < points.length; i++) out.push(bytes.slice(points[i], points[i + 1]));
  return out;
}

export async function* asyncChunks(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}

export async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

const te = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The trees of vectors.json `nar`, written from their labels (PROTOCOL §8.2). */
export const VECTOR_TREES: Record<string, NarTree> = {
  'regular "hi\\n"': { type: "regular", contents: te("hi\n") },
  "empty regular file": { type: "regular", contents: new Uint8Array() },
  'regular "x" (1 byte)': { type: "regular", contents: te("x") },
  'executable "#!/bin/sh\\n"': { type: "regular", executable: true, contents: te("#!/bin/sh\n") },
  "empty directory": { type: "directory", entries: {} },
  "symlink -> /non-existent-48cujwe8ndf4as0bne": { type: "symlink", target: "/non-existent-48cujwe8ndf4as0bne" },
  'dir {hello: "Hello World\\n"}': { type: "directory", entries: { hello: { type: "regular", contents: te("Hello World\n") } } },
  'dir {hello: exec "Hello World\\n"}': {
    type: "directory",
    entries: { hello: { type: "regular", executable: true, contents: te("Hello World\n") } },
  },
  "dir {hello -> x}": { type: "directory", entries: { hello: { type: "symlink", target: "x" } } },
  'dir {a: "x", b -> a, x: exec ""}': {
    type: "directory",
    entries: {
      x: { type: "regular", executable: true, contents: new Uint8Array() },
      b: { type: "symlink", target: "a" },
      a: { type: "regular", contents: te("x") },
    },
  },
  'dir sorting {"\\uFF61": "1", "\\u{1F600}": "2"}': {
    type: "directory",
    entries: { "\u{1F600}": { type: "regular", contents: te("2") }, "\uFF61": { type: "regular", contents: te("1") } },
  },
  'nested {d: {e: {}}, f: "8bytes!!"}': {
    type: "directory",
    entries: {
      f: { type: "regular", contents: te("8bytes!!") },
      d: { type: "directory", entries: { e: { type: "directory", entries: {} } } },
    },
  },
};

export function vectorBytes(label: string): Uint8Array {
  const v = vectors.nar.find((n) => n.label === label);
  if (!v) throw new Error(`no NAR vector ${label}`);
  return fromHex(v.hex);
}
