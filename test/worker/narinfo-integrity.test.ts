// Regression tests for what a hostile write token tried against published narinfos: bloating
// a stored narinfo past what the Worker parses through signature merges (after which it was
// treated as replaceable and re-signed by the Worker), thousands of Sig lines, a different
// signature under a key name already stored, forged signatures under the Worker's own key
// name, and references that name a stored hash part with another name. Each runs against
// the real local R2 and checks that the bucket is unchanged after a refusal.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { toBase64 } from "../../src/nix/encoding.ts";
import { formatNarInfo, MAX_NARINFO_LENGTH, parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { verifyNarInfo } from "../../src/nix/signature.ts";
import { MAX_KEY_NAME_LENGTH, MAX_SIGNATURES } from "../../src/ingest/signatures.ts";
import {
  bearer,
  call,
  callWith,
  errorOf,
  OTHER_KEY,
  push,
  putNar,
  putNarInfo,
  signed,
  snapshot,
  TEST_KEY,
  TEST_KEY_TEXT,
  TEST_PUBLIC_KEY,
  TEST_PUBLIC_KEY_TEXT,
  TEST_SECOND_WRITE_TOKEN,
  testPath,
  type TestPath,
} from "../helpers/worker.ts";

afterEach(() => reset());

/** A well-formed Sig value by key `name` (64 bytes that are no valid signature). */
function fakeSig(name: string, fill = 7): string {
  return `${name}:${toBase64(new Uint8Array(64).fill(fill))}`;
}

/** The second write token, as a CI pipeline other than the honest writer would hold. */
const attacker = bearer(TEST_SECOND_WRITE_TOKEN);

async function storedInfo(p: TestPath): Promise<NarInfo> {
  return parseNarInfo(await (await call(`/${p.hash}.narinfo`)).text());
}

function putAs(overrides: Record<string, string>, p: TestPath, info: NarInfo, headers = attacker): Promise<Response> {
  return callWith(overrides, `/${p.hash}.narinfo`, { method: "PUT", body: formatNarInfo(info), headers });
}

describe("signature merges stay bounded", () => {
  it("a Sig with a key name of a million characters is refused (413); the stored narinfo stays, and replacing it stays a 409", async () => {
    const p = await testPath("bloat");
    await push(p, await signed(p.info));
    const before = await snapshot();
    const huge = fakeSig("k".repeat(1_040_000));
    for (let i = 0; i < 2; i++) {
      const res = await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: [huge] }), attacker);
      expect(res.status).toBe(413);
      expect(await errorOf(res)).toMatch(/key name/);
    }
    expect(await snapshot()).toEqual(before);
    // The replacement the bloat was meant to enable: another NAR, other hashes.
    const other = await testPath("bloat", { nar: (await testPath("something-else")).nar });
    expect((await putNar(other, attacker)).status).toBe(201);
    const afterNar = await snapshot();
    const res = await putAs({ SIGNING_KEY: TEST_KEY_TEXT }, p, other.info);
    expect(res.status).toBe(409);
    expect(await snapshot()).toEqual(afterNar);
    expect(formatNarInfo(await storedInfo(p))).toBe(formatNarInfo(await signed(p.info)));
  });

  it(`key names up to ${MAX_KEY_NAME_LENGTH} characters are merged`, async () => {
    const p = await testPath("long-name");
    await push(p);
    const sig = fakeSig("n".repeat(MAX_KEY_NAME_LENGTH));
    expect((await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: [sig] }), attacker)).status).toBe(204);
    expect((await storedInfo(p)).sigs).toEqual([sig]);
    const tooLong = fakeSig("n".repeat(MAX_KEY_NAME_LENGTH + 1));
    expect((await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: [tooLong] }), attacker)).status).toBe(413);
  });

  it("thousands of Sig lines are refused at once, and merges stop at the cap", async () => {
    const p = await testPath("many-sigs");
    await push(p);
    const before = await snapshot();
    const thousands = Array.from({ length: 5000 }, (_, i) => fakeSig(`key-${i}`));
    const res = await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: thousands }), attacker);
    expect(res.status).toBe(413);
    expect(await errorOf(res)).toMatch(new RegExp(`at most ${MAX_SIGNATURES}`));
    expect(await snapshot()).toEqual(before);

    // Merges in small steps fill the narinfo up to the cap and no further.
    const step = 5;
    let stored = 0;
    for (let i = 0; stored < MAX_SIGNATURES; i += step) {
      const sigs = Array.from({ length: Math.min(step, MAX_SIGNATURES - stored) }, (_, j) => fakeSig(`step-${i + j}`));
      expect((await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs }), attacker)).status).toBe(204);
      stored += sigs.length;
    }
    expect((await storedInfo(p)).sigs).toHaveLength(MAX_SIGNATURES);
    const full = await snapshot();
    expect((await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: [fakeSig("one-more")] }), attacker)).status).toBe(413);
    expect(await snapshot()).toEqual(full);
  });

  it("a different signature under a key name already stored is a 409, never a replacement", async () => {
    const p = await testPath("resign-other");
    const honest = await signed(p.info, TEST_KEY);
    await push(p, honest);
    const before = await snapshot();
    const res = await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: [fakeSig(TEST_KEY.name)] }), attacker);
    expect(res.status).toBe(409);
    expect(await errorOf(res)).toContain(TEST_KEY.name);
    expect(await snapshot()).toEqual(before);
    // Another key's signature is still added.
    expect((await putNarInfo(p.hash, formatNarInfo(await signed(p.info, OTHER_KEY)))).status).toBe(204);
    expect(await verifyNarInfo(await storedInfo(p), [TEST_PUBLIC_KEY])).toBe(true);
  });

  it("two signatures by one key name in one upload are refused (400)", async () => {
    const p = await testPath("twice");
    expect((await putNar(p)).status).toBe(201);
    const good = await signed(p.info);
    const res = await putNarInfo(p.hash, formatNarInfo({ ...p.info, sigs: [...good.sigs, fakeSig(TEST_KEY.name)] }));
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatch(/two signatures/);
  });

  it("with TRUSTED_PUBLIC_KEYS, a forged Sig under the trusted name next to a valid one is refused", async () => {
    const p = await testPath("trusted-twice");
    expect((await putNar(p)).status).toBe(201);
    const good = await signed(p.info);
    const res = await putAs({ TRUSTED_PUBLIC_KEYS: TEST_PUBLIC_KEY_TEXT }, p, { ...p.info, sigs: [fakeSig(TEST_KEY.name, 1), ...good.sigs] });
    expect(res.status).toBe(400);
  });

  it("the Worker alone signs with SIGNING_KEY's name: a forged Sig under it is replaced by the Worker's own", async () => {
    const p = await testPath("forged-own");
    expect((await putNar(p)).status).toBe(201);
    const res = await putAs({ SIGNING_KEY: TEST_KEY_TEXT }, p, { ...p.info, sigs: [fakeSig(TEST_KEY.name)] });
    expect(res.status).toBe(201);
    const stored = await storedInfo(p);
    expect(stored.sigs).toEqual((await signed(p.info)).sigs);
    // Re-pushing with the forged Sig again changes nothing.
    const before = await snapshot();
    expect((await putAs({ SIGNING_KEY: TEST_KEY_TEXT }, p, { ...p.info, sigs: [fakeSig(TEST_KEY.name, 9)] })).status).toBe(204);
    expect(await snapshot()).toEqual(before);
  });
});

describe("a stored narinfo this cache cannot read is never replaced", () => {
  it("an unparseable stored document answers 409 to a valid upload, even with SIGNING_KEY; nothing is signed or written", async () => {
    const p = await testPath("legacy");
    expect((await putNar(p)).status).toBe(201);
    // As another tool (or an older version) might have left it: over the parser's limit.
    const legacy = formatNarInfo(p.info).replace("NarHash:", `X-Padding: ${"x".repeat(MAX_NARINFO_LENGTH)}\nNarHash:`);
    await env.CACHE.put(`${p.hash}.narinfo`, legacy);
    const before = await snapshot();
    const res = await putAs({ SIGNING_KEY: TEST_KEY_TEXT }, p, p.info, bearer());
    expect(res.status).toBe(409);
    expect(await errorOf(res)).toMatch(/cannot be read/);
    expect(await snapshot()).toEqual(before);
    expect(await (await env.CACHE.get(`${p.hash}.narinfo`))!.text()).toBe(legacy);
  });
});

describe("references match by full store path", () => {
  it("a reference naming a stored hash part with another name is refused (422); the right name is accepted", async () => {
    const dep = await testPath("dep");
    await push(dep);
    const p = await testPath("user", { references: [dep] });
    expect((await putNar(p)).status).toBe(201);
    const wrong = `${dep.hash}-not-dep`;
    const before = await snapshot();
    const res = await putNarInfo(p.hash, formatNarInfo({ ...p.info, references: [wrong] }), attacker);
    expect(res.status).toBe(422);
    expect(await errorOf(res)).toContain(wrong);
    expect(await snapshot()).toEqual(before);
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(201);
  });

  it("narinfos stored without the Worker's metadata are matched by their StorePath", async () => {
    const dep = await testPath("bare-dep");
    expect((await putNar(dep)).status).toBe(201);
    await env.CACHE.put(`${dep.hash}.narinfo`, formatNarInfo(dep.info));
    const p = await testPath("bare-user", { references: [dep] });
    expect((await putNar(p)).status).toBe(201);
    expect((await putNarInfo(p.hash, formatNarInfo({ ...p.info, references: [`${dep.hash}-other`] }))).status).toBe(422);
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(201);
  });

  it("a self-reference with another name is not the path itself", async () => {
    const p = await testPath("selfish");
    expect((await putNar(p)).status).toBe(201);
    const res = await putNarInfo(p.hash, formatNarInfo({ ...p.info, references: [`${p.hash}-impostor`] }), attacker);
    expect(res.status).toBe(422);
  });
});

describe("a SIGNING_KEY whose halves do not belong together", () => {
  it("never signs: the upload answers 500 naming the setting and stores nothing; reads still work", async () => {
    const [name, b64] = [TEST_KEY_TEXT.slice(0, TEST_KEY_TEXT.indexOf(":")), TEST_KEY_TEXT.trim().slice(TEST_KEY_TEXT.indexOf(":") + 1)];
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    bytes[63]! ^= 1;
    const broken = `${name}:${toBase64(bytes)}`;
    const p = await testPath("broken-key");
    expect((await putNar(p)).status).toBe(201);
    const before = await snapshot();
    const res = await putAs({ SIGNING_KEY: broken }, p, p.info, bearer());
    expect(res.status).toBe(500);
    expect(await errorOf(res)).toMatch(/SIGNING_KEY/);
    expect(await snapshot()).toEqual(before);
    expect((await callWith({ SIGNING_KEY: broken }, "/nix-cache-info")).status).toBe(200);
  });
});
