// Streaming NAR reader/validator: vectors in any chunking, PROTOCOL §8.2 rejections built by hand-editing
// valid NARs, .ls listings, bounded memory, and properties over random trees, noise and mutations.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { concatBytes, toHex, utf8 } from "../../src/nix/encoding.ts";
import { NarError } from "../../src/nix/errors.ts";
import { formatSha256, sha256 } from "../../src/nix/hash.ts";
import { NAR_MAX_DEPTH, type NarTree } from "../../src/nix/nar-wire.ts";
import { narSourceFromTree, serializeNar, writeNar } from "../../src/nix/nar-writer.ts";
import { formatNarListing, type NarListingNode } from "../../src/nix/nar-listing.ts";
import { readNar } from "../../src/nix/nar-reader.ts";
import { vectors } from "./fixtures.ts";
import { asyncChunks, nar, replaceToken, split, str, tokenOffset, vectorBytes } from "./nar-helpers.ts";

const fromHexVec = (hex: string): Uint8Array => Uint8Array.from(hex.match(/../g)!.map((b) => parseInt(b, 16)));

/** readNar over the bytes in one chunk; resolves to the NarError (or undefined when accepted). */
async function rejection(bytes: Uint8Array): Promise<NarError | undefined> {
  try {
    await readNar(asyncChunks([bytes]));
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(NarError);
    return e as NarError;
  }
}

describe("readNar accepts every vector of vectors.json", () => {
  for (const v of vectors.nar) {
    it(v.label, async () => {
      const bytes = fromHexVec(v.hex);
      const { narSize, tree } = await readNar(asyncChunks([bytes]), { tree: true });
      expect(narSize).toBe(v.narSize);
      // The tree read back serialises to exactly the same bytes.
      expect(toHex(await serializeNar(tree!))).toBe(v.hex);
      expect(formatSha256(await sha256(bytes))).toBe(v.narHash);
    });
    it(`${v.label}: in 1-byte chunks, and split at every position`, async () => {
      const bytes = fromHexVec(v.hex);
      expect((await readNar(asyncChunks(split(bytes, [...bytes.keys()])))).narSize).toBe(v.narSize);
      for (let cut = 0; cut <= bytes.length; cut++) {
        expect((await readNar(asyncChunks(split(bytes, [cut, cut, Math.floor(cut / 2)])))).narSize).toBe(v.narSize);
      }
    });
  }
  it("reads a web ReadableStream too, and releases its lock", async () => {
    const bytes = vectorBytes('dir {hello: "Hello World\\n"}');
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (const part of split(bytes, [5, 100, 101])) c.enqueue(part);
        c.close();
      },
    });
    expect((await readNar(stream)).narSize).toBe(296);
    expect(stream.locked).toBe(false);
  });
  it("cancels a ReadableStream it rejects", async () => {
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new Uint8Array(8).fill(0xff));
      },
      cancel() {
        cancelled = true;
      },
    });
    await expect(readNar(stream)).rejects.toThrow(NarError);
    expect(cancelled).toBe(true);
  });
});

describe("readNar rejections (PROTOCOL §8.2, by hand-editing valid NARs)", () => {
  const hello = vectorBytes('dir {hello: "Hello World\\n"}');
  const abx = vectorBytes('dir {a: "x", b -> a, x: exec ""}');
  const x = vectorBytes('regular "x" (1 byte)');
  const exec = vectorBytes('executable "#!/bin/sh\\n"');

  const cases: Array<[string, () => Uint8Array, number | null]> = [
    ["empty entry name", () => replaceToken(hello, "hello", ""), tokenOffset(hello, "hello")],
    ["entry name .", () => replaceToken(hello, "hello", "."), tokenOffset(hello, "hello")],
    ["entry name ..", () => replaceToken(hello, "hello", ".."), tokenOffset(hello, "hello")],
    ["entry name with /", () => replaceToken(hello, "hello", "he/lo"), tokenOffset(hello, "hello")],
    ["entry name with NUL", () => replaceToken(hello, "hello", [0x68, 0x65, 0, 0x6c, 0x6f]), tokenOffset(hello, "hello")],
    ["entry name of 256 bytes", () => replaceToken(hello, "hello", "h".repeat(256)), tokenOffset(hello, "hello")],
    ["unsorted names (x before b)", () => replaceToken(abx, "b", "z"), null],
    ["duplicate names (b renamed a)", () => replaceToken(abx, "b", "a"), tokenOffset(abx, "b")],
    ["non-zero padding after a 1-byte file", () => x.map((b, i) => (i === tokenOffset(x, "x") + 9 ? 1 : b)), tokenOffset(x, "x") + 9],
    ["non-zero padding in the magic", () => x.map((b, i) => (i === 23 ? 0x20 : b)), 23],
    ["non-zero padding after a name", () => hello.map((b, i) => (i === tokenOffset(hello, "hello") + 15 ? 9 : b)), tokenOffset(hello, "hello") + 15],
    ["truncated contents", () => x.subarray(0, tokenOffset(x, "x") + 8), tokenOffset(x, "x") + 8],
    ["truncated padding", () => x.subarray(0, tokenOffset(x, "x") + 12), tokenOffset(x, "x") + 12],
    ["executable after contents", () => nar("nix-archive-1", "(", "type", "regular", "contents", "#!/bin/sh\n", "executable", "", ")"), null],
    ["node before name", () => replaceToken(hello, "name", "node"), null],
    ["unknown tag where contents is expected", () => replaceToken(x, "contents", "contentz"), tokenOffset(x, "contents")],
    ["magic nix-archive-2", () => replaceToken(x, "nix-archive-1", "nix-archive-2"), 0],
    ["magic of the wrong length", () => replaceToken(x, "nix-archive-1", "nix-archive"), 0],
    ["non-empty executable marker", () => replaceToken(exec, "", "x"), tokenOffset(exec, "")],
    ["unknown node type", () => replaceToken(x, "regular", "fifo"), tokenOffset(x, "regular")],
    ["missing type tag", () => replaceToken(x, "type", "kind"), tokenOffset(x, "type")],
    ["entry without its closing )", () => replaceToken(hello, ")", "entry", 1), null],
    ["trailing zero bytes after the root", () => concatBytes([x, new Uint8Array(8)]), x.length],
    ["one trailing byte after the root", () => concatBytes([x, Uint8Array.of(0)]), x.length],
    ["a second NAR after the first", () => concatBytes([x, x]), x.length],
    ["empty input", () => new Uint8Array(), 0],
    ["a tag 2^40 bytes long", () => Uint8Array.from([0, 0, 0, 0, 0, 1, 0, 0, ...x.subarray(8)]), 0],
    ["a file size beyond 2^53", () => x.map((b, i) => (i === tokenOffset(x, "contents") + 16 + 7 ? 0x80 : b)), tokenOffset(x, "contents") + 16],
    ["a file size beyond the input", () => x.map((b, i) => (i === tokenOffset(x, "contents") + 16 + 4 ? 1 : b)), null],
    ["an empty symlink target", () => replaceToken(vectorBytes("dir {hello -> x}"), "x", ""), null],
    ["a symlink target with NUL", () => replaceToken(vectorBytes("dir {hello -> x}"), "x", [0x61, 0]), null],
    ["a symlink target of 4096 bytes", () => replaceToken(vectorBytes("dir {hello -> x}"), "x", "t".repeat(4096)), null],
  ];
  for (const [what, build, offset] of cases) {
    it(what, async () => {
      const err = await rejection(build());
      expect(err, what).toBeInstanceOf(NarError);
      if (offset !== null) expect(err!.offset).toBe(offset);
    });
  }

  it("every truncation of every vector is rejected at the end of input", async () => {
    for (const v of vectors.nar) {
      const bytes = fromHexVec(v.hex);
      for (let len = 0; len < bytes.length; len++) {
        const err = await rejection(bytes.subarray(0, len));
        expect(err?.offset, `${v.label} truncated to ${len}`).toBe(len);
      }
    }
  });

  const nested = (levels: number): Uint8Array => {
    // Hand-built: `levels` directories each holding the next as "d", innermost empty.
    const open: Array<string | number[]> = [];
    const close: Array<string | number[]> = [];
    for (let i = 0; i < levels; i++) {
      open.push("(", "type", "directory", "entry", "(", "name", "d", "node");
      close.push(")", ")");
    }
    return nar("nix-archive-1", ...open, "(", "type", "directory", ")", ...close.flatMap((c, i) => (i % 2 === 0 ? [c, ")"] : [])).slice(0, 2 * levels));
  };
  it("accepts 63 nested directory levels and rejects 64", async () => {
    expect(await rejection(nested(NAR_MAX_DEPTH - 1))).toBeUndefined();
    expect(await rejection(nested(NAR_MAX_DEPTH))).toBeInstanceOf(NarError);
  });
  it("the nesting helper builds what the writer writes", async () => {
    let t: NarTree = { type: "directory", entries: {} };
    for (let i = 0; i < 5; i++) t = { type: "directory", entries: { d: t } };
    expect(nested(5)).toEqual(await serializeNar(t));
  });
});

describe("listings (.ls)", () => {
  it("a single 4-byte file: narOffset 96, as observed from Nix 2.8 (PROTOCOL §5.1)", async () => {
    const bytes = nar("nix-archive-1", "(", "type", "regular", "contents", "abc\n", ")");
    const { listing } = await readNar(asyncChunks([bytes]), { listing: true });
    expect(formatNarListing(listing!)).toBe('{"version":1,"root":{"type":"regular","size":4,"narOffset":96}}');
  });
  it("the directory of PROTOCOL §1.5, offsets from its hex table", async () => {
    const { listing, tree } = await readNar(asyncChunks([vectorBytes('dir {a: "x", b -> a, x: exec ""}')]), { listing: true });
    expect(tree).toBeUndefined();
    expect(formatNarListing(listing!)).toBe(
      '{"version":1,"root":{"type":"directory","entries":{' +
        '"a":{"type":"regular","size":1,"narOffset":232},' +
        '"b":{"type":"symlink","target":"a"},' +
        '"x":{"type":"regular","size":0,"executable":true,"narOffset":648}}}}',
    );
  });
  it("writes entries in NAR (UTF-8 byte) order and escapes names as JSON", async () => {
    const tree: NarTree = {
      type: "directory",
      entries: {
        "10": { type: "regular", contents: new Uint8Array() },
        "9": { type: "regular", contents: new Uint8Array() },
        "\u{1F600}": { type: "symlink", target: 'quote " and \\' },
        "\uFF61": { type: "directory", entries: {} },
        "new\nline": { type: "regular", contents: new Uint8Array() },
      },
    };
    const { listing } = await readNar(asyncChunks([await serializeNar(tree)]), { listing: true });
    const json = formatNarListing(listing!);
    // Checked on the text: JSON.parse would reorder integer-like keys ("9" before "10").
    const positions = ['"10":', '"9":', '"new\\nline":', '"\uFF61":', '"\u{1F600}":'].map((k) => json.indexOf(k));
    expect(positions.every((p) => p > 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(JSON.parse(json).root.entries["\u{1F600}"]).toEqual({ type: "symlink", target: 'quote " and \\' });
  });
  it("escapes strings exactly as Nix 2.8 does (its .ls output, observed)", async () => {
    const x = (): NarTree => ({ type: "regular", contents: utf8("x") });
    const tree: NarTree = {
      type: "directory",
      entries: { "a\bb": x(), "c\fd": x(), "e\x01f": x(), lnk: { type: "symlink", target: "t\x02\\" }, 'q"uo\\te': x(), "n\nl": x(), "r\rr": x(), "t\tt": x() },
    };
    const { listing } = await readNar(asyncChunks([await serializeNar(tree)]), { listing: true });
    const entries = formatNarListing(listing!).replace(/"narOffset":\d+/g, '"narOffset":N');
    // From `nix copy --to file://…?write-nar-listing=1` (Nix 2.8) of directories with these names.
    for (const observed of [
      '"a\\u0008b":{"type":"regular","size":1,"narOffset":N}',
      '"c\\u000cd":{"type":"regular","size":1,"narOffset":N}',
      '"e\\u0001f":{"type":"regular","size":1,"narOffset":N}',
      '"lnk":{"type":"symlink","target":"t\\u0002\\\\"}',
      '"q\\"uo\\\\te":{"type":"regular","size":1,"narOffset":N}',
      '"n\\nl":{"type":"regular","size":1,"narOffset":N}',
      '"r\\rr":{"type":"regular","size":1,"narOffset":N}',
      '"t\\tt":{"type":"regular","size":1,"narOffset":N}',
    ]) {
      expect(entries).toContain(observed);
    }
    expect(JSON.parse(formatNarListing(listing!)).root.entries["a\bb"].size).toBe(1);
  });
  it("handles an entry called __proto__ in listing and tree", async () => {
    const tree: NarTree = { type: "directory", entries: {} };
    Object.defineProperty(tree.entries, "__proto__", { value: { type: "regular", contents: utf8("p") }, enumerable: true });
    const bytes = await serializeNar(tree);
    expect(toHex(bytes)).toContain(toHex(Uint8Array.from(str("__proto__"))));
    const result = await readNar(asyncChunks([bytes]), { listing: true, tree: true });
    expect(formatNarListing(result.listing!)).toContain('"__proto__":{"type":"regular","size":1');
    expect(await serializeNar(result.tree!)).toEqual(bytes);
  });
  it("refuses names that are not UTF-8 only when a listing or tree is requested", async () => {
    const bytes = replaceToken(vectorBytes('dir {hello: "Hello World\\n"}'), "hello", [0xff, 0xfe]);
    expect((await readNar(asyncChunks([bytes]))).narSize).toBe(bytes.length);
    await expect(readNar(asyncChunks([bytes]), { listing: true })).rejects.toThrow(NarError);
    await expect(readNar(asyncChunks([bytes]), { tree: true })).rejects.toThrow(NarError);
  });
});

describe("large files", () => {
  it("streams a 4 GiB + 7 byte file through writer and reader in bounded memory", async () => {
    const size = 2 ** 32 + 7;
    const piece = 1 << 20;
    async function* contents(): AsyncGenerator<Uint8Array> {
      // Fresh chunks, so that retaining them would show in the memory use.
      for (let left = size; left > 0; left -= piece) yield new Uint8Array(Math.min(piece, left));
    }
    const before = process.memoryUsage().rss;
    const { narSize, listing } = await readNar(writeNar({ type: "regular", executable: true, size, contents }), { listing: true });
    const grown = process.memoryUsage().rss - before;
    const narOffset = nar("nix-archive-1", "(", "type", "regular", "executable", "", "contents").length + 8;
    expect(narSize).toBe(narOffset + size + 1 + 16); // contents, 1 byte of padding, ")"
    expect(listing!.root).toEqual({ type: "regular", size, executable: true, narOffset });
    expect(grown).toBeLessThan(512 * 2 ** 20);
  }, 120_000);
});

// ---- properties ----

const char = fc.oneof(
  fc.constantFrom(..."abcxyzABC019 .-_~+=?"),
  fc.integer({ min: 0x80, max: 0xd7ff }).map((c) => String.fromCodePoint(c)),
  fc.integer({ min: 0xe000, max: 0xffff }).map((c) => String.fromCodePoint(c)),
  fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)),
);
const name = fc.string({ unit: char, minLength: 1, maxLength: 10 }).filter((n) => n !== "." && n !== "..");
const { tree: treeArb } = fc.letrec<{ tree: NarTree; file: NarTree; symlink: NarTree; dir: NarTree }>((tie) => ({
  tree: fc.oneof({ depthSize: "small", withCrossShrink: true }, tie("file"), tie("symlink"), tie("dir")),
  file: fc.record({ type: fc.constant("regular" as const), executable: fc.boolean(), contents: fc.uint8Array({ maxLength: 40 }) }),
  symlink: fc.record({ type: fc.constant("symlink" as const), target: fc.string({ unit: fc.oneof(char, fc.constant("/")), minLength: 1, maxLength: 20 }) }),
  dir: fc.dictionary(name, tie("tree"), { maxKeys: 5 }).map((entries) => ({ type: "directory" as const, entries })),
}));

/** The tree as the reader returns it: no `executable: false`. */
function normalise(t: NarTree): NarTree {
  switch (t.type) {
    case "regular":
      return t.executable ? { type: "regular", executable: true, contents: t.contents } : { type: "regular", contents: t.contents };
    case "symlink":
      return t;
    case "directory":
      return { type: "directory", entries: Object.fromEntries(Object.entries(t.entries).map(([k, v]) => [k, normalise(v)])) };
  }
}

/** Checks a listing against the tree and the NAR bytes it came from. */
function checkListing(l: NarListingNode, t: NarTree, bytes: Uint8Array): void {
  expect(l.type).toBe(t.type);
  if (l.type === "regular" && t.type === "regular") {
    expect(l.size).toBe(t.contents.length);
    expect(l.executable ?? false).toBe(t.executable ?? false);
    expect(bytes.subarray(l.narOffset!, l.narOffset! + l.size)).toEqual(t.contents);
  } else if (l.type === "symlink" && t.type === "symlink") {
    expect(l.target).toBe(t.target);
  } else if (l.type === "directory" && t.type === "directory") {
    expect(Object.keys(l.entries).sort()).toEqual(Object.keys(t.entries).sort());
    for (const k of Object.keys(t.entries)) checkListing(l.entries[k]!, t.entries[k]!, bytes);
  }
}

const cuts = fc.array(fc.nat({ max: 4000 }), { maxLength: 6 });

describe("NAR properties", () => {
  it("random trees: writeNar then readNar gives the same tree, size and a listing that points at the contents", async () => {
    await fc.assert(
      fc.asyncProperty(treeArb, cuts, async (tree, cutPoints) => {
        const chunks: Uint8Array[] = [];
        for await (const c of writeNar(narSourceFromTree(tree))) chunks.push(c);
        const bytes = concatBytes(chunks);
        const result = await readNar(asyncChunks(split(bytes, cutPoints)), { tree: true, listing: true });
        expect(result.narSize).toBe(bytes.length);
        expect(result.tree).toEqual(normalise(tree));
        checkListing(result.listing!.root, tree, bytes);
        expect(await serializeNar(result.tree!)).toEqual(bytes);
      }),
      { numRuns: 300 },
    );
  });
  it("random byte strings only ever fail with NarError", async () => {
    const noise = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Plausible prefixes make the reader go deeper than pure noise would.
      fc.uint8Array({ maxLength: 200 }).map((tail) => concatBytes([nar("nix-archive-1", "(", "type"), tail])),
      fc.uint8Array({ maxLength: 200 }).map((tail) => concatBytes([nar("nix-archive-1", "(", "type", "directory", "entry", "(", "name"), tail])),
    );
    await fc.assert(
      fc.asyncProperty(noise, cuts, async (bytes, cutPoints) => {
        try {
          await readNar(asyncChunks(split(bytes, cutPoints)), { listing: true, tree: true });
        } catch (e) {
          expect(e).toBeInstanceOf(NarError);
        }
      }),
      { numRuns: 1000 },
    );
  });
  it("mutated and truncated NARs only ever fail with NarError, and whatever is accepted is canonical", async () => {
    const mutation = fc.record({
      tree: treeArb,
      edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }),
      truncate: fc.option(fc.nat(), { nil: undefined }),
      cutPoints: cuts,
    });
    await fc.assert(
      fc.asyncProperty(mutation, async ({ tree, edits, truncate, cutPoints }) => {
        let bytes = await serializeNar(tree);
        bytes = bytes.slice();
        for (const [at, value] of edits) bytes[at % bytes.length] = value;
        if (truncate !== undefined) bytes = bytes.subarray(0, truncate % (bytes.length + 1));
        try {
          const result = await readNar(asyncChunks(split(bytes, cutPoints)), { tree: true });
          expect(result.narSize).toBe(bytes.length);
          // A NAR the reader accepts is exactly what the writer makes of its tree.
          expect(await serializeNar(result.tree!)).toEqual(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(NarError);
        }
      }),
      { numRuns: 1000 },
    );
  });
  it("mutations of every vector only ever fail with NarError", async () => {
    const all = vectors.nar.map((v) => fromHexVec(v.hex));
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: all.length - 1 }), fc.nat(), fc.integer({ min: 0, max: 255 }), async (which, at, value) => {
        const bytes = all[which]!.slice();
        bytes[at % bytes.length] = value;
        try {
          const result = await readNar(asyncChunks([bytes]), { tree: true, listing: true });
          expect(await serializeNar(result.tree!)).toEqual(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(NarError);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
