// sha256 hash strings: the nix32, hex, base64 and SRI forms Nix reads, and what it writes.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/nix/encoding.ts";
import { NixFormatError } from "../../src/nix/errors.ts";
import { formatSha256, normaliseSha256, parseSha256, sha256, toSri } from "../../src/nix/hash.ts";

// hello-2.12.1's NarHash in the four forms of PROTOCOL §8.1 (Nix 2.8 `nix hash to-base16/to-sri`).
const NIX32 = "sha256:1bkbsk4wkk92syg4s7wafy5cxrsprlinax35zgp54y9r0f7a44jz";
const HEX = "5f12a28e03397952eefb65746523cd57e7ce8a778a1f4d9ed722cdc9c9d46bae";
const SRI = "sha256-XxKijgM5eVLu+2V0ZSPNV+fOineKH02e1yLNycnUa64=";

describe("sha256", () => {
  it("hashes with WebCrypto", async () => {
    expect(toHex(await sha256(utf8("abc")))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(toHex(await sha256(new Uint8Array()))).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });
});

describe("hash strings", () => {
  it("parses nix32, hex (both cases), base64 and SRI to the same bytes", () => {
    const bytes = fromHex(HEX);
    expect(parseSha256(NIX32)).toEqual(bytes);
    expect(parseSha256(`sha256:${HEX}`)).toEqual(bytes);
    expect(parseSha256(`sha256:${HEX.toUpperCase()}`)).toEqual(bytes);
    expect(parseSha256(`sha256:${SRI.slice("sha256-".length)}`)).toEqual(bytes);
    expect(parseSha256(SRI)).toEqual(bytes);
  });
  it("formats nix32 and SRI", () => {
    const bytes = fromHex(HEX);
    expect(formatSha256(bytes)).toBe(NIX32);
    expect(toSri(bytes)).toBe(SRI);
  });
  it("normalises every accepted form to sha256:<nix32>", () => {
    for (const form of [NIX32, `sha256:${HEX}`, `sha256:${HEX.toUpperCase()}`, SRI, `sha256:${SRI.slice(7)}`]) {
      expect(normaliseSha256(form)).toBe(NIX32);
    }
  });
  it("rejects other algorithms, missing prefixes, wrong lengths and bad digits", () => {
    const bad = [
      "",
      NIX32.slice("sha256:".length),
      HEX,
      `sha1:${HEX}`,
      `SHA256:${HEX}`,
      `sha512:${HEX}`,
      `sha256:${HEX.slice(1)}`,
      `sha256:${HEX}00`,
      `sha256:${HEX.slice(1)}g`,
      "sha256:2mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
      `${NIX32} `,
      `sha256-${HEX}`,
      "sha256-XxKijgM5eVLu+2V0ZSPNV+fOineKH02e1yLNycnUa64",
      "sha256-XxKijgM5eVLu-2V0ZSPNV_fOineKH02e1yLNycnUa64=",
      "sha256:",
    ];
    for (const s of bad) expect(() => parseSha256(s), s).toThrow(NixFormatError);
  });
  it("refuses to format digests that are not 32 bytes", () => {
    expect(() => formatSha256(new Uint8Array(20))).toThrow(NixFormatError);
    expect(() => toSri(new Uint8Array(33))).toThrow(NixFormatError);
  });
  it("round-trips random digests through every form", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (b) => {
        expect(parseSha256(formatSha256(b))).toEqual(b);
        expect(parseSha256(toSri(b))).toEqual(b);
        expect(parseSha256(`sha256:${toHex(b)}`)).toEqual(b);
      }),
    );
  });
});
