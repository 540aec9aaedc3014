// Store path parsing with the strict 2.21+ rules of PROTOCOL §7 and the cases of §8.6.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  formatStorePath,
  isBaseNameList,
  isHashPart,
  isHashPartList,
  parseStorePath,
  parseStorePathBaseName,
  STORE_DIR,
  storePathBaseName,
} from "../../src/nix/store-path.ts";

const HASH = "v02pl5dhayp8jnz8ahdvg5vi71s8xc6g";

describe("store path validity (PROTOCOL §8.6, strict 2.21+ rules)", () => {
  const valid = [
    `${HASH}-hello-2.12.1`,
    `${HASH}-a?b=c+d_e.f`,
    `${HASH}-.hidden`,
    `${HASH}-...`,
    `${HASH}-..a`,
    `${HASH}-.a-b`,
    `${HASH}-${"a".repeat(211)}`,
    `${HASH}-x`,
    `${HASH}-hello-2.12.1.drv`,
  ];
  const invalid = [
    `${HASH}-.`,
    `${HASH}-..`,
    `${HASH}-.-x`,
    `${HASH}-..-x`,
    `${HASH}-`,
    `${HASH}-a b`,
    `${HASH}-a:b`,
    `${HASH}-é`,
    `${HASH}-a/b`,
    `${HASH}-a\r`,
    `${HASH}-${"a".repeat(212)}`,
    "v02pl5dhayp8jnz8ahdvg5vi71s8xc6-x",
    "v02pl5dhayp8jnz8ahdvg5vi71s8xc6e-x",
    "V02pl5dhayp8jnz8ahdvg5vi71s8xc6g-x",
    "v02pl5dhayp8jnz8ahdvg5vi71s8xc6gxhello",
    HASH,
    "",
  ];
  for (const base of valid) {
    it(`accepts ${base.length > 60 ? base.slice(0, 60) + "…" : base}`, () => {
      const p = parseStorePathBaseName(base);
      expect(p).not.toBeNull();
      expect(p!.hash).toBe(base.slice(0, 32));
      expect(p!.name).toBe(base.slice(33));
      expect(storePathBaseName(p!)).toBe(base);
    });
  }
  for (const base of invalid) {
    it(`rejects ${JSON.stringify(base.length > 60 ? base.slice(0, 60) + "…" : base)}`, () => {
      expect(parseStorePathBaseName(base)).toBeNull();
      expect(parseStorePath(`/nix/store/${base}`)).toBeNull();
    });
  }
});

describe("full store paths", () => {
  it("parses and formats /nix/store paths", () => {
    const full = `/nix/store/${HASH}-hello-2.12.1`;
    const p = parseStorePath(full);
    expect(p).toEqual({ hash: HASH, name: "hello-2.12.1" });
    expect(formatStorePath(p!)).toBe(full);
    expect(STORE_DIR).toBe("/nix/store");
  });
  it("honours another store directory", () => {
    const p = parseStorePath(`/gnu/store/${HASH}-x`, "/gnu/store");
    expect(p).toEqual({ hash: HASH, name: "x" });
    expect(formatStorePath(p!, "/gnu/store")).toBe(`/gnu/store/${HASH}-x`);
    expect(parseStorePath(`/gnu/store/${HASH}-x`)).toBeNull();
  });
  it("rejects other directories, sub-paths and relative forms", () => {
    for (const bad of [
      `/nix/store/${HASH}-x/bin/hello`,
      `/nix/store//${HASH}-x`,
      `nix/store/${HASH}-x`,
      `/nix/store/../store/${HASH}-x`,
      `/nix/storex/${HASH}-x`,
      `${HASH}-x`,
      `/nix/store/`,
    ]) {
      expect(parseStorePath(bad), bad).toBeNull();
    }
  });
});

describe("isHashPart", () => {
  it("accepts exactly 32 nix32 characters", () => {
    expect(isHashPart(HASH)).toBe(true);
    expect(isHashPart("0".repeat(32))).toBe(true);
    expect(isHashPart("z".repeat(32))).toBe(true);
    expect(isHashPart(HASH.slice(1))).toBe(false);
    expect(isHashPart(HASH + "0")).toBe(false);
    expect(isHashPart(HASH.replace("v", "e"))).toBe(false);
    expect(isHashPart(HASH.toUpperCase())).toBe(false);
    expect(isHashPart(`${HASH.slice(0, 31)}\n`)).toBe(false);
  });
});

describe("isBaseNameList (a narinfo's References in one check)", () => {
  const name = (n: string) => `${HASH}-${n}`;

  it("accepts valid names separated by single spaces and nothing else", () => {
    expect(isBaseNameList(name("a"))).toBe(true);
    expect(isBaseNameList(`${name("a")} ${name("b-1.0")} ${name("..a")}`)).toBe(true);
    for (const bad of ["", name("a") + " ", " " + name("a"), `${name("a")}  ${name("b")}`, `${name("a")} ${name(".")}`, `${name(".")} ${name("a")}`, `${name("..")} ${name("a")}`, `${name("a")} ${name("..-x")}`, `${name("a")} /nix/store/${name("b")}`, name("x".repeat(212))]) {
      expect(isBaseNameList(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(isBaseNameList(name("x".repeat(211)))).toBe(true);
  });

  it("agrees with parseStorePathBaseName name by name, on any list", () => {
    // Names drawn from near-misses: the rule's edge characters, dots, dashes, spaces,
    // lengths around the limit, hash parts with letters outside nix32.
    // Mostly valid pieces, so that lists with one bad name among valid ones are common.
    const piece = fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(".", "..", "-", "a", "Z", "9", "+", "=", "?", "_", "x".repeat(100)) },
      { weight: 1, arbitrary: fc.constantFrom(" ", "é", "/") },
    );
    const namePart = fc.array(piece, { minLength: 0, maxLength: 3 }).map((p) => p.join(""));
    const hash = fc.oneof({ weight: 12, arbitrary: fc.constant(HASH) }, { weight: 1, arbitrary: fc.constantFrom(HASH.slice(1), HASH.replace("v", "e"), HASH + "a") });
    const dash = fc.oneof({ weight: 12, arbitrary: fc.constant("-") }, { weight: 1, arbitrary: fc.constantFrom("", "_") });
    const base = fc.tuple(hash, dash, namePart).map(([h, d, n]) => `${h}${d}${n}`);
    fc.assert(
      fc.property(fc.array(base, { minLength: 1, maxLength: 5 }), (names) => {
        const list = names.join(" ");
        const expected = list.split(" ").every((n) => parseStorePathBaseName(n) !== null);
        expect(isBaseNameList(list)).toBe(expected);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("isHashPartList (references as the index answers them)", () => {
  it("accepts hash parts separated by single spaces, or nothing, and no other shape", () => {
    expect(isHashPartList("")).toBe(true);
    expect(isHashPartList(HASH)).toBe(true);
    expect(isHashPartList(`${HASH} ${HASH}`)).toBe(true);
    for (const bad of [` ${HASH}`, `${HASH} `, `${HASH}  ${HASH}`, `${HASH.slice(1)} ${HASH}0`, HASH.replace("v", "e"), `${HASH}${HASH}`]) {
      expect(isHashPartList(bad), JSON.stringify(bad)).toBe(false);
    }
  });

  it("agrees with isHashPart word by word, on any list", () => {
    // Words near a hash part: its length give or take one, letters outside nix32, spaces.
    const word = fc.oneof(
      { weight: 12, arbitrary: fc.constant(HASH) },
      { weight: 1, arbitrary: fc.constantFrom(HASH.slice(1), HASH + "a", HASH.replace("v", "e"), HASH.replace("v", " "), "", " ", HASH + " " + HASH.slice(1)) },
    );
    fc.assert(
      fc.property(fc.array(word, { minLength: 0, maxLength: 6 }), (words) => {
        const list = words.join(" ");
        const expected = list === "" || list.split(" ").every(isHashPart);
        expect(isHashPartList(list)).toBe(expected);
      }),
      { numRuns: 2000 },
    );
  });
});
