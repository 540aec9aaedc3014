// narinfo parse/format: byte-exact round trips of real fixtures, PROTOCOL §8.5 cases, field-named errors,
// and format → parse → format over generated narinfos.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toBase64, toHex } from "../../src/nix/encoding.ts";
import { NarInfoError } from "../../src/nix/errors.ts";
import { formatSha256, parseSha256, toSri } from "../../src/nix/hash.ts";
import {
  COMPRESSION_METHODS,
  formatNarInfo,
  MAX_NARINFO_LENGTH,
  type NarInfo,
  narInfoHashPart,
  parseNarInfo,
  referenceHashes,
  replaceNarInfoUrl,
} from "../../src/nix/narinfo.ts";
import { NIX32_ALPHABET } from "../../src/nix/nix32.ts";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { parseStorePathBaseName } from "../../src/nix/store-path.ts";
import { narinfoFixtures, vectors } from "./fixtures.ts";

const fixtures = narinfoFixtures();
const fixture = (name: string): string => fixtures.find(([f]) => f === name)![1];
const TEST_KEY = parsePublicKey(vectors.keys.publicKey);

function expectFieldError(text: string, field: string): NarInfoError {
  let caught: unknown;
  try {
    parseNarInfo(text);
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected a NarInfoError for field ${field}`).toBeInstanceOf(NarInfoError);
  expect((caught as NarInfoError).field).toBe(field);
  expect((caught as NarInfoError).message).toContain(field);
  return caught as NarInfoError;
}

describe("narinfo fixtures round-trip byte for byte", () => {
  it("has the fixtures", () => expect(fixtures.length).toBeGreaterThanOrEqual(7));
  for (const [file, text] of fixtures) {
    it(file, () => expect(formatNarInfo(parseNarInfo(text))).toBe(text));
  }
});

describe("replaceNarInfoUrl", () => {
  for (const [file, text] of fixtures) {
    it(`changes only the URL line of ${file}`, () => {
      const url = "upstream/cache.example.org/nar/some-file.nar.zst?x=1";
      const out = replaceNarInfoUrl(text, url);
      expect(parseNarInfo(out)).toEqual({ ...parseNarInfo(text), url });
      const changed = out.split("\n").filter((line, i) => line !== text.split("\n")[i]);
      expect(changed).toEqual([`URL: ${url}`]);
    });
  }
});

describe("parseNarInfo fields", () => {
  it("reads the Nix 2.8 zstd narinfo of PROTOCOL §3.3", () => {
    expect(parseNarInfo(fixture("nix-2.8-r-zstd.narinfo"))).toEqual({
      storePath: "/nix/store/003nl8nb4qsdi07avzdvp6sb0q2xygrq-r",
      url: "nar/17cf2fwd7qddmpv6n3bjzw5y9fa8bkfxcqcsm2v9fafkfdwa30wy.nar.zst",
      compression: "zstd",
      fileHash: "sha256:17cf2fwd7qddmpv6n3bjzw5y9fa8bkfxcqcsm2v9fafkfdwa30wy",
      fileSize: 131,
      narHash: "sha256:1wrscnixnwm2vjkqisxdr8z8ybjk15z6yj4fcifm2mqvc2ws98cp",
      narSize: 168,
      references: ["8ahf7kvw9r70hn5zr97c870cshs5ns7y-d"],
      sigs: ["test-key:pla50YuuM1WQNUPfVjghrAY5eiTm21UY5Pfx4PHNjcN462CkDygvIUhWvjQ2aJjtMf6LeISBOZMDh4XP4Ls/DQ=="],
      ca: "text:sha256:11cy2q2cbzrjnm6aj8mn858vb16kk5x2iismq1r4hqc67bhyrv43",
      extra: [],
    });
  });
  it("reads an empty References line as no references and writes it back with its trailing space", () => {
    const info = parseNarInfo(fixture("nix-2.8-hi-none.narinfo"));
    expect(info.references).toEqual([]);
    expect(info.omitReferencesLine).toBeUndefined();
    expect(formatNarInfo(info)).toContain("\nReferences: \n");
  });
  it("remembers a missing References line", () => {
    const info = parseNarInfo(fixture("no-references-line-d.narinfo"));
    expect(info.references).toEqual([]);
    expect(info.omitReferencesLine).toBe(true);
    expect(info.fileHash).toBeUndefined();
    expect(info.fileSize).toBeUndefined();
    expect(formatNarInfo(info)).not.toContain("References");
    // Adding references brings the line back.
    expect(formatNarInfo({ ...info, references: ["003nl8nb4qsdi07avzdvp6sb0q2xygrq-r"] })).toContain(
      "\nReferences: 003nl8nb4qsdi07avzdvp6sb0q2xygrq-r\n",
    );
  });
  it("reads Deriver and several references", () => {
    const info = parseNarInfo(fixture("nix-2.8-nixclient-test-xz.narinfo"));
    expect(info.deriver).toBe("0hc6pkrk93gz4lyn54wxskxsny081wr7-nixclient-test.drv");
    expect(info.references).toEqual(["kv1ricgmbf0b4bkskaay978y4zmn29r7-tree", "lk1p4cmwwgdmih1d8ly15n9cqpi2m5sn-nixclient-dep"]);
    expect(info.sigs).toEqual([]);
  });
  it("keeps several Sig lines in file order", () => {
    const info = parseNarInfo(fixture("two-sigs-d-zstd.narinfo"));
    expect(info.sigs.map((s) => s.slice(0, s.indexOf(":")))).toEqual(["cache.example.com-1", "test-key"]);
  });
  it("gives the hash part of StorePath", () => {
    expect(narInfoHashPart(parseNarInfo(fixture("cache.nixos.org-hello-2.12.1.narinfo")))).toBe("v02pl5dhayp8jnz8ahdvg5vi71s8xc6g");
    expect(() => narInfoHashPart({ storePath: "/tmp/x" })).toThrow(NarInfoError);
  });
});

// PROTOCOL §8.5: variants of the `d` narinfo (vector C with Compression: zstd).
describe("narinfo parser cases (PROTOCOL §8.5)", () => {
  const base = fixture("nix-2.8-d-zstd.narinfo");
  const baseLines = base.slice(0, -1).split("\n");
  const withLines = (lines: string[]): string => lines.join("\n") + "\n";
  const replace = (key: string, line: string | null): string =>
    withLines(baseLines.flatMap((l) => (l.startsWith(`${key}: `) ? (line === null ? [] : [line]) : [l])));

  it("baseline is accepted", () => expect(parseNarInfo(base).narSize).toBe(120));
  it("fields in reverse order: accepted, and formatted back in Nix's order", () => {
    const reversed = withLines([...baseLines].reverse());
    expect(parseNarInfo(reversed)).toEqual(parseNarInfo(base));
    expect(formatNarInfo(parseNarInfo(reversed))).toBe(base);
  });
  it("unknown field and System appended: accepted, kept, System in its Nix place", () => {
    const info = parseNarInfo(base + "Foo: bar\nSystem: x86_64-linux\n");
    expect(info.extra).toEqual([["Foo", "bar"]]);
    expect(info.system).toBe("x86_64-linux");
    const out = formatNarInfo(info);
    expect(out).toBe(base.replace("Sig: ", "System: x86_64-linux\nSig: ") + "Foo: bar\n");
    expect(formatNarInfo(parseNarInfo(out))).toBe(out);
  });
  it("References omitted: accepted, no references", () => {
    const info = parseNarInfo(replace("References", null));
    expect(info.references).toEqual([]);
    expect(formatNarInfo(info)).toBe(replace("References", null));
  });
  it("FileHash and FileSize omitted: accepted", () => {
    const text = withLines(baseLines.filter((l) => !l.startsWith("FileHash") && !l.startsWith("FileSize")));
    expect(formatNarInfo(parseNarInfo(text))).toBe(text);
  });
  it("NarHash in base16 or SRI: accepted as written, and the signature still verifies", async () => {
    const bytes = parseSha256("sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv");
    for (const form of [`sha256:${toHex(bytes)}`, toSri(bytes)]) {
      const text = replace("NarHash", `NarHash: ${form}`);
      const info = parseNarInfo(text);
      expect(info.narHash).toBe(form);
      expect(formatNarInfo(info)).toBe(text);
      expect(await verifyNarInfo(info, [TEST_KEY])).toBe(true);
    }
  });
  it("an extra `Sig: garbage` line: rejected (fatal since Nix 2.34)", () => {
    expectFieldError(base.replace("CA: ", "Sig: garbage\nCA: "), "Sig");
  });
  it("`Deriver: unknown-deriver`: accepted as no deriver", () => {
    const info = parseNarInfo(base.replace("Sig: ", "Deriver: unknown-deriver\nSig: "));
    expect(info.deriver).toBeUndefined();
    expect(formatNarInfo(info)).toBe(base);
  });
  it("empty Compression: accepted (bzip2) and kept as written", () => {
    const text = replace("Compression", "Compression: ");
    const info = parseNarInfo(text);
    expect(info.compression).toBe("");
    expect(formatNarInfo(info)).toBe(text);
  });
  it("Compression absent: undefined (Nix means bzip2)", () => {
    expect(parseNarInfo(replace("Compression", null)).compression).toBeUndefined();
  });
  it("every Compression name of current Nix is accepted", () => {
    for (const c of COMPRESSION_METHODS) expect(parseNarInfo(replace("Compression", `Compression: ${c}`)).compression).toBe(c);
  });
  it("`Compression: foo`: rejected (current Nix rejects it)", () => expectFieldError(replace("Compression", "Compression: foo"), "Compression"));
  it("no final newline: rejected", () => expectFieldError(base.slice(0, -1), "CA"));
  it("CRLF line endings: rejected", () => expectFieldError(base.replaceAll("\n", "\r\n"), "StorePath"));
  it("a single CR inside a value: rejected", () => expectFieldError(base.replace("NarSize: 120", "NarSize: 120\r"), "NarSize"));
  it("`References:` without the trailing space: rejected", () => expectFieldError(replace("References", "References:"), "References"));
  it("`NarSize:120` (no space): rejected instead of being read as 20", () => expectFieldError(replace("NarSize", "NarSize:120"), "NarSize"));
  it("two spaces after the colon: rejected", () => expectFieldError(replace("NarSize", "NarSize:  120"), "NarSize"));
  it("` URL: …` (leading space): rejected, naming URL", () => {
    expectFieldError(base.replace("URL: ", " URL: "), "URL");
  });
  it("URL missing or empty: rejected", () => {
    expectFieldError(replace("URL", null), "URL");
    expectFieldError(replace("URL", "URL: "), "URL");
  });
  it("NarSize 0 or missing: rejected", () => {
    expectFieldError(replace("NarSize", "NarSize: 0"), "NarSize");
    expectFieldError(replace("NarSize", null), "NarSize");
  });
  it("a second References line after an empty one: rejected (Nix would read a self-reference)", () => {
    expectFieldError(base.replace("References: \n", "References: \nReferences: 8ahf7kvw9r70hn5zr97c870cshs5ns7y-d\n"), "References");
  });
});

describe("narinfo rejections", () => {
  const base = fixture("nix-2.8-nixclient-test-xz.narinfo");
  const cases: Array<[string, string, string]> = [
    ["missing StorePath", base.replace(/^StorePath: .*\n/, ""), "StorePath"],
    ["missing NarHash", base.replace(/NarHash: .*\n/, ""), "NarHash"],
    ["StorePath in another store dir", base.replace("/nix/store/7mk", "/gnu/store/7mk"), "StorePath"],
    ["StorePath with a bad hash", base.replace("7mk888qc7c6aqf6aa11n6hk01rd2lljw", "7mk888qc7c6aqf6aa11n6hk01rd2llje"), "StorePath"],
    ["StorePath with a sub-path", base.replace("-nixclient-test\n", "-nixclient-test/bin\n"), "StorePath"],
    ["StorePath base name only", base.replace("/nix/store/7mk", "7mk"), "StorePath"],
    ["invalid reference", base.replace("kv1ricgmbf0b4bkskaay978y4zmn29r7-tree", "kv1ricgmbf0b4bkskaay978y4zmn29r7-t ree"), "References"],
    ["reference as a full path", base.replace("References: kv1", "References: /nix/store/kv1"), "References"],
    ["duplicate reference", base.replace("lk1p4cmwwgdmih1d8ly15n9cqpi2m5sn-nixclient-dep", "kv1ricgmbf0b4bkskaay978y4zmn29r7-tree"), "References"],
    ["double space between references", base.replace("-tree lk1", "-tree  lk1"), "References"],
    ["trailing space after references", base.replace("-nixclient-dep\n", "-nixclient-dep \n"), "References"],
    ["invalid deriver", base.replace("0hc6pkrk93gz4lyn54wxskxsny081wr7-nixclient-test.drv", "nixclient-test.drv"), "Deriver"],
    ["deriver named ..", base.replace("0hc6pkrk93gz4lyn54wxskxsny081wr7-nixclient-test.drv", "0hc6pkrk93gz4lyn54wxskxsny081wr7-.."), "Deriver"],
    ["NarHash of the wrong algorithm", base.replace("NarHash: sha256:", "NarHash: sha512:"), "NarHash"],
    ["NarHash with high bits set", base.replace("NarHash: sha256:1qa2", "NarHash: sha256:2qa2"), "NarHash"],
    ["NarHash truncated", base.replace("NarHash: sha256:1qa2", "NarHash: sha256:qa2"), "NarHash"],
    ["FileHash not a hash", base.replace("FileHash: sha256:1i5v", "FileHash: 1i5v"), "FileHash"],
    ["NarSize not a number", base.replace("NarSize: 1112", "NarSize: 1112x"), "NarSize"],
    ["NarSize negative", base.replace("NarSize: 1112", "NarSize: -1112"), "NarSize"],
    ["NarSize with a leading zero", base.replace("NarSize: 1112", "NarSize: 01112"), "NarSize"],
    ["NarSize in hex", base.replace("NarSize: 1112", "NarSize: 0x458"), "NarSize"],
    ["NarSize beyond 2^53", base.replace("NarSize: 1112", "NarSize: 9007199254740993"), "NarSize"],
    ["FileSize not a number", base.replace("FileSize: 344", "FileSize: 3.44"), "FileSize"],
    ["FileSize empty", base.replace("FileSize: 344", "FileSize: "), "FileSize"],
    ["Sig without colon", base + "Sig: garbage\n", "Sig"],
    ["Sig with an empty name", base + `Sig: :${toBase64(new Uint8Array(64))}\n`, "Sig"],
    ["Sig with bad base64", base + "Sig: test-key:not*base64\n", "Sig"],
    ["Sig of 63 bytes", base + `Sig: test-key:${toBase64(new Uint8Array(63))}\n`, "Sig"],
    ["Sig of 65 bytes", base + `Sig: test-key:${toBase64(new Uint8Array(65))}\n`, "Sig"],
    ["Sig as elided in NIX-CLIENT.md §5", base + "Sig: test-1:M5oESDrX…qBg==\n", "Sig"],
    ["CA without a method", base + "CA: sha256:1qa2g30by0vqr96cairh7gwzj8xl5mlv54i3jid7m9py6r90s82v\n", "CA"],
    ["CA twice", base + "CA: fixed:r:sha256:1qa2\nCA: fixed:r:sha256:1qa2\n", "CA"],
    ["StorePath twice", base + "StorePath: /nix/store/7mk888qc7c6aqf6aa11n6hk01rd2lljw-nixclient-test\n", "StorePath"],
    ["NarSize twice", base + "NarSize: 1112\n", "NarSize"],
  ];
  for (const [what, text, field] of cases) it(`${what} → ${field}`, () => expectFieldError(text, field));

  it("a line without a colon names its line", () => expectFieldError(base.replace("Compression: xz\n", "Compression xz\n"), "line 3"));
  it("an empty line names its line", () => expectFieldError(base + "\n", "line 10"));
  it("an empty document", () => expectFieldError("", "(document)"));
  it("oversized input", () => {
    const big = base + `Padding: ${"x".repeat(MAX_NARINFO_LENGTH)}\n`;
    expectFieldError(big, "(document)");
  });
  it("a large but legitimate narinfo with 4000 references is accepted", () => {
    const refs = Array.from({ length: 4000 }, (_, i) => `${i.toString().padStart(32, "0")}-${"a".repeat(150)}`);
    const text = base.replace(/References: .*\n/, `References: ${refs.join(" ")}\n`);
    expect(text.length).toBeLessThan(MAX_NARINFO_LENGTH);
    expect(parseNarInfo(text).references).toHaveLength(4000);
  });
});

describe("formatNarInfo guards", () => {
  const info = (): NarInfo => parseNarInfo(fixture("nix-2.8-d-zstd.narinfo"));
  it("refuses values with line breaks (no line injection)", () => {
    expect(() => formatNarInfo({ ...info(), url: "nar/x.nar\nStorePath: /nix/store/evil" })).toThrow(NarInfoError);
    expect(() => formatNarInfo({ ...info(), extra: [["Foo", "a\rb"]] })).toThrow(NarInfoError);
  });
  it("refuses extra fields that are not keys or that shadow known ones", () => {
    for (const key of ["", " Foo", "Foo:", "StorePath", "Sig", "NarSize"]) {
      expect(() => formatNarInfo({ ...info(), extra: [[key, "x"]] }), key).toThrow(NarInfoError);
    }
  });
  it("refuses sizes that are not non-negative integers", () => {
    expect(() => formatNarInfo({ ...info(), narSize: -1 })).toThrow(NarInfoError);
    expect(() => formatNarInfo({ ...info(), fileSize: 1.5 })).toThrow(NarInfoError);
  });
});

// Generated narinfos: format → parse → format is the identity on the text and the object.
const nix32Char = fc.constantFrom(...NIX32_ALPHABET);
const hashPart = fc.string({ unit: nix32Char, minLength: 32, maxLength: 32 });
const nameChar = fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=");
const baseName = fc
  .tuple(hashPart, fc.string({ unit: nameChar, minLength: 1, maxLength: 40 }))
  .map(([h, n]) => `${h}-${n}`)
  .filter((b) => parseStorePathBaseName(b) !== null);
const digest = fc.uint8Array({ minLength: 32, maxLength: 32 });
const hashString = fc.oneof(
  digest.map(formatSha256),
  digest.map(toSri),
  digest.map((d) => `sha256:${toHex(d)}`),
  digest.map((d) => `sha256:${toBase64(d)}`),
);
const lineSafe = fc.string({ maxLength: 30 }).filter((s) => !s.includes("\n") && !s.includes("\r"));
const sig = fc
  .tuple(fc.string({ unit: nameChar, minLength: 1, maxLength: 12 }), fc.uint8Array({ minLength: 64, maxLength: 64 }))
  .map(([n, b]) => `${n}:${toBase64(b)}`);
const known = new Set(["StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "References", "Deriver", "System", "Sig", "CA"]);
const extraKey = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,10}$/).filter((k) => !known.has(k));

const narInfoArb: fc.Arbitrary<NarInfo> = fc
  .record(
    {
      storePath: baseName.map((b) => `/nix/store/${b}`),
      url: lineSafe.filter((s) => s.length > 0),
      compression: fc.constantFrom("", ...COMPRESSION_METHODS),
      fileHash: hashString,
      fileSize: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      narHash: hashString,
      narSize: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      references: fc.uniqueArray(baseName, { maxLength: 6 }),
      deriver: baseName,
      system: lineSafe,
      sigs: fc.array(sig, { maxLength: 3 }),
      ca: digest.map((d) => `fixed:r:${formatSha256(d)}`),
      extra: fc.array(fc.tuple(extraKey, lineSafe), { maxLength: 3 }),
      omitReferencesLine: fc.constant(true),
    },
    { requiredKeys: ["storePath", "url", "narHash", "narSize", "references", "sigs", "extra"] },
  )
  .map((info) => {
    if (info.references.length > 0) delete info.omitReferencesLine;
    return info as NarInfo;
  });

describe("narinfo property: format → parse → format", () => {
  it("round-trips generated narinfos", () => {
    fc.assert(
      fc.property(narInfoArb, (info) => {
        const text = formatNarInfo(info);
        const parsed = parseNarInfo(text);
        expect(parsed).toEqual(info);
        expect(formatNarInfo(parsed)).toBe(text);
      }),
      { numRuns: 300 },
    );
  });
  it("never throws anything but NarInfoError on mutated narinfos", () => {
    const base = fixture("cache.nixos.org-hello-2.12.1.narinfo");
    fc.assert(
      fc.property(fc.nat({ max: base.length }), fc.nat({ max: base.length }), lineSafe, (from, len, insert) => {
        const text = base.slice(0, from) + insert + base.slice(from + len);
        try {
          const info = parseNarInfo(text);
          expect(parseNarInfo(formatNarInfo(info))).toEqual(info);
        } catch (e) {
          expect(e).toBeInstanceOf(NarInfoError);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe("referenceHashes", () => {
  const a = "0ij5rn2kk8w4b8hqqr7s8ljmv6dw7h0c-a";
  const b = "1ij5rn2kk8w4b8hqqr7s8ljmv6dw7h0c-b";
  const self = "2ij5rn2kk8w4b8hqqr7s8ljmv6dw7h0c-self";

  it("gives the hash parts of the references, in order, without the path's own, each once", () => {
    const references = [b, self, a, `${b.slice(0, 32)}-other-name`];
    expect(referenceHashes({ storePath: `/nix/store/${self}`, references })).toEqual([b.slice(0, 32), a.slice(0, 32)]);
    expect(referenceHashes({ storePath: `/nix/store/${self}`, references: [] })).toEqual([]);
  });

  it("gives the same hash parts for sorted references (as Nix writes them) as for any order", () => {
    const hash = fc.constantFrom(...["0", "1", "2"].map((c) => `${c}ij5rn2kk8w4b8hqqr7s8ljmv6dw7h0c`));
    const ref = fc.tuple(hash, fc.constantFrom("a", "b", "self", "a-1")).map(([h, n]) => `${h}-${n}`);
    fc.assert(
      fc.property(fc.uniqueArray(ref, { maxLength: 8 }), (references) => {
        const sorted = [...references].sort();
        const fromSorted = referenceHashes({ storePath: `/nix/store/${self}`, references: sorted });
        const expected = [...new Set(sorted.map((r) => r.slice(0, 32)))].filter((h) => h !== self.slice(0, 32));
        expect(fromSorted).toEqual(expected);
        expect(new Set(referenceHashes({ storePath: `/nix/store/${self}`, references: [...references] }))).toEqual(new Set(expected));
      }),
    );
  });

  it("answers for the narinfo asked about, even when another shares its references array", () => {
    const references = [a, b];
    expect(referenceHashes({ storePath: `/nix/store/${self}`, references })).toEqual([a.slice(0, 32), b.slice(0, 32)]);
    expect(referenceHashes({ storePath: `/nix/store/${a}`, references })).toEqual([b.slice(0, 32)]);
    expect(referenceHashes({ storePath: `/nix/store/${self}`, references })).toEqual([a.slice(0, 32), b.slice(0, 32)]);
  });
});
