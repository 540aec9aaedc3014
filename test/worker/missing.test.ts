// POST /_api/v1/missing: one request tells a pusher which paths the cache lacks.
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { utf8 } from "../../src/nix/encoding.ts";
import { MAX_MISSING_BATCH } from "../../src/api/missing.ts";
import { basic, bearer, call, errorOf, push, testPath, TEST_WRITE_TOKEN } from "../helpers/worker.ts";

afterEach(() => reset());

function ask(body: unknown, headers: Record<string, string> = bearer()): Promise<Response> {
  return call("/_api/v1/missing", {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "Content-Type": "application/json", ...headers },
  });
}

async function hashOf(i: number): Promise<string> {
  return encodeNix32((await sha256(utf8(`h${i}`))).slice(0, 20));
}

describe("POST /_api/v1/missing", () => {
  it("lists the absent hashes in request order, each once", async () => {
    const a = await testPath("present-a");
    const b = await testPath("present-b");
    await push(a);
    await push(b);
    const x = await hashOf(1);
    const y = await hashOf(2);
    const res = await ask({ hashes: [x, a.hash, y, b.hash, x] });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
    expect(await res.json()).toEqual({ missing: [x, y], unchecked: [] });
  });

  it("counts a path whose NAR is stored but whose narinfo is not as missing", async () => {
    const p = await testPath("nar-only");
    await call(`/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: bearer() });
    expect(await (await ask({ hashes: [p.hash] })).json()).toEqual({ missing: [p.hash], unchecked: [] });
  });

  it(`answers a full batch of ${MAX_MISSING_BATCH}`, async () => {
    const hashes = await Promise.all(Array.from({ length: MAX_MISSING_BATCH }, (_, i) => hashOf(i)));
    const res = await ask({ hashes }, basic(TEST_WRITE_TOKEN));
    expect(res.status).toBe(200);
    expect(((await res.json()) as { missing: string[] }).missing).toEqual(hashes);
  });

  it("accepts an empty batch", async () => {
    expect(await (await ask({ hashes: [] })).json()).toEqual({ missing: [], unchecked: [] });
  });

  it(`refuses more than ${MAX_MISSING_BATCH} hashes (413)`, async () => {
    const hashes = await Promise.all(Array.from({ length: MAX_MISSING_BATCH + 1 }, (_, i) => hashOf(i)));
    const res = await ask({ hashes });
    expect(res.status).toBe(413);
    expect(await errorOf(res)).toMatch(/split/);
  });

  it.each([
    ["not JSON", "{hashes:"],
    ["an array", []],
    ["no hashes", {}],
    ["hashes not an array", { hashes: "abc" }],
    ["a number", { hashes: [42] }],
    ["a short hash", { hashes: ["0".repeat(31)] }],
    ["an e in a hash", { hashes: ["e".repeat(32)] }],
    ["an upper-case hash", { hashes: ["A".repeat(32)] }],
    ["a base name instead of a hash", { hashes: [`${"0".repeat(32)}-hello`] }],
  ])("refuses %s (400)", async (_label, body) => {
    expect((await ask(body)).status).toBe(400);
  });

  it("needs a write token", async () => {
    expect((await ask({ hashes: [] }, {})).status).toBe(401);
    expect((await ask({ hashes: [] }, bearer("wrong"))).status).toBe(401);
  });
});
