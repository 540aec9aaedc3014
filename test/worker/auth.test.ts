// Token authentication: Bearer and Basic, several write tokens, optional read token.
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { matchingToken, presentedToken, tokenMatches } from "../../src/middleware/auth.ts";
import { toBase64, utf8 } from "../../src/nix/encoding.ts";
import { basic, bearer, call, callWith, NAR_VECTORS, putNar, testPath, TEST_SECOND_WRITE_TOKEN, TEST_WRITE_TOKEN } from "../helpers/worker.ts";

afterEach(() => reset());

describe("presentedToken", () => {
  it.each([
    ["Bearer abc", "abc"],
    ["bearer abc", "abc"],
    [`Basic ${toBase64(utf8("nix:s3cret"))}`, "s3cret"],
    [`Basic ${toBase64(utf8(":s3cret"))}`, "s3cret"],
    [`Basic ${toBase64(utf8("user:pa:ss"))}`, "pa:ss"],
  ])("%s → %s", (header, token) => {
    expect(presentedToken(header)).toBe(token);
  });

  it.each([
    [null],
    [""],
    ["Bearer"],
    ["Bearer "],
    ["Basic !!!"],
    ["Basic"],
    [`Basic ${toBase64(utf8("no-colon"))}`],
    [`Basic ${toBase64(utf8("user:"))}`],
    [`Basic ${toBase64(new Uint8Array([0x75, 0x3a, 0xff]))}`],
    ["Token abc"],
    ["Digest username=x"],
    ["Bearer a b"],
  ])("%o is no token", (header) => {
    expect(presentedToken(header)).toBeNull();
  });
});

describe("matchingToken", () => {
  it("names which token matched, or -1", async () => {
    expect(await matchingToken("b", ["a", "b", "c"])).toBe(1);
    expect(await matchingToken("c", ["a", "b", "c"])).toBe(2);
    expect(await matchingToken("a", ["a"])).toBe(0);
    expect(await matchingToken("x", ["a", "b"])).toBe(-1);
    expect(await matchingToken("a", [])).toBe(-1);
  });
});

describe("tokenMatches", () => {
  it("accepts any of the configured tokens and nothing else", async () => {
    expect(await tokenMatches("b", ["a", "b", "c"])).toBe(true);
    expect(await tokenMatches("a", ["a"])).toBe(true);
    expect(await tokenMatches("d", ["a", "b", "c"])).toBe(false);
    expect(await tokenMatches("a", [])).toBe(false);
    // Prefixes and extensions of a token are different tokens.
    expect(await tokenMatches("ab", ["abc"])).toBe(false);
    expect(await tokenMatches("abcd", ["abc"])).toBe(false);
  });
});

describe("writes", () => {
  it("accept WRITE_TOKEN and every WRITE_TOKEN_* as Bearer or Basic (any user name)", async () => {
    const p = await testPath("auth-write", { nar: NAR_VECTORS[1]!.bytes });
    for (const headers of [bearer(TEST_WRITE_TOKEN), bearer(TEST_SECOND_WRITE_TOKEN), basic(TEST_WRITE_TOKEN), basic(TEST_SECOND_WRITE_TOKEN, "ci")]) {
      const res = await putNar(p, headers);
      expect([201, 204]).toContain(res.status);
    }
  });

  it("refuse the read token", async () => {
    const p = await testPath("auth-read-token-write");
    const res = await callWith({ READ_TOKEN: "reader" }, `/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: bearer("reader") });
    expect(res.status).toBe(401);
  });

  it("answer 401 with a Basic challenge and a JSON reason", async () => {
    const p = await testPath("auth-none");
    const res = await call(`/nar/${p.fileName}`, { method: "PUT", body: p.file });
    expect(res.status).toBe(401);
    expect(res.headers.get("WWW-Authenticate")).toBe('Basic realm="nix-edge-cache", charset="UTF-8"');
    expect(((await res.json()) as { error: string }).error).toMatch(/token/);
  });

  it("stop accepting a WRITE_TOKEN_* once it is removed, while the others keep working", async () => {
    const p = await testPath("auth-revoked");
    const revoked = { WRITE_TOKEN_CI: undefined };
    const put = (token: string) => callWith(revoked, `/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: bearer(token) });
    expect((await put(TEST_SECOND_WRITE_TOKEN)).status).toBe(401);
    expect((await put(TEST_WRITE_TOKEN)).status).toBe(201);
  });
});

describe("reads", () => {
  it("are public without READ_TOKEN, whatever the Authorization header says", async () => {
    for (const headers of [{}, bearer("wrong"), { Authorization: "Basic !!!" }]) {
      const res = await call("/00000000000000000000000000000000.narinfo", { headers });
      expect(res.status).toBe(404);
    }
  });

  it("need READ_TOKEN or a write token when READ_TOKEN is set", async () => {
    const p = await testPath("auth-private-read");
    await putNar(p);
    const get = (headers: Record<string, string>) => callWith({ READ_TOKEN: "reader" }, `/nar/${p.fileName}`, { headers });
    expect((await get({})).status).toBe(401);
    expect((await get(bearer("wrong"))).status).toBe(401);
    expect((await get({ Authorization: "Basic !!!" })).status).toBe(401);
    const denied = await get({});
    expect(denied.headers.get("WWW-Authenticate")).toContain('realm="nix-edge-cache"');
    expect((await get(bearer("reader"))).status).toBe(200);
    expect((await get(basic("reader"))).status).toBe(200);
    expect((await get(basic(TEST_WRITE_TOKEN))).status).toBe(200);
  });

  it("of a private cache are marked private and absent objects stay 404 when authorised", async () => {
    const p = await testPath("auth-private-headers");
    await putNar(p);
    const res = await callWith({ READ_TOKEN: "reader" }, `/nar/${p.fileName}`, { headers: bearer("reader") });
    expect(res.headers.get("Cache-Control")).toMatch(/^private/);
    const missing = await callWith({ READ_TOKEN: "reader" }, "/00000000000000000000000000000000.narinfo", { headers: bearer("reader") });
    expect(missing.status).toBe(404);
  });
});
