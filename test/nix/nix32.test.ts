// nix32: every vector of vectors.json both ways, PROTOCOL §8.1 rejections, round-trip properties.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromHex } from "../../src/nix/encoding.ts";
import { NixFormatError } from "../../src/nix/errors.ts";
import { decodeNix32, encodeNix32, NIX32_ALPHABET, nix32Length } from "../../src/nix/nix32.ts";
import { vectors } from "./fixtures.ts";

describe("nix32 vectors (vectors.json)", () => {
  it("has the 14 rows", () => expect(vectors.nix32).toHaveLength(14));
  for (const row of vectors.nix32) {
    it(`${row.label}: encodes and decodes`, () => {
      const bytes = fromHex(row.hex);
      expect(encodeNix32(bytes)).toBe(row.nix32);
      expect(decodeNix32(row.nix32, bytes.length)).toEqual(bytes);
    });
  }
});

describe("nix32 vectors only in PROTOCOL §8.1", () => {
  it("sha512 of the NIST 448-bit message (64 bytes → 103 chars)", async () => {
    const msg = new TextEncoder().encode("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", msg));
    const expected =
      "12k9jiq29iyqm03swfsgiw5mlqs173qazm3n7daz43infy12pyrcdf30fkk3qwv4yl2ick8yipc2mqnlh48xsvvxl60lbx8vp38yji0";
    expect(encodeNix32(digest)).toBe(expected);
    expect(decodeNix32(expected, 64)).toEqual(digest);
  });
  it("sha256 of SMASH THE STATE", async () => {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("SMASH THE STATE")));
    expect(encodeNix32(digest)).toBe("0d9n3r2i4m1zgy0wpqbsyabsfzgs952066bfp8gwvcg4mkr4r5g8");
  });
});

describe("nix32 rejections (PROTOCOL §8.1)", () => {
  const rejected: Array<[string, number, string]> = [
    ["2mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", 32, "sha256 with the high bits set"],
    ["z".repeat(52), 32, "52 z: high bits set"],
    ["zz", 1, "bits beyond the byte"],
    ["c0", 1, "bits beyond the byte"],
    ["0", 1, "too short"],
    ["0zz", 1, "too long"],
    ["", 1, "empty"],
    ["0e", 1, "e is not in the alphabet"],
    ["0o", 1, "o is not in the alphabet"],
    ["0t", 1, "t is not in the alphabet"],
    ["0u", 1, "u is not in the alphabet"],
    ["0Z", 1, "upper case"],
    ["V02pl5dhayp8jnz8ahdvg5vi71s8xc6g", 20, "upper case in a hash part"],
    ["0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7é", 32, "non-ASCII"],
  ];
  for (const [s, n, why] of rejected) {
    it(`rejects ${JSON.stringify(s)} as ${n} bytes (${why})`, () => {
      expect(() => decodeNix32(s, n)).toThrow(NixFormatError);
    });
  }
  it("accepts 0z as the single byte 0x1f", () => expect(decodeNix32("0z", 1)).toEqual(new Uint8Array([0x1f])));
  it("accepts any 32 alphabet characters as 20 bytes", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...NIX32_ALPHABET), minLength: 32, maxLength: 32 }), (s) => {
        expect(encodeNix32(decodeNix32(s, 20))).toBe(s);
      }),
    );
  });
});

describe("nix32 properties", () => {
  it("output lengths are ceil(8n/5)", () => {
    expect([0, 1, 20, 32, 64].map(nix32Length)).toEqual([0, 2, 32, 52, 103]);
    expect(encodeNix32(new Uint8Array())).toBe("");
  });
  for (const n of [20, 32, 64]) {
    it(`round-trips random ${n}-byte arrays`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ minLength: n, maxLength: n }), (b) => {
          const s = encodeNix32(b);
          expect(s).toHaveLength(nix32Length(n));
          expect(decodeNix32(s, n)).toEqual(b);
        }),
      );
    });
  }
  it("round-trips random lengths", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        expect(decodeNix32(encodeNix32(b), b.length)).toEqual(b);
      }),
    );
  });
  it("never throws anything but NixFormatError when decoding arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), fc.integer({ min: 0, max: 40 }), (s, n) => {
        try {
          const b = decodeNix32(s, n);
          expect(encodeNix32(b)).toBe(s);
        } catch (e) {
          expect(e).toBeInstanceOf(NixFormatError);
        }
      }),
    );
  });
  it("sorts by the last bytes of the hash (little-endian integer, most significant digit first)", () => {
    const a = new Uint8Array(20);
    const b = new Uint8Array(20);
    a[0] = 0xff; // low byte big
    b[19] = 0x01; // high byte set
    expect(encodeNix32(a) < encodeNix32(b)).toBe(true);
  });
});
