// Byte encodings of the core: hex, strict base64, UTF-8 byte order, concatenation.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareBytes, concatBytes, fromBase64, fromHex, toBase64, toHex, utf8 } from "../../src/nix/encoding.ts";
import { NixFormatError } from "../../src/nix/errors.ts";

describe("hex", () => {
  it("encodes lower case and decodes either case", () => {
    expect(toHex(new Uint8Array([0, 1, 0xab, 0xff]))).toBe("0001abff");
    expect(fromHex("0001ABff")).toEqual(new Uint8Array([0, 1, 0xab, 0xff]));
  });
  it("rejects odd lengths and non-hex characters", () => {
    for (const bad of ["0", "abc", "0g", "zz", " 00", "0x00"]) expect(() => fromHex(bad)).toThrow(NixFormatError);
  });
  it("round-trips random bytes like Node's Buffer does", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (b) => {
        expect(toHex(b)).toBe(Buffer.from(b).toString("hex"));
        expect(fromHex(toHex(b))).toEqual(b);
      }),
    );
  });
});

describe("base64", () => {
  it("matches RFC 4648 test vectors", () => {
    const cases: Array<[string, string]> = [
      ["", ""], ["f", "Zg=="], ["fo", "Zm8="], ["foo", "Zm9v"], ["foob", "Zm9vYg=="], ["fooba", "Zm9vYmE="], ["foobar", "Zm9vYmFy"],
    ];
    for (const [plain, b64] of cases) {
      expect(toBase64(utf8(plain))).toBe(b64);
      expect(fromBase64(b64)).toEqual(utf8(plain));
    }
  });
  it("agrees with Node's Buffer on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (b) => {
        const expected = Buffer.from(b).toString("base64");
        expect(toBase64(b)).toBe(expected);
        expect(fromBase64(expected)).toEqual(b);
      }),
    );
  });
  it("rejects missing padding, bad characters, url-safe alphabet, whitespace and non-canonical bits", () => {
    for (const bad of ["Zg", "Zg=", "Zm8", "Zm9v\n", "Zm 9", "Zm-_", "Z===", "====", "Zg==Zg==", "Zh==", "Zm9=", "é123"]) {
      expect(() => fromBase64(bad), bad).toThrow(NixFormatError);
    }
  });
});

describe("compareBytes", () => {
  it("orders by unsigned bytes, shorter prefix first", () => {
    expect(compareBytes(new Uint8Array([1]), new Uint8Array([1, 0]))).toBeLessThan(0);
    expect(compareBytes(new Uint8Array([0x7f]), new Uint8Array([0x80]))).toBeLessThan(0);
    expect(compareBytes(new Uint8Array([2, 3]), new Uint8Array([2, 3]))).toBe(0);
    expect(compareBytes(new Uint8Array([0xff]), new Uint8Array([0x00, 0xff]))).toBeGreaterThan(0);
  });
  it("puts U+FF61 before U+1F600 (UTF-8 order), unlike JavaScript's string sort", () => {
    const names = ["\u{1F600}", "\uFF61"];
    expect([...names].sort()).toEqual(["\u{1F600}", "\uFF61"]);
    expect([...names].sort((a, b) => compareBytes(utf8(a), utf8(b)))).toEqual(["\uFF61", "\u{1F600}"]);
  });
  it("agrees with Buffer.compare", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 }), (a, b) => {
        expect(Math.sign(compareBytes(a, b))).toBe(Buffer.compare(a, b));
      }),
    );
  });
  it("reproduces the observed Nix 2.8 order of PROTOCOL §1.3", () => {
    const observed = ["1", "A", "B", "Z", "_", "a", "a-b", "a.b", "aa", "z", "~", "é"];
    const shuffled = [...observed].reverse();
    expect(shuffled.sort((a, b) => compareBytes(utf8(a), utf8(b)))).toEqual(observed);
  });
});

describe("concatBytes", () => {
  it("concatenates in order", () => {
    expect(concatBytes([new Uint8Array([1]), new Uint8Array(), new Uint8Array([2, 3])])).toEqual(new Uint8Array([1, 2, 3]));
    expect(concatBytes([])).toEqual(new Uint8Array());
  });
});
