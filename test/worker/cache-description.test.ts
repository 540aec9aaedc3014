// GET /_api/v1/cache: the cache describing itself to the uploader (src/api/cache-description.ts):
// its keys, privacy, clock and limit, and what the presented token may do; public, never
// cached, and parsed by the same function the uploader uses.
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { CACHE_DESCRIPTION_PATH, CacheDescriptionError, parseCacheDescription } from "../../src/api/cache-description.ts";
import { basic, bearer, call, callWith, TEST_PUBLIC_KEY_TEXT, TEST_KEY_TEXT, OTHER_PUBLIC_KEY_TEXT, TEST_SECOND_WRITE_TOKEN, TEST_WRITE_TOKEN } from "../helpers/worker.ts";

afterEach(() => reset());

const PATH = `/${CACHE_DESCRIPTION_PATH}`;

async function describeWith(overrides: Partial<Record<string, string>>, headers: Record<string, string> = {}) {
  const res = await callWith(overrides, PATH, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get("Cache-Control")).toBe("private, no-store");
  return parseCacheDescription(await res.json());
}

describe("GET /_api/v1/cache", () => {
  it("describes a public cache to an anonymous client: keys, priority, clock, limit, read-only access", async () => {
    const before = Date.now();
    const d = await describeWith({ SIGNING_KEY: TEST_KEY_TEXT, TRUSTED_PUBLIC_KEYS: `${OTHER_PUBLIC_KEY_TEXT} ${TEST_PUBLIC_KEY_TEXT}`, PRIORITY: "41" });
    expect(d).toMatchObject({ service: "nix-edge-cache", apiVersion: 1, storeDir: "/nix/store", priority: 41, private: false, maxRequestBytes: 100 * 1024 * 1024 });
    // The Worker's own key first, then the uploaders' keys, each once.
    expect(d.publicKeys).toEqual([TEST_PUBLIC_KEY_TEXT, OTHER_PUBLIC_KEY_TEXT]);
    expect(d.access).toEqual({ read: true, write: false, admin: false });
    expect(d.time).toBeGreaterThanOrEqual(before - 1000);
    expect(d.time).toBeLessThanOrEqual(Date.now() + 1000);
  });

  it("says what the presented token may do, by Bearer or Basic", async () => {
    const vars = { READ_TOKEN: "read-secret", ADMIN_TOKEN: "admin-secret" };
    expect((await describeWith(vars)).access).toEqual({ read: false, write: false, admin: false });
    expect((await describeWith(vars)).private).toBe(true);
    expect((await describeWith(vars, bearer("read-secret"))).access).toEqual({ read: true, write: false, admin: false });
    expect((await describeWith(vars, bearer(TEST_WRITE_TOKEN))).access).toEqual({ read: true, write: true, admin: false });
    expect((await describeWith(vars, basic(TEST_SECOND_WRITE_TOKEN))).access).toEqual({ read: true, write: true, admin: false });
    expect((await describeWith(vars, bearer("admin-secret"))).access).toEqual({ read: false, write: false, admin: true });
    expect((await describeWith(vars, bearer("wrong"))).access).toEqual({ read: false, write: false, admin: false });
    expect((await describeWith(vars, { Authorization: "Basic !!!" })).access).toEqual({ read: false, write: false, admin: false });
  });

  it("has no keys when the Worker neither signs nor checks signatures", async () => {
    expect((await describeWith({})).publicKeys).toEqual([]);
  });

  it("fails like every route when the settings are wrong", async () => {
    const res = await callWith({ PRIORITY: "high" }, PATH);
    expect(res.status).toBe(500);
    expect(await res.text()).toContain("PRIORITY");
  });

  it("answers GET only (a POST is a 404)", async () => {
    expect((await call(PATH, { method: "POST" })).status).toBe(404);
  });
});

describe("parseCacheDescription", () => {
  const good = { service: "nix-edge-cache", apiVersion: 1, storeDir: "/nix/store", priority: 50, publicKeys: [TEST_PUBLIC_KEY_TEXT], private: false, time: 1, maxRequestBytes: 5, access: { read: true, write: false, admin: false } };
  it.each([
    [null, "(document)"],
    [{ ...good, service: "attic" }, "service"],
    [{ ...good, priority: "50" }, "priority"],
    [{ ...good, storeDir: "nix/store" }, "storeDir"],
    [{ ...good, publicKeys: ["nokey"] }, "publicKeys"],
    [{ ...good, private: 0 }, "private"],
    [{ ...good, access: { read: true, write: "yes", admin: false } }, "access.write"],
    [{ ...good, access: undefined }, "access"],
  ])("%o is refused naming %s", (doc, field) => {
    try {
      parseCacheDescription(doc);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CacheDescriptionError);
      expect((err as CacheDescriptionError).field).toBe(field);
    }
  });
  it("keeps a good document and ignores fields it does not know", () => {
    expect(parseCacheDescription({ ...good, future: 1 })).toEqual(good);
  });
});
