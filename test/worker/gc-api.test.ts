// The HTTP side of retention: POST /_api/v1/gc, pins, stats, the landing page, the upload
// gate (uploads refused while a collection is deleting what they need) and refreshes of
// push times by pushes that find paths already cached.
import { env } from "cloudflare:workers";
import { createExecutionContext, reset, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import worker from "../../src/index.ts";
import { MULTIPART_CLEANUP_EVERY_MINUTES } from "../../src/scheduled.ts";
import { adoptObjects } from "../../src/path-index/adoption.ts";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { formatFence } from "../../src/gc/fence.ts";
import { formatPins, MAX_PINS } from "../../src/gc/pins.ts";
import { listPins } from "../../src/storage/pins.ts";
import { parseState } from "../../src/gc/run-state.ts";
import { readGcDocument } from "../../src/storage/gc-documents.ts";
import { FENCE_KEY, PINS_KEY } from "../../src/storage/gc-store.ts";
import { narInfoKey } from "../../src/storage/keys.ts";
import { decodeNarInfoMeta, encodeNarInfoMeta } from "../../src/storage/narinfo-meta.ts";
import { putNarInfoObject } from "../../src/storage/narinfo-object.ts";
import { bearer, call, callWith, errorOf, ORIGIN, push, putNar, putNarInfo, snapshot, testPath, TEST_WRITE_TOKEN, type TestPath } from "../helpers/worker.ts";
import { DAY_MS, indexedPushTime, storePath } from "../helpers/gc.ts";

afterEach(() => reset());

const ADMIN = "test-admin-token";
const WITH_ADMIN = { ADMIN_TOKEN: ADMIN };

function admin(overrides: Partial<Record<string, string>>, path: string, init: RequestInit = {}, token = ADMIN): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${token}`);
  return callWith({ ...WITH_ADMIN, ...overrides }, path, { ...init, headers });
}

function gc(body: unknown, overrides: Partial<Record<string, string>> = {}, token = ADMIN): Promise<Response> {
  return admin(overrides, "/_api/v1/gc", { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) }, token);
}

/** The push time a refresh moves: the index's (the narinfo object keeps its own). */
function pushedAt(p: TestPath): Promise<number | null> {
  return indexedPushTime(p.hash);
}

/** Makes a pushed path's row say it was last pushed at `at`, as if pushed then. */
async function backdateRow(p: TestPath, at: number): Promise<void> {
  await env.DB.prepare("UPDATE paths SET pushed_at = ?2 WHERE hash = ?1").bind(p.hash, at).run();
}

describe("POST /_api/v1/gc", () => {
  it("needs ADMIN_TOKEN, which must be configured, and no other token will do", async () => {
    const unset = await call("/_api/v1/gc", { method: "POST", body: "{}", headers: bearer() });
    expect(unset.status).toBe(401);
    expect(await errorOf(unset)).toMatch(/ADMIN_TOKEN/);
    expect((await gc({}, {}, TEST_WRITE_TOKEN)).status).toBe(401);
    expect((await gc({}, {}, "wrong")).status).toBe(401);
    expect((await callWith(WITH_ADMIN, "/_api/v1/gc", { method: "POST", body: "{}" })).status).toBe(401);
  });

  it.each([
    ["not JSON", "{"],
    ["an array", "[]"],
    ["dryRun not a boolean", { dryRun: "yes" }],
    ["a negative age", { olderThanSeconds: -1 }],
    ["an age that is not a number", { olderThanSeconds: "1d" }],
    ["both an age and a date", { olderThanSeconds: 1, before: 1 }],
    ["a bad run id", { runId: "../state" }],
  ])("refuses %s (400)", async (_label, body) => {
    const before = await snapshot();
    const res = await gc(body);
    expect(res.status).toBe(400);
    expect(await snapshot()).toEqual(before);
  });

  it("runs a collection batch by batch until done, deleting paths older than the given age", async () => {
    const now = Date.now();
    const old = await testPath("gc-old");
    const fresh = await testPath("gc-fresh");
    await storePath(env.CACHE, old, now - 10 * DAY_MS);
    await storePath(env.CACHE, fresh, now - 1 * DAY_MS);
    // A one-second window: the batch after the fence waits, then the collection finishes.
    const settings = { ...WITH_ADMIN, GC_UPLOAD_WINDOW_SECONDS: "1", GC_NAR_GRACE_HOURS: "0" };
    let body = (await (await gc({ olderThanSeconds: 5 * 86400 }, settings)).json()) as {
      status: string;
      run: { id: string };
      waitMs: number;
      found: { paths: Array<{ path: string }> };
    };
    const id = body.run.id;
    const found: string[] = [];
    for (let i = 0; body.status !== "done" && i < 20; i++) {
      found.push(...body.found.paths.map((p) => p.path));
      if (body.status === "waiting") await new Promise((r) => setTimeout(r, body.waitMs));
      body = (await (await gc({ runId: id }, settings)).json()) as typeof body;
    }
    found.push(...body.found.paths.map((p) => p.path));
    expect(body.status).toBe("done");
    expect(found).toEqual([old.storePath]);
    expect(await env.CACHE.head(narInfoKey(old.hash))).toBeNull();
    expect(await env.CACHE.head(`nar/${old.fileName}`)).toBeNull();
    expect(await env.CACHE.head(narInfoKey(fresh.hash))).not.toBeNull();
    expect(await env.CACHE.head(FENCE_KEY)).toBeNull();
  });

  it("will not silently continue a collection with another age, nor abandon one that announced its deletions", async () => {
    const old = await testPath("gc-announced");
    await storePath(env.CACHE, old, Date.now() - 40 * DAY_MS);
    // The default one-minute window: the first batch starts the run, the second announces
    // and then waits.
    const started = (await (await gc({})).json()) as { status: string; run: { phase: string } };
    expect(started.status).toBe("running");
    const first = (await (await gc({})).json()) as { status: string; run: { phase: string } };
    expect(first.status).toBe("waiting");
    expect(first.run.phase).toBe("wait");
    const other = await gc({ olderThanSeconds: 3600 });
    expect(other.status).toBe(409);
    expect(await errorOf(other)).toMatch(/in progress/);
    const restart = await gc({ restart: true });
    expect(restart.status).toBe(409);
    expect(await errorOf(restart)).toMatch(/cannot be abandoned/);
    // While the fence is up, an upload that depends on the old path is refused.
    const user = await testPath("gc-user", { references: [old] });
    expect((await putNar(user)).status).toBe(201);
    const refused = await putNarInfo(user.hash, formatNarInfo(user.info));
    expect(refused.status).toBe(422);
    expect(await errorOf(refused)).toMatch(/being garbage-collected/);
    expect(await env.CACHE.head(narInfoKey(user.hash))).toBeNull();
  });
});

describe("the upload gate", () => {
  async function fence(paths: TestPath[], nars: TestPath[] = []): Promise<void> {
    const packed = (xs: string[]): string => [...xs].sort().join("");
    await env.CACHE.put(
      FENCE_KEY,
      formatFence({ runId: "t-1", announcedAt: Date.now(), paths: packed(paths.map((p) => p.hash)), nars: packed(nars.map((p) => p.fileName.slice(0, 52))) }),
    );
  }

  it("refuses a narinfo whose reference, own path or NAR is fenced, and stores nothing", async () => {
    const dep = await testPath("gate-dep");
    await push(dep);
    const user = await testPath("gate-user", { references: [dep] });
    expect((await putNar(user)).status).toBe(201);

    await fence([dep]);
    const before = await snapshot();
    let res = await putNarInfo(user.hash, formatNarInfo(user.info));
    expect(res.status).toBe(422);
    expect(await errorOf(res)).toContain(dep.baseName);

    await fence([user]);
    res = await putNarInfo(user.hash, formatNarInfo(user.info));
    expect(res.status).toBe(422);
    expect(await errorOf(res)).toContain(user.storePath);

    await fence([], [user]);
    res = await putNarInfo(user.hash, formatNarInfo(user.info));
    expect(res.status).toBe(422);
    expect(await errorOf(res)).toContain(user.info.url);
    expect((await snapshot()).filter((k) => !k.startsWith(FENCE_KEY))).toEqual(before.filter((k) => !k.startsWith(FENCE_KEY)));

    await env.CACHE.delete(FENCE_KEY);
    expect((await putNarInfo(user.hash, formatNarInfo(user.info))).status).toBe(201);
  });

  it("ignores a fence that does not parse (it fences nothing)", async () => {
    await env.CACHE.put(FENCE_KEY, "not a fence");
    const p = await testPath("gate-damaged");
    await push(p);
  });
});

describe("pins", () => {
  function pin(name: string, body: unknown, token = ADMIN): Promise<Response> {
    return admin({}, `/_api/v1/pins/${name}`, { method: "PUT", body: typeof body === "string" ? body : JSON.stringify(body) }, token);
  }

  it("are set, moved, listed and removed with the admin token; listed with a write token", async () => {
    const a = await testPath("pin-a");
    const b = await testPath("pin-b");
    await push(a);
    await push(b);
    let res = await pin("release", { path: a.storePath });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { path: string }).path).toBe(a.storePath);
    res = await pin("release", { path: b.storePath });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { previous: string }).previous).toBe(a.storePath);

    const listed = await callWith(WITH_ADMIN, "/_api/v1/pins", { headers: bearer(TEST_WRITE_TOKEN) });
    expect(listed.status).toBe(200);
    const pins = ((await listed.json()) as { pins: Record<string, { path: string; pinnedAt: number }> }).pins;
    expect(Object.keys(pins)).toEqual(["release"]);
    expect(pins.release!.path).toBe(b.storePath);

    expect((await admin({}, "/_api/v1/pins/release", { method: "DELETE" })).status).toBe(200);
    expect((await admin({}, "/_api/v1/pins/release", { method: "DELETE" })).status).toBe(404);
    expect((await listPins(env.DB)).size).toBe(0);
    // Every change is in the audit log, by the admin token.
    const audit = await env.DB.prepare("SELECT actor, action, subject FROM audit WHERE action IN ('pin', 'unpin') ORDER BY id").all();
    expect(audit.results).toEqual([
      { actor: "admin", action: "pin", subject: a.storePath },
      { actor: "admin", action: "pin", subject: b.storePath },
      { actor: "admin", action: "unpin", subject: b.storePath },
    ]);
  });

  it("refuse a new pin past MAX_PINS (413) but still move an existing one", async () => {
    const a = await testPath("pin-full-a");
    const b = await testPath("pin-full-b");
    await push(a);
    await push(b);
    await env.DB.batch(
      Array.from({ length: MAX_PINS }, (_, i) => env.DB.prepare("INSERT INTO pins (name, path, hash, pinned_at) VALUES (?1, ?2, ?3, 1)").bind(`p${i}`, a.storePath, a.hash)),
    );
    const full = await pin("one-more", { path: b.storePath });
    expect(full.status).toBe(413);
    expect(await errorOf(full)).toMatch(/already has 1000 pins/);
    expect((await pin("p7", { path: b.storePath })).status).toBe(200);
    expect((await listPins(env.DB)).get("p7")?.path).toBe(b.storePath);
    expect((await listPins(env.DB)).size).toBe(MAX_PINS);
  });

  it("move the pins document of a cache from before the pins table into it, once", async () => {
    const a = await testPath("pin-legacy-a");
    const b = await testPath("pin-legacy-b");
    await push(a);
    await push(b);
    await env.CACHE.put(PINS_KEY, formatPins(new Map([["old", { path: a.storePath, pinnedAt: 5 }], ["release", { path: a.storePath, pinnedAt: 6 }]])));
    // A pin set in the table already wins over the document's pin of the same name.
    await env.DB.prepare("INSERT INTO pins (name, path, hash, pinned_at) VALUES ('release', ?1, ?2, 7)").bind(b.storePath, b.hash).run();
    const listed = await callWith(WITH_ADMIN, "/_api/v1/pins", { headers: bearer(TEST_WRITE_TOKEN) });
    expect(((await listed.json()) as { pins: unknown }).pins).toEqual({ old: { path: a.storePath, pinnedAt: 5 }, release: { path: b.storePath, pinnedAt: 7 } });
    expect(await env.CACHE.head(PINS_KEY)).toBeNull();
  });

  it("answer 409 saying what to do while the pins document from before the table is damaged, and change nothing", async () => {
    const a = await testPath("pin-legacy-damaged");
    await push(a);
    await env.CACHE.put(PINS_KEY, "{not json");
    for (const res of [await callWith(WITH_ADMIN, "/_api/v1/pins", { headers: bearer(TEST_WRITE_TOKEN) }), await pin("x", { path: a.storePath })]) {
      expect(res.status).toBe(409);
      expect(await errorOf(res)).toMatch(/pins document .* is damaged: it is not JSON; repair it or delete it/);
    }
    expect((await listPins(env.DB)).size).toBe(0);
    expect(await (await env.CACHE.get(PINS_KEY))!.text()).toBe("{not json");
  });

  it("refuse write tokens for changes, unknown paths, bad names and bodies, and paths being collected", async () => {
    const a = await testPath("pin-refused");
    await push(a);
    expect((await pin("x", { path: a.storePath }, TEST_WRITE_TOKEN)).status).toBe(401);
    expect((await admin({}, "/_api/v1/pins/x", { method: "DELETE" }, TEST_WRITE_TOKEN)).status).toBe(401);
    expect((await callWith({}, "/_api/v1/pins", {})).status).toBe(401);
    const missing = await testPath("pin-missing");
    const notHere = await pin("x", { path: missing.storePath });
    expect(notHere.status).toBe(422);
    expect(await errorOf(notHere)).toMatch(/push it before pinning/);
    expect((await pin("-bad", { path: a.storePath })).status).toBe(400);
    expect((await pin("x", { path: "/tmp/not-a-store-path" })).status).toBe(400);
    expect((await pin("x", "{")).status).toBe(400);
    await env.CACHE.put(FENCE_KEY, formatFence({ runId: "t-1", announcedAt: Date.now(), paths: a.hash, nars: "" }));
    const fenced = await pin("x", { path: a.storePath });
    expect(fenced.status).toBe(422);
    expect(await errorOf(fenced)).toMatch(/being garbage-collected/);
    expect((await listPins(env.DB)).size).toBe(0);
  });
});

describe("GET /_api/v1/stats", () => {
  it("answers the index's paths and sizes from the first request on, and the collection's numbers after one", async () => {
    const stats = async () => (await (await call("/_api/v1/stats")).json()) as Record<string, unknown> & { lastGc: { deletedPaths: number } | null };
    expect(await stats()).toMatchObject({
      paths: 0,
      fileBytes: 0,
      savedBytes: 0,
      pathsWithoutSizes: 0,
      indexComplete: false,
      narFiles: null,
      narBytes: null,
      countedAt: null,
      lastGc: null,
      gcRunning: null,
    });
    const p = await testPath("stats-a", { compression: "gzip" });
    await push(p);
    const saved = Math.max(0, p.nar.length - p.file.length);
    expect(await stats()).toMatchObject({ paths: 1, fileBytes: p.file.length, savedBytes: saved, narFiles: null, lastGc: null });
    let body = (await (await gc({ dryRun: false })).json()) as { status: string; run: { id: string } };
    for (let i = 0; body.status !== "done" && i < 10; i++) body = (await (await gc({ runId: body.run.id })).json()) as typeof body;
    const after = await stats();
    expect(after).toMatchObject({ paths: 1, fileBytes: p.file.length, savedBytes: saved, narFiles: 1, narBytes: p.file.length });
    expect(after.countedAt).toEqual(expect.any(Number));
    expect(after.lastGc?.deletedPaths).toBe(0);
  });

  it("follows the read rule of a private cache", async () => {
    expect((await callWith({ READ_TOKEN: "r" }, "/_api/v1/stats")).status).toBe(401);
    expect((await callWith({ READ_TOKEN: "r" }, "/_api/v1/stats", { headers: bearer("r") })).status).toBe(200);
  });
});

describe("GET /", () => {
  it("serves the landing page with the request's origin and the cache's keys, loading nothing", async () => {
    const res = await callWith({ TRUSTED_PUBLIC_KEYS: "test-cache-1:j8nWbo1fsujfC0VmpxHXnIdBwOPmkyB8ZHAQd2lQ8vA=" }, "https://cache.example.org/");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("Content-Security-Policy")).toMatch(/default-src 'none'/);
    const html = await res.text();
    expect(html).toContain("extra-substituters = https://cache.example.org\n");
    expect(html).toContain("test-cache-1:j8nWbo1fsujfC0VmpxHXnIdBwOPmkyB8ZHAQd2lQ8vA=");
    expect(html).not.toMatch(/<(script|link|img)\b/);
    expect(html).not.toMatch(/\bsrc=|\bhref=/);
  });

  it("asks for the read token on a private cache", async () => {
    const res = await callWith({ READ_TOKEN: "r" }, `${ORIGIN}/`);
    expect(res.status).toBe(401);
    expect(res.headers.get("WWW-Authenticate")).toMatch(/^Basic/);
  });
});

describe("refreshing push times", () => {
  it("POST /_api/v1/missing refreshes the stale roots among the paths it finds, not what they reference", async () => {
    const dep = await testPath("refresh-dep");
    const top = await testPath("refresh-top", { references: [dep] });
    const old = Date.now() - 10 * DAY_MS;
    await storePath(env.CACHE, dep, old);
    await storePath(env.CACHE, top, old);
    const res = await call("/_api/v1/missing", { method: "POST", body: JSON.stringify({ hashes: [dep.hash, top.hash] }), headers: bearer() });
    expect(await res.json()).toEqual({ missing: [], unchecked: [] });
    expect(await pushedAt(top)).toBeGreaterThan(Date.now() - 60_000);
    expect(await pushedAt(dep)).toBe(old);
    // Only the index moves: the narinfo object is not rewritten.
    expect(decodeNarInfoMeta((await env.CACHE.head(narInfoKey(top.hash)))!.customMetadata)?.pushed).toBe(old);
  });

  it("a re-upload of an identical narinfo refreshes it when stale, and leaves its bytes alone", async () => {
    const p = await testPath("refresh-again");
    await push(p);
    const text = formatNarInfo(p.info);
    const old = Date.now() - 10 * DAY_MS;
    await putNarInfoObject(env.CACHE, narInfoKey(p.hash), text, encodeNarInfoMeta(p.info, old));
    await backdateRow(p, old);
    const etag = (await env.CACHE.head(narInfoKey(p.hash)))!.etag;
    expect((await putNarInfo(p.hash, text)).status).toBe(204);
    expect(await pushedAt(p)).toBeGreaterThan(Date.now() - 60_000);
    expect(await (await env.CACHE.get(narInfoKey(p.hash)))!.text()).toBe(text);
    expect((await env.CACHE.head(narInfoKey(p.hash)))!.etag).toBe(etag);
  });

  it("does nothing with retention off or at zero", async () => {
    const p = await testPath("refresh-off");
    const old = Date.now() - 10 * DAY_MS;
    await storePath(env.CACHE, p, old);
    for (const days of ["off", "0"]) {
      await callWith({ GC_RETENTION_DAYS: days }, "/_api/v1/missing", { method: "POST", body: JSON.stringify({ hashes: [p.hash] }), headers: bearer() });
      expect(await pushedAt(p)).toBe(old);
    }
  });
});

describe("the cron trigger", () => {
  it("starts a collection when one is due and then stays idle until the interval has passed", async () => {
    const p = await testPath("cron-old");
    await storePath(env.CACHE, p, Date.now() - 400 * DAY_MS);
    // The index is complete (until then every tick adopts a page of narinfos instead).
    expect((await adoptObjects(env.CACHE, env.DB)).complete).toBe(true);
    const ctx = createExecutionContext();
    // Any tick but those that clean up multipart uploads (minute 0 of ten) or adopt a page of
    // narinfos once the index is complete (scheduled.ts ADOPTION_MINUTE, 5) instead.
    const tick = new Date();
    tick.setUTCMinutes(3);
    expect(tick.getUTCMinutes() % MULTIPART_CLEANUP_EVERY_MINUTES).not.toBe(0);
    await worker.scheduled!({ scheduledTime: tick.getTime(), cron: "* * * * *", noRetry() {} } as ScheduledController, { ...env, GC_UPLOAD_WINDOW_SECONDS: "1" }, ctx);
    await waitOnExecutionContext(ctx);
    const state = parseState((await readGcDocument(env.DB, "state"))!.text);
    expect(state.lastStartedAt).not.toBeNull();
    expect(state.run?.trigger).toBe("cron");
    // The tick started the run; the next one goes on with it (to the fence wait here).
    expect(state.run?.phase).toBe("mark");
    const ctx2 = createExecutionContext();
    await worker.scheduled!({ scheduledTime: tick.getTime() + 60_000, cron: "* * * * *", noRetry() {} } as ScheduledController, { ...env, GC_UPLOAD_WINDOW_SECONDS: "1" }, ctx2);
    await waitOnExecutionContext(ctx2);
    const next = parseState((await readGcDocument(env.DB, "state"))!.text);
    expect(next.run?.id).toBe(state.run?.id);
    expect(next.run?.phase).toBe("wait");
  });
});
