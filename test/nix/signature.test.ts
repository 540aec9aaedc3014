// Keys, fingerprints and signatures: vectors.json keys and signatures, the cache.nixos.org hello-2.12.1
// narinfo and its negative controls, and verification that never throws.
import { verifyAsync } from "@noble/ed25519";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromBase64, toBase64, toHex, utf8 } from "../../src/nix/encoding.ts";
import { KeyError, NarInfoError } from "../../src/nix/errors.ts";
import { parseSha256, toSri } from "../../src/nix/hash.ts";
import { formatNarInfo, type NarInfo, parseNarInfo } from "../../src/nix/narinfo.ts";
import { sha512Sync } from "../../src/nix/sha512.ts";
import {
  fingerprint,
  formatPublicKey,
  formatSecretKey,
  generateKeyPair,
  parsePublicKey,
  parseSecretKey,
  parseSignature,
  publicKeyOf,
  signNarInfo,
  verifyNarInfo,
  withSignature,
} from "../../src/nix/signature.ts";
import { narinfoFixtures, vectors } from "./fixtures.ts";

const fixture = (name: string): string => narinfoFixtures().find(([f]) => f === name)![1];
const CACHE_NIXOS_ORG = parsePublicKey("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=");
const TEST_SECRET = parseSecretKey(vectors.keys.secretKey);
const TEST_PUBLIC = parsePublicKey(vectors.keys.publicKey);
// snix's test key pair (PROTOCOL §8.3).
const SNIX_SECRET = "cache.example.com-1:cCta2MEsRNuYCgWYyeRXLyfoFpKhQJKn8gLMeXWAb7vIpRKKo/3JoxJ24OYa3DxT2JVV38KjK/1ywHWuMe2JEw==";
const SNIX_PUBLIC = "cache.example.com-1:yKUSiqP9yaMSduDmGtw8U9iVVd/Coyv9csB1rjHtiRM=";

describe("keys (PROTOCOL §8.3, vectors.json keys)", () => {
  it("parses the test secret key into seed and public key", () => {
    expect(TEST_SECRET.name).toBe("test-key");
    expect(toHex(TEST_SECRET.seed)).toBe("b54eed4ef2dc49c7fca66cff793574044b4b991b0fa597ca69171dd2708dfa9c");
    expect(toHex(TEST_SECRET.publicKey)).toBe("ac0593c749e83ad7fbb6a1cee620e7b07ee018d55d41897df686899368327627");
  });
  it("derives the public key Nix 2.8 derives (secret → public)", () => {
    expect(formatPublicKey(publicKeyOf(TEST_SECRET))).toBe(vectors.keys.publicKey);
    expect(formatPublicKey(publicKeyOf(parseSecretKey(SNIX_SECRET)))).toBe(SNIX_PUBLIC);
  });
  it("formats keys back to the same strings", () => {
    expect(formatSecretKey(TEST_SECRET)).toBe(vectors.keys.secretKey);
    expect(formatSecretKey(parseSecretKey(SNIX_SECRET))).toBe(SNIX_SECRET);
    expect(formatPublicKey(TEST_PUBLIC)).toBe(vectors.keys.publicKey);
  });
  it("parses the cache.nixos.org public key", () => {
    expect(CACHE_NIXOS_ORG.name).toBe("cache.nixos.org-1");
    expect(toHex(CACHE_NIXOS_ORG.key)).toBe("e8d087743e7d5f8df5a34816ca96ccac051191b275e993cc4051aca5c0d28636");
  });
  it("ignores a key file's trailing newline", () => {
    expect(parsePublicKey(vectors.keys.publicKey + "\n")).toEqual(TEST_PUBLIC);
    expect(parseSecretKey(vectors.keys.secretKey + "\n").seed).toEqual(TEST_SECRET.seed);
  });
  it("rejects a secret key whose public half does not belong to the seed", () => {
    const bytes = fromBase64(vectors.keys.secretKey.slice("test-key:".length));
    bytes.set(CACHE_NIXOS_ORG.key, 32);
    expect(() => parseSecretKey(`test-key:${toBase64(bytes)}`)).toThrow(KeyError);
    const flipped = fromBase64(vectors.keys.secretKey.slice("test-key:".length));
    flipped[0]! ^= 1;
    expect(() => parseSecretKey(`test-key:${toBase64(flipped)}`)).toThrow(KeyError);
  });
  it("leaves that check to signing when asked, which then refuses to sign", async () => {
    const bytes = fromBase64(vectors.keys.secretKey.slice("test-key:".length));
    bytes.set(CACHE_NIXOS_ORG.key, 32);
    const mismatched = parseSecretKey(`test-key:${toBase64(bytes)}`, { checkPublicHalf: false });
    const info = parseNarInfo(fixture("nix-2.8-d-zstd.narinfo"));
    await expect(signNarInfo(info, mismatched)).rejects.toThrow(KeyError);
    // The same key, whole, signs exactly what the checked parse signs.
    const unchecked = parseSecretKey(vectors.keys.secretKey, { checkPublicHalf: false });
    expect(await signNarInfo(info, unchecked)).toBe(await signNarInfo(info, TEST_SECRET));
  });
  it("rejects malformed keys with KeyError", () => {
    const pub64 = toBase64(new Uint8Array(32));
    for (const bad of [
      "",
      "test-key",
      `:${pub64}`,
      `test key:${pub64}`,
      "test-key:not base64",
      `test-key:${toBase64(new Uint8Array(31))}`,
      `test-key:${toBase64(new Uint8Array(64))}`,
      `test-key:${pub64.slice(0, -1)}`,
    ]) {
      expect(() => parsePublicKey(bad), bad).toThrow(KeyError);
    }
    for (const bad of ["", "test-key", `:${toBase64(new Uint8Array(64))}`, vectors.keys.publicKey, `k:${toBase64(new Uint8Array(65))}`]) {
      expect(() => parseSecretKey(bad), bad).toThrow(KeyError);
    }
  });
  it("generates key pairs that parse back, sign and verify", async () => {
    const sk = await generateKeyPair("my-cache.example.org-1");
    expect(sk.seed).toHaveLength(32);
    const reparsed = parseSecretKey(formatSecretKey(sk));
    expect(reparsed).toEqual(sk);
    const info = parseNarInfo(fixture("nix-2.8-d-zstd.narinfo"));
    const signed = withSignature({ ...info, sigs: [] }, await signNarInfo(info, sk));
    expect(await verifyNarInfo(signed, [publicKeyOf(sk)])).toBe(true);
    expect(await verifyNarInfo(signed, [TEST_PUBLIC])).toBe(false);
    const other = await generateKeyPair("my-cache.example.org-1");
    expect(other.seed).not.toEqual(sk.seed);
  });
  it("refuses key names that Nix tooling would mangle", async () => {
    for (const name of ["", "a:b", "a b", "é", "a\n"]) await expect(generateKeyPair(name), name).rejects.toThrow(KeyError);
  });
});

describe("synchronous SHA-512 used for key derivation", () => {
  it("matches FIPS 180-4 'abc' and node:crypto for lengths around block boundaries", () => {
    expect(toHex(sha512Sync(utf8("abc")))).toBe(
      "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    );
    for (const n of [0, 1, 55, 111, 112, 113, 127, 128, 129, 239, 240, 256, 1000]) {
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 255);
      expect(toHex(sha512Sync(data)), `length ${n}`).toBe(createHash("sha512").update(data).digest("hex"));
    }
  });
  it("matches node:crypto on random data", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (data) => {
        expect(toHex(sha512Sync(data))).toBe(createHash("sha512").update(data).digest("hex"));
      }),
      { numRuns: 50 },
    );
  });
});

describe("fingerprints and signatures (vectors.json signatures, PROTOCOL §8.4)", () => {
  it("has the four vectors", () => expect(vectors.signatures).toHaveLength(4));
  vectors.signatures.forEach((v, i) => {
    const info = { storePath: v.storePath, narHash: v.narHash, narSize: v.narSize, references: v.references, sigs: [v.sig] };
    it(`${"ABCD"[i]}: fingerprint is exact`, () => expect(fingerprint(info)).toBe(v.fingerprint));
    it(`${"ABCD"[i]}: signature verifies with ${v.publicKey.split(":")[0]}`, async () => {
      expect(v.verifies).toBe(true);
      expect(await verifyNarInfo(info, [parsePublicKey(v.publicKey)])).toBe(true);
    });
    if (v.reproducedByNodeSigner) {
      it(`${"ABCD"[i]}: re-signing with the test secret key reproduces the Sig byte for byte`, async () => {
        expect(await signNarInfo(info, TEST_SECRET)).toBe(v.sig);
      });
    }
  });
  it("the fingerprint re-encodes NarHash to nix32 and sorts references", () => {
    const v = vectors.signatures[0]!;
    const bytes = parseSha256(v.narHash);
    for (const narHash of [toSri(bytes), `sha256:${toHex(bytes)}`]) {
      expect(fingerprint({ ...v, narHash, references: [...v.references].reverse() })).toBe(v.fingerprint);
    }
  });
  it("sorts references by their UTF-8 bytes, as Nix does, whatever the characters", () => {
    // Names outside Nix's rules, to pin the order where JavaScript's (UTF-16) differs:
    // U+FF21 sorts before U+1F600 by bytes (EF BC A1 < F0 9F 98 80) but after it in UTF-16.
    const v = vectors.signatures[0]!;
    const refs = fc.array(fc.oneof(fc.constantFrom("a", "b", "\u{ff21}", "\u{1f600}", "\u00e9", "~"), fc.string({ unit: "grapheme", maxLength: 3 })), { maxLength: 6 });
    fc.assert(
      fc.property(refs, (references) => {
        const expected = references
          .map((r) => `/nix/store/${r}`)
          .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
          .join(",");
        expect(fingerprint({ ...v, references }).endsWith(`;${v.narSize};${expected}`)).toBe(true);
      }),
    );
    expect(fingerprint({ ...v, references: ["\u{1f600}", "\u{ff21}"] }).endsWith(";/nix/store/\u{ff21},/nix/store/\u{1f600}")).toBe(true);
  });
  it("uses the given store directory for references", () => {
    const v = vectors.signatures[3]!;
    expect(fingerprint(v, "/gnu/store")).toBe(v.fingerprint.replace(";/nix/store/8ahf", ";/gnu/store/8ahf"));
  });
  it("refuses to fingerprint NarSize 0 or a bad NarHash", () => {
    const v = vectors.signatures[1]!;
    expect(() => fingerprint({ ...v, narSize: 0 })).toThrow(NarInfoError);
    expect(() => fingerprint({ ...v, narHash: "sha256:xyz" })).toThrow(NarInfoError);
  });
});

describe("the cache.nixos.org hello-2.12.1 narinfo", () => {
  const text = fixture("cache.nixos.org-hello-2.12.1.narinfo");
  const info = parseNarInfo(text);
  const sig = parseSignature(info.sigs[0]!);

  it("verifies with cache.nixos.org-1", async () => {
    expect(await verifyNarInfo(info, [CACHE_NIXOS_ORG])).toBe(true);
    expect(await verifyNarInfo(info, [TEST_PUBLIC, CACHE_NIXOS_ORG])).toBe(true);
  });
  it("does not verify without the cache.nixos.org key", async () => {
    expect(await verifyNarInfo(info, [])).toBe(false);
    expect(await verifyNarInfo(info, [TEST_PUBLIC])).toBe(false);
    // Right name, wrong key.
    expect(await verifyNarInfo(info, [{ name: "cache.nixos.org-1", key: TEST_PUBLIC.key }])).toBe(false);
  });
  it("fails with NarSize changed to 226505", async () => {
    const changed = parseNarInfo(text.replace("NarSize: 226504", "NarSize: 226505"));
    expect(await verifyNarInfo(changed, [CACHE_NIXOS_ORG])).toBe(false);
  });
  it("fails when the signed fingerprint lists the references in reverse order", async () => {
    const [a, b] = vectors.signatures[0]!.fingerprint.split(";")[4]!.split(",");
    const reversed = vectors.signatures[0]!.fingerprint.replace(`${a},${b}`, `${b},${a}`);
    expect(reversed).not.toBe(vectors.signatures[0]!.fingerprint);
    expect(await verifyAsync(sig.sig, utf8(reversed), CACHE_NIXOS_ORG.key)).toBe(false);
    // A References line in reverse order still verifies: Nix keeps references in a sorted
    // set and sorts them into the fingerprint, and so does fingerprint().
    const reversedLine = parseNarInfo(text.replace(/References: (\S+) (\S+)/, "References: $2 $1"));
    expect(reversedLine.references[0]).toBe("v02pl5dhayp8jnz8ahdvg5vi71s8xc6g-hello-2.12.1");
    expect(await verifyNarInfo(reversedLine, [CACHE_NIXOS_ORG])).toBe(true);
  });
  it("fails when the fingerprint uses base names instead of full paths", async () => {
    const baseNames = vectors.signatures[0]!.fingerprint.replaceAll(",/nix/store/", ",").replace(";/nix/store/76l4", ";76l4");
    expect(await verifyAsync(sig.sig, utf8(baseNames), CACHE_NIXOS_ORG.key)).toBe(false);
  });
  it("fails when a reference is dropped or changed", async () => {
    expect(await verifyNarInfo({ ...info, references: info.references.slice(0, 1) }, [CACHE_NIXOS_ORG])).toBe(false);
    expect(await verifyNarInfo({ ...info, storePath: info.storePath.replace("2.12.1", "2.12.2") }, [CACHE_NIXOS_ORG])).toBe(false);
  });
  it("fails for every single flipped byte of the signature (all 64 positions)", async () => {
    for (let i = 0; i < 64; i++) {
      for (const mask of [0x01, 0x80]) {
        const bytes = sig.sig.slice();
        bytes[i]! ^= mask;
        const flipped = { ...info, sigs: [`cache.nixos.org-1:${toBase64(bytes)}`] };
        expect(await verifyNarInfo(flipped, [CACHE_NIXOS_ORG]), `byte ${i} mask ${mask}`).toBe(false);
      }
    }
  });
  it("unsigned fields (URL, Compression, FileHash, FileSize, Deriver) do not matter", async () => {
    const changed: NarInfo = { ...info, url: "nar/x.nar", compression: "none", fileHash: undefined, fileSize: undefined, deriver: undefined };
    delete changed.fileHash;
    delete changed.fileSize;
    delete changed.deriver;
    expect(await verifyNarInfo(parseNarInfo(formatNarInfo(changed)), [CACHE_NIXOS_ORG])).toBe(true);
  });
});

describe("verifyNarInfo robustness", () => {
  const d = parseNarInfo(fixture("nix-2.8-d-zstd.narinfo"));
  const valid = d.sigs[0]!;
  it("skips malformed and untrusted signatures and still finds a valid one", async () => {
    const sigs = [
      "garbage",
      ":AAAA",
      "test-key:not*base64",
      `test-key:${toBase64(new Uint8Array(63))}`,
      `test-key:${toBase64(new Uint8Array(64))}`,
      `test-key:${toBase64(new Uint8Array(64).fill(0xff))}`,
      `other-key:${valid.slice("test-key:".length)}`,
      valid,
    ];
    expect(await verifyNarInfo({ ...d, sigs }, [TEST_PUBLIC])).toBe(true);
    expect(await verifyNarInfo({ ...d, sigs: sigs.slice(0, -1) }, [TEST_PUBLIC])).toBe(false);
  });
  it("never throws, even for malformed keys or narinfo values", async () => {
    const badKey = { name: "test-key", key: new Uint8Array(32).fill(0xff) };
    expect(await verifyNarInfo(d, [badKey])).toBe(false);
    expect(await verifyNarInfo(d, [{ name: "test-key", key: new Uint8Array(3) }])).toBe(false);
    expect(await verifyNarInfo({ ...d, narSize: 0 }, [TEST_PUBLIC])).toBe(false);
    expect(await verifyNarInfo({ ...d, narHash: "md5:x" }, [TEST_PUBLIC])).toBe(false);
  });
  it("accepts the key among several with the same name", async () => {
    expect(await verifyNarInfo(d, [{ name: "test-key", key: CACHE_NIXOS_ORG.key }, TEST_PUBLIC])).toBe(true);
  });
  it("verifies a narinfo with two signatures with either key", async () => {
    const two = parseNarInfo(fixture("two-sigs-d-zstd.narinfo"));
    expect(await verifyNarInfo(two, [TEST_PUBLIC])).toBe(true);
    expect(await verifyNarInfo(two, [parsePublicKey(SNIX_PUBLIC)])).toBe(true);
    expect(await verifyNarInfo(two, [CACHE_NIXOS_ORG])).toBe(false);
  });
});

describe("withSignature", () => {
  const d = parseNarInfo(fixture("nix-2.8-d-zstd.narinfo"));
  it("adds a signature in Nix's sorted order and reproduces Nix's two-Sig narinfo", async () => {
    const snixSig = await signNarInfo(d, parseSecretKey(SNIX_SECRET));
    const both = withSignature(d, snixSig);
    expect(both.sigs).toEqual([snixSig, d.sigs[0]]);
    expect(formatNarInfo(both)).toBe(fixture("two-sigs-d-zstd.narinfo"));
    expect(d.sigs).toHaveLength(1); // input untouched
  });
  it("does not add a signature twice", () => {
    expect(withSignature(d, d.sigs[0]!).sigs).toEqual(d.sigs);
  });
  it("refuses malformed signatures", () => {
    for (const bad of ["garbage", "k:AAAA", `:${toBase64(new Uint8Array(64))}`]) expect(() => withSignature(d, bad)).toThrow(NarInfoError);
  });
});
