// The R2 storage module against the real local R2: what R2 throws for bad bodies (pinned,
// since the Worker maps those messages to 400s), conditional writes, batched HEADs.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { mapConcurrent } from "../../src/concurrency.ts";
import { AppError } from "../../src/errors.ts";
import { toHex, utf8 } from "../../src/nix/encoding.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { existsMany, putObject, putStream } from "../../src/storage/bucket.ts";
import { keys } from "../helpers/worker.ts";

afterEach(() => reset());

function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(c);
      controller.close();
    },
  });
}

async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AppError) return e;
    throw e;
  }
  throw new Error("expected a failure");
}

describe("local R2", () => {
  it("rejects a put whose sha256 does not match with the message the Worker recognises", async () => {
    await expect(env.CACHE.put("x", utf8("hello"), { sha256: "00".repeat(32) })).rejects.toThrow(/SHA-256 checksum you specified did not match/);
    expect(await env.CACHE.head("x")).toBeNull();
  });
});

describe("putStream", () => {
  const body = utf8("a body of 25 bytes here!\n");

  it("stores a body of exactly its length whose sha256 matches", async () => {
    await putStream(env.CACHE, "ok", streamOf(body.slice(0, 10), body.slice(10)), { length: body.length, sha256Hex: toHex(await sha256(body)), contentType: "application/x-nix-nar" });
    const obj = await env.CACHE.get("ok");
    expect(new Uint8Array(await obj!.arrayBuffer())).toEqual(body);
    expect(obj!.httpMetadata?.contentType).toBe("application/x-nix-nar");
  });

  it("turns a sha256 mismatch into a 400 and stores nothing", async () => {
    const err = await failure(putStream(env.CACHE, "bad", streamOf(body), { length: body.length, sha256Hex: "00".repeat(32), contentType: "x" }));
    expect(err.kind).toBe("bad_request");
    expect(err.message).toMatch(/sha256/);
    expect(await keys()).toEqual([]);
  });

  it("turns a short body into a 400 and stores nothing", async () => {
    const err = await failure(putStream(env.CACHE, "short", streamOf(body.slice(0, 5)), { length: body.length, contentType: "x" }));
    expect(err.kind).toBe("bad_request");
    expect(err.message).toMatch(/Content-Length/);
    expect(await keys()).toEqual([]);
  });

  it("turns a long body into a 400 and, for a key that was absent, leaves nothing behind", async () => {
    const err = await failure(putStream(env.CACHE, "long", streamOf(body, body), { length: body.length, contentType: "x", absentBefore: true }));
    expect(err.kind).toBe("bad_request");
    expect(await keys()).toEqual([]);
  });

  it("with onlyIfAbsent, leaves a stored object alone and says so (a large body does not hang)", async () => {
    const digest = toHex(await sha256(body));
    expect(await putStream(env.CACHE, "once", streamOf(body), { length: body.length, sha256Hex: digest, contentType: "x", onlyIfAbsent: true })).toBe(true);
    const first = await env.CACHE.head("once");
    const big = new Uint8Array(8 * 1024 * 1024);
    const chunks = Array.from({ length: 128 }, (_, i) => big.subarray(i * 65536, (i + 1) * 65536));
    expect(await putStream(env.CACHE, "once", streamOf(...chunks), { length: big.length, contentType: "x", onlyIfAbsent: true })).toBe(false);
    expect((await env.CACHE.head("once"))?.etag).toBe(first!.etag);
  });

  it("stores an empty body when the length is 0", async () => {
    await putStream(env.CACHE, "empty", null, { length: 0, contentType: "x" });
    expect((await env.CACHE.head("empty"))?.size).toBe(0);
  });
});

describe("putObject", () => {
  it("writes only if absent, or only over the etag that was read, and changes nothing when the condition fails", async () => {
    expect(await putObject(env.CACHE, "d", "one", {}, { ifAbsent: true })).not.toBeNull();
    expect(await putObject(env.CACHE, "d", "two", {}, { ifAbsent: true })).toBeNull();
    const etag = (await env.CACHE.head("d"))!.etag;
    expect(await putObject(env.CACHE, "d", "three", {}, { ifEtag: "0123456789abcdef0123456789abcdef" })).toBeNull();
    expect(await (await env.CACHE.get("d"))!.text()).toBe("one");
    const written = await putObject(env.CACHE, "d", "four", { customMetadata: { k: "v" } }, { ifEtag: etag });
    expect(written?.etag).not.toBe(etag);
    const stored = (await env.CACHE.get("d"))!;
    expect([await stored.text(), stored.customMetadata]).toEqual(["four", { k: "v" }]);
    // Unconditional by default.
    expect(await putObject(env.CACHE, "d", "five")).not.toBeNull();
  });
});

describe("existsMany", () => {
  it("answers per key, in order", async () => {
    await env.CACHE.put("b", "x");
    await env.CACHE.put("d", "x");
    expect(await existsMany(env.CACHE, ["a", "b", "c", "d", "b"])).toEqual([false, true, false, true, true]);
  });
});

describe("mapConcurrent", () => {
  it("keeps order and never runs more than the limit at once", async () => {
    let running = 0;
    let peak = 0;
    const out = await mapConcurrent([5, 1, 4, 2, 3, 0, 6, 7], 3, async (n) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, n));
      running--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30, 0, 60, 70]);
    expect(peak).toBe(3);
  });

  it("rejects with the first error and starts nothing after it", async () => {
    const started: number[] = [];
    await expect(
      mapConcurrent([1, 2, 3, 4, 5], 1, async (n) => {
        started.push(n);
        if (n === 2) throw new Error("boom");
        return n;
      }),
    ).rejects.toThrow("boom");
    expect(started).toEqual([1, 2]);
  });
});
