// Pin names are keys of a map, never object properties: names that JavaScript objects
// inherit (`constructor`, `hasOwnProperty`, `toString`, …) are ordinary pin names (absent
// until set, then set, listed and removed like any other), and a pins document naming
// `__proto__` can neither smuggle in a pin nor change what the Worker reads. Against the
// real local R2 bucket, through the HTTP API.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatPins, parsePins } from "../../src/gc/pins.ts";
import { listPins } from "../../src/storage/pins.ts";
import { bearer, callWith, errorOf, push, snapshot, testPath, TEST_WRITE_TOKEN } from "../helpers/worker.ts";

afterEach(() => reset());

const ADMIN = "test-admin-token";

function admin(path: string, init: RequestInit = {}): Promise<Response> {
  return callWith({ ADMIN_TOKEN: ADMIN }, path, { ...init, headers: { ...bearer(ADMIN), ...(init.headers as Record<string, string>) } });
}

function pin(name: string, path: string): Promise<Response> {
  return admin(`/_api/v1/pins/${name}`, { method: "PUT", body: JSON.stringify({ path }) });
}

async function listed(): Promise<Record<string, { path: string; pinnedAt: number }>> {
  const res = await callWith({ ADMIN_TOKEN: ADMIN }, "/_api/v1/pins", { headers: bearer(TEST_WRITE_TOKEN) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { pins: Record<string, { path: string; pinnedAt: number }> }).pins;
}

/** The bucket's objects, the pins table and the audit log: what a refused change must leave alone. */
async function everything(): Promise<unknown> {
  const pins = await env.DB.prepare("SELECT * FROM pins ORDER BY name").all();
  const audit = await env.DB.prepare("SELECT * FROM audit ORDER BY id").all();
  return { objects: await snapshot(), pins: pins.results, audit: audit.results };
}

/** Names every plain JavaScript object answers to (inherited from Object.prototype). */
const INHERITED_NAMES = ["constructor", "hasOwnProperty", "toString", "valueOf", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString"];

describe("pin names that objects inherit", () => {
  it.each(INHERITED_NAMES)("DELETE %s without such a pin is a 404 and rewrites nothing", async (name) => {
    const a = await testPath("pin-names-other");
    await push(a);
    // Once with no pins document at all, once with a document holding another pin.
    const none = await everything();
    const first = await admin(`/_api/v1/pins/${name}`, { method: "DELETE" });
    expect(first.status).toBe(404);
    expect(await errorOf(first)).toMatch(new RegExp(`no pin named ${name}`));
    expect(await everything()).toEqual(none);

    expect((await pin("release", a.storePath)).status).toBe(201);
    const withOne = await everything();
    expect((await admin(`/_api/v1/pins/${name}`, { method: "DELETE" })).status).toBe(404);
    expect(await everything()).toEqual(withOne);
  });

  it.each(INHERITED_NAMES)("%s is created (201, not a move), listed, used by GC and deleted like any name", async (name) => {
    const a = await testPath(`pin-names-${name}`);
    const other = await testPath("pin-names-other");
    await push(a);
    await push(other);
    expect((await pin("release", other.storePath)).status).toBe(201);

    const created = await pin(name, a.storePath);
    expect(created.status).toBe(201);
    const body = (await created.json()) as { name: string; path: string; previous?: string };
    expect(body).toMatchObject({ name, path: a.storePath });
    expect(body.previous).toBeUndefined();

    const all = await listed();
    expect(Object.keys(all).sort()).toEqual([name, "release"].sort());
    expect(Object.hasOwn(all, name) && all[name]!.path).toBe(a.storePath);
    expect([...(await listPins(env.DB)).values()].map((p) => p.path).sort()).toEqual([a.storePath, other.storePath].sort());

    const moved = await pin(name, other.storePath);
    expect(moved.status).toBe(200);
    expect(((await moved.json()) as { previous: string }).previous).toBe(a.storePath);

    const removed = await admin(`/_api/v1/pins/${name}`, { method: "DELETE" });
    expect(removed.status).toBe(200);
    expect(await removed.json()).toMatchObject({ name, path: other.storePath });
    expect((await admin(`/_api/v1/pins/${name}`, { method: "DELETE" })).status).toBe(404);
    expect(Object.keys(await listed())).toEqual(["release"]);
  });

  it("refuses __proto__ as a name (400, it does not start with a letter or digit) and stores nothing", async () => {
    const a = await testPath("pin-names-proto");
    await push(a);
    const before = await everything();
    for (const path of ["/_api/v1/pins/__proto__", "/_api/v1/pins/%5F%5Fproto%5F%5F"]) {
      const res = await admin(path, { method: "PUT", body: JSON.stringify({ path: a.storePath }) });
      expect(res.status).toBe(400);
      expect((await admin(path, { method: "DELETE" })).status).toBe(400);
    }
    expect(await everything()).toEqual(before);
  });
});

describe("the pins document of caches from before the pins table", () => {
  const path = "/nix/store/00000000000000000000000000000000-x";

  it("keeps inherited-looking names as ordinary entries through a parse and format round trip", () => {
    const text = JSON.stringify({ pins: { constructor: { path, pinnedAt: 1 }, toString: { path, pinnedAt: 2 } } });
    const pins = parsePins(text);
    expect([...pins.keys()].sort()).toEqual(["constructor", "toString"]);
    expect(pins.get("constructor")).toEqual({ path, pinnedAt: 1 });
    expect(JSON.parse(formatPins(pins))).toEqual(JSON.parse(text));
    expect(pins.has("hasOwnProperty")).toBe(false);
  });

  it("cannot be confused by __proto__ keys, at the top or among the pins", () => {
    const nested = `{"pins": {"__proto__": {"path": "${path}", "pinnedAt": 1}, "ok": {"path": "${path}", "pinnedAt": 2}}}`;
    const pins = parsePins(nested);
    expect([...pins.keys()]).toEqual(["ok"]);
    expect(({} as Record<string, unknown>).path).toBeUndefined();

    // A document whose only `pins` is behind a __proto__ key has no pins.
    expect(parsePins(`{"__proto__": {"pins": {"x": {"path": "${path}", "pinnedAt": 1}}}}`).size).toBe(0);
    // Not an object of pins: no pins, not an error.
    expect(parsePins(`{"pins": []}`).size).toBe(0);
    expect(parsePins(`[]`).size).toBe(0);
  });

  it("formats names as JSON keys, so a name can never become a prototype", () => {
    const pins = new Map([["constructor", { path, pinnedAt: 1 }]]);
    expect(formatPins(pins)).toBe(`{"pins":{"constructor":{"path":"${path}","pinnedAt":1}}}`);
  });
});
