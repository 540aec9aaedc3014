// NAR wire primitives (nar-wire.ts) and writer (nar-writer.ts): every vector of
// vectors.json byte for byte, validation, chunking.
import { describe, expect, it } from "vitest";
import { concatBytes, toHex, utf8 } from "../../src/nix/encoding.ts";
import { NarError } from "../../src/nix/errors.ts";
import { formatSha256, sha256 } from "../../src/nix/hash.ts";
import { encodeNarString, encodeU64, NAR_MAX_DEPTH, type NarTree, narPadding } from "../../src/nix/nar-wire.ts";
import {
  NAR_PASS_THROUGH_BYTES,
  NAR_WRITER_CHUNK_BYTES,
  type NarSource,
  narSourceFromTree,
  serializeNar,
  writeNar,
} from "../../src/nix/nar-writer.ts";
import { vectors } from "./fixtures.ts";
import { collect, nar, str, VECTOR_TREES, vectorBytes } from "./nar-helpers.ts";

describe("NAR primitives", () => {
  it("u64 is little-endian, exact up to 2^53 - 1", () => {
    expect(toHex(encodeU64(0))).toBe("0000000000000000");
    expect(toHex(encodeU64(13))).toBe("0d00000000000000");
    expect(toHex(encodeU64(0x1_0000_0007))).toBe("0700000001000000");
    expect(toHex(encodeU64(Number.MAX_SAFE_INTEGER))).toBe("ffffffffffff1f00");
    expect(() => encodeU64(-1)).toThrow(RangeError);
    expect(() => encodeU64(2 ** 53)).toThrow(RangeError);
  });
  it("strings are length, bytes, zero padding to 8", () => {
    expect(toHex(encodeNarString(""))).toBe("0000000000000000");
    expect(toHex(encodeNarString("("))).toBe("01000000000000002800000000000000");
    expect(toHex(encodeNarString("contents"))).toBe("0800000000000000636f6e74656e7473");
    expect(encodeNarString("nix-archive-1")).toEqual(Uint8Array.from(str("nix-archive-1")));
    expect([0, 1, 7, 8, 9, 16].map(narPadding)).toEqual([0, 7, 1, 0, 7, 0]);
  });
});

describe("NAR writer reproduces every vector of vectors.json byte for byte", () => {
  it("has a hand-written tree for each of the 12 vectors", () => {
    expect(vectors.nar.map((v) => v.label).sort()).toEqual(Object.keys(VECTOR_TREES).sort());
  });
  for (const v of vectors.nar) {
    it(v.label, async () => {
      const bytes = await serializeNar(VECTOR_TREES[v.label]!);
      expect(toHex(bytes)).toBe(v.hex);
      expect(bytes.length).toBe(v.narSize);
      const digest = await sha256(bytes);
      expect(formatSha256(digest)).toBe(v.narHash);
      expect(toHex(digest)).toBe(v.narHashBase16);
    });
  }
  it("matches the worked example of PROTOCOL §1.4 (hi\\n, 120 bytes)", async () => {
    const expected = nar("nix-archive-1", "(", "type", "regular", "contents", "hi\n", ")");
    expect(await serializeNar({ type: "regular", contents: utf8("hi\n") })).toEqual(expected);
  });
});

describe("NAR writer validation", () => {
  const file: NarTree = { type: "regular", contents: utf8("x") };
  const dirWith = (names: Uint8Array[]): NarSource => ({
    type: "directory",
    entries: () => names.map((name) => ({ name, node: narSourceFromTree(file) })),
  });
  const write = async (src: NarSource): Promise<Uint8Array> => concatBytes(await collect(writeNar(src)));

  for (const [what, name] of [
    ["empty", new Uint8Array()],
    [".", utf8(".")],
    ["..", utf8("..")],
    ["containing /", utf8("a/b")],
    ["containing NUL", Uint8Array.of(0x61, 0, 0x62)],
    ["longer than 255 bytes", utf8("a".repeat(256))],
  ] as const) {
    it(`rejects an entry name ${what}`, async () => {
      await expect(write(dirWith([utf8("ok"), name]))).rejects.toThrow(NarError);
    });
  }
  it("accepts names like ..., .a, a. and 255-byte names", async () => {
    await expect(write(dirWith([utf8("..."), utf8(".a"), utf8("a."), utf8("a".repeat(255))]))).resolves.toBeInstanceOf(Uint8Array);
  });
  it("rejects duplicate names, also when not adjacent in the input", async () => {
    await expect(write(dirWith([utf8("a"), utf8("b"), utf8("a")]))).rejects.toThrow(/duplicate/);
  });
  it("sorts entries by raw bytes, including names that are not UTF-8", async () => {
    const out = await write(dirWith([Uint8Array.of(0xff), utf8("\u{1F600}"), utf8("\uFF61"), utf8("Z"), utf8("a")]));
    const order = [utf8("Z"), utf8("a"), utf8("\uFF61"), utf8("\u{1F600}"), Uint8Array.of(0xff)].map((n) => toHex(Uint8Array.from(str(n))));
    const positions = order.map((h) => toHex(out).indexOf(h));
    expect(positions.every((p) => p > 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
  });
  it("rejects nesting of 64 levels and accepts 63", async () => {
    const chain = (levels: number): NarTree => {
      let t: NarTree = { type: "directory", entries: {} };
      for (let i = 0; i < levels; i++) t = { type: "directory", entries: { d: t } };
      return t;
    };
    await expect(serializeNar(chain(NAR_MAX_DEPTH - 1))).resolves.toBeInstanceOf(Uint8Array);
    await expect(serializeNar(chain(NAR_MAX_DEPTH))).rejects.toThrow(NarError);
  });
  it("rejects invalid symlink targets", async () => {
    for (const target of [new Uint8Array(), Uint8Array.of(0x61, 0), new Uint8Array(4096).fill(0x61)]) {
      await expect(write({ type: "symlink", target })).rejects.toThrow(NarError);
    }
    const longest = new Uint8Array(4095).fill(0x61);
    await expect(write({ type: "symlink", target: longest })).resolves.toEqual(
      nar("nix-archive-1", "(", "type", "symlink", "target", str(longest), ")"),
    );
  });
  it("rejects a file that yields more or fewer bytes than its size", async () => {
    const src = (size: number, chunks: Uint8Array[]): NarSource => ({ type: "regular", executable: false, size, contents: () => chunks });
    await expect(write(src(3, [utf8("ab")]))).rejects.toThrow(/2 bytes, 3 announced/);
    await expect(write(src(3, [utf8("ab"), utf8("cd")]))).rejects.toThrow(NarError);
    await expect(write(src(0, [utf8("a")]))).rejects.toThrow(NarError);
    await expect(write(src(NAR_PASS_THROUGH_BYTES, [new Uint8Array(NAR_PASS_THROUGH_BYTES + 1)]))).rejects.toThrow(NarError);
    await expect(write(src(4, [utf8("ab"), new Uint8Array(), utf8("cd")]))).resolves.toHaveLength(120);
  });
  it("rejects sizes that are not non-negative safe integers", async () => {
    for (const size of [-1, 1.5, 2 ** 53, Number.NaN]) {
      await expect(write({ type: "regular", executable: false, size, contents: () => [] })).rejects.toThrow(NarError);
    }
  });
  it("reports the NAR offset of the failure", async () => {
    const err = await write(dirWith([utf8("a"), utf8("a")])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NarError);
    // The duplicate is detected once the first entry is written.
    const firstEntry = nar("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a", "node",
      "(", "type", "regular", "contents", "x", ")", ")");
    expect((err as NarError).offset).toBe(firstEntry.length);
  });
  it("accepts async iterables as file contents and a Promise of entries", async () => {
    const src: NarSource = {
      type: "directory",
      entries: async () => [
        {
          name: utf8("f"),
          node: {
            type: "regular",
            executable: true,
            size: 3,
            contents: async function* () {
              yield utf8("a");
              yield utf8("bc");
            },
          },
        },
      ],
    };
    const expected = nar("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "f", "node",
      "(", "type", "regular", "executable", "", "contents", "abc", ")", ")", ")");
    expect(await write(src)).toEqual(expected);
  });
});

describe("NAR writer chunking", () => {
  it("coalesces small tokens and files into chunks of at most 64 KiB", async () => {
    const entries: Record<string, NarTree> = {};
    for (let i = 0; i < 5000; i++) entries[`file-${i}`] = { type: "regular", contents: utf8(`contents ${i}\n`) };
    const chunks = await collect(writeNar(narSourceFromTree({ type: "directory", entries })));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    expect(chunks.every((c) => c.length <= NAR_WRITER_CHUNK_BYTES)).toBe(true);
    // Every chunk but the last is nearly full.
    expect(chunks.slice(0, -1).every((c) => c.length > NAR_WRITER_CHUNK_BYTES - 300)).toBe(true);
    expect(chunks.length).toBe(Math.ceil(total / (NAR_WRITER_CHUNK_BYTES - 300)));
  });
  it("passes big file chunks through without copying", async () => {
    const big = new Uint8Array(1 << 20).fill(7);
    const chunks = await collect(
      writeNar({ type: "regular", executable: false, size: 2 * big.length, contents: () => [big, big] }),
    );
    expect(chunks.filter((c) => c === big)).toHaveLength(2);
    expect(chunks.length).toBe(4); // header, big, big, padding-less trailer ")"
  });
  it("never reuses a chunk it has yielded", async () => {
    const entries: Record<string, NarTree> = {};
    for (let i = 0; i < 3000; i++) entries[`f${i}`] = { type: "regular", contents: new Uint8Array(40).fill(i & 255) };
    const tree: NarTree = { type: "directory", entries };
    const kept = await collect(writeNar(narSourceFromTree(tree)));
    expect(concatBytes(kept)).toEqual(await serializeNar(tree));
    expect(new Set(kept.map((c) => c.buffer)).size).toBe(kept.length);
  });
});
