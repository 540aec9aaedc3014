// The multipart storage module against the real local R2 and D1: the R2 errors and answers
// it relies on (pinned, since it maps their messages to 404/409/400 and its integrity rests
// on R2's checked, conditional put), the handle layout, slots and part rows in D1, a model
// of racing starts by two writers, the cleanup pass a cron calls to abort abandoned
// uploads, and its sweep of the R2 bookkeeping caches kept before D1 held it.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import worker from "../../src/index.ts";
import { MULTIPART_CLEANUP_EVERY_MINUTES } from "../../src/scheduled.ts";
import { multipartAssemblyKey, parseUploadSlotName, uploadSlotName } from "../../src/storage/keys.ts";
import { recordPart } from "../../src/storage/multipart-index.ts";
import {
  abortStaleUploads,
  discardUpload,
  handleOf,
  MAX_UPLOADS_PER_WRITER,
  MULTIPART_MAX_AGE_MS,
  parseHandle,
  readUpload,
  readUploadWithParts,
  receivePart,
  startUpload,
  type MultipartStores,
  type TrackedUpload,
} from "../../src/storage/multipart.ts";
import { layoutFor } from "../../src/ingest/part-layout.ts";
import { keys, resetAll } from "../helpers/worker.ts";

const MiB = 1024 * 1024;
const WRITER = "WRITE_TOKEN";

beforeEach(() => resetAll());

function narFile(i: number): string {
  // Any valid name will do: the storage module never reads NAR bytes before completion.
  return `${String(i).padStart(52, "0")}.nar.zst`;
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
}

const stores: MultipartStores = { bucket: env.CACHE, db: env.DB };

function start(i: number, size = 12 * MiB, writer = WRITER, now = Date.now()) {
  return startUpload(stores, writer, { nar: narFile(i), name: null }, layoutFor(size, 6 * MiB), now, () => true);
}

async function begin(i: number, size = 12 * MiB, writer = WRITER, now = Date.now()): Promise<TrackedUpload> {
  return (await start(i, size, writer, now)).upload;
}

interface Row {
  writer: string;
  slot: number;
  nar: string | null;
  upload_id: string;
  started: number;
}

/** Every upload row, by writer and slot. */
async function uploadRows(): Promise<Row[]> {
  return (await env.DB.prepare("SELECT writer, slot, nar, upload_id, started FROM multipart_uploads ORDER BY writer, slot").all<Row>()).results;
}

async function partRowCount(): Promise<number> {
  return (await env.DB.prepare("SELECT count(*) AS n FROM multipart_parts").first<{ n: number }>())!.n;
}

/** A part number no test sends: what r2HasUpload probes with. */
const PROBE_PART = 9999;

/** Whether R2 still has the upload (it takes a probe part of one byte; such an upload is never completed). */
async function r2HasUpload(u: TrackedUpload): Promise<boolean> {
  try {
    await env.CACHE.resumeMultipartUpload(multipartAssemblyKey(u), u.uploadId).uploadPart(PROBE_PART, new Uint8Array(1));
    return true;
  } catch (err) {
    if (/does not exist/.test(String(err))) return false;
    throw err;
  }
}

describe("local R2 answers the module relies on", { timeout: 30_000 }, () => {
  it("uploadPart on an aborted upload: does not exist (10024)", async () => {
    const up = await env.CACHE.createMultipartUpload("k");
    await up.abort();
    await expect(up.uploadPart(1, new Uint8Array(1))).rejects.toThrow(/does not exist\. \(10024\)/);
  });

  it("complete with an etag R2 does not have: could not be found (10025)", async () => {
    const up = await env.CACHE.createMultipartUpload("k");
    await expect(up.complete([{ partNumber: 1, etag: "nope" }])).rejects.toThrow(/could not be found\. \(10025\)/);
  });

  it("complete with a part under 5 MiB before the last: minimum allowed object size (10011)", async () => {
    const up = await env.CACHE.createMultipartUpload("k");
    const parts = [await up.uploadPart(1, new Uint8Array(100)), await up.uploadPart(2, new Uint8Array(100))];
    await expect(up.complete(parts)).rejects.toThrow(/minimum allowed object size\. \(10011\)/);
  });

  it("keeps a pending upload invisible until complete", async () => {
    const up = await env.CACHE.createMultipartUpload("k");
    await up.uploadPart(1, new Uint8Array(10));
    expect(await env.CACHE.head("k")).toBeNull();
    expect((await env.CACHE.list()).objects).toEqual([]);
  });

  it("a put checked against a sha256 and conditional on absence: stores only the right bytes, and never over an object", async () => {
    const bytes = new TextEncoder().encode("the assembled NAR");
    const sha = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
    const absent = { onlyIf: { etagDoesNotMatch: "*" } };
    await expect(env.CACHE.put("n", streamOf(new Uint8Array(bytes.length)), { sha256: sha, ...absent })).rejects.toThrow(/checksum.*\(10037\)/s);
    expect(await env.CACHE.head("n")).toBeNull();
    const first = await env.CACHE.put("n", bytes, { sha256: sha, ...absent });
    expect(first).not.toBeNull();
    expect(await env.CACHE.put("n", bytes, { sha256: sha, ...absent })).toBeNull();
    expect((await env.CACHE.head("n"))!.etag).toBe(first!.etag);
  });
});

describe("slot names and handles", () => {
  it("round-trip for any writer name, and a writer's prefix never starts another's", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), fc.string({ minLength: 1, maxLength: 40 }), fc.nat(MAX_UPLOADS_PER_WRITER - 1), (a, b, slot) => {
        const name = uploadSlotName({ writer: a, slot });
        expect(name).not.toMatch(/\//);
        expect(parseUploadSlotName(name)).toEqual({ writer: a, slot });
        if (a !== b) expect(name.startsWith(uploadSlotName({ writer: b, slot: 0 }).slice(0, -1))).toBe(false);
      }),
    );
  });

  it("handles name a writer's slot and R2's upload id; nothing else parses", async () => {
    const u = await begin(1);
    expect(handleOf(u)).toBe(`WRITE_TOKEN~0:${u.uploadId}`);
    expect(parseHandle(handleOf(u))).toEqual({ writer: WRITER, slot: 0, uploadId: u.uploadId });
    for (const bad of ["", ":", "WRITE_TOKEN~0:", "WRITE_TOKEN:x", "WRITE_TOKEN~01:x", `WRITE_TOKEN~${MAX_UPLOADS_PER_WRITER}:x`, "a/b~0:x", "WRITE_TOKEN~0:a b", "%zz~0:x"]) {
      expect(parseHandle(bad), bad).toBeNull();
    }
  });
});

describe("slots and part rows in D1", { timeout: 30_000 }, () => {
  it("records received parts with their sizes, readable by a later request; the bytes are only R2's pending upload", async () => {
    const upload = await begin(1);
    await receivePart(stores, upload, 2, streamOf(new Uint8Array(6 * MiB)), 6 * MiB);
    const again = await readUploadWithParts(env.DB, upload);
    expect(again!.upload).toEqual(upload);
    expect(again!.parts.map(({ partNumber, size }) => ({ partNumber, size }))).toEqual([{ partNumber: 2, size: 6 * MiB }]);
    expect(await keys()).toEqual([]);
  });

  it("records only parts of the layout: numbers 1..partCount, each of its size", async () => {
    const upload = await begin(1);
    for (const [n, size] of [[0, 6 * MiB], [3, 6 * MiB], [2, 6 * MiB - 1], [10_000, 1]] as const) {
      await expect(receivePart(stores, upload, n, streamOf(new Uint8Array(size)), size)).rejects.toThrow(/cannot have/);
    }
    expect(await partRowCount()).toBe(0);
    expect(await keys()).toEqual([]);
  });

  it("writes a part row only while its upload holds the slot, and never counts another upload's rows as its parts", async () => {
    const upload = await begin(1);
    await env.DB.prepare("INSERT INTO multipart_parts (writer, slot, upload_id, part_number, etag, size) VALUES (?1, ?2, 'an earlier one', 1, 'e', ?3)")
      .bind(WRITER, upload.slot, 6 * MiB)
      .run();
    expect((await readUploadWithParts(env.DB, upload))!.parts).toEqual([]);
    // A part that reaches R2 as its upload ends: R2 refuses it, and no row is written.
    await discardUpload(stores, upload);
    await expect(receivePart(stores, upload, 1, streamOf(new Uint8Array(6 * MiB)), 6 * MiB)).rejects.toThrow(/no longer exists/);
    expect(await recordPart(env.DB, upload, { partNumber: 1, size: 6 * MiB, etag: "late" })).toBe(false);
    expect(await partRowCount()).toBe(0);
    expect(await uploadRows()).toEqual([]);
  });

  it("gives each writer its own slots, the lowest free first, and each upload of a NAR once per writer", async () => {
    const a = await begin(1);
    const b = await begin(2);
    const c = await begin(1, 12 * MiB, "WRITE_TOKEN_CI");
    expect([a.slot, b.slot, c.slot]).toEqual([0, 1, 0]);
    expect(c.uploadId).not.toBe(a.uploadId);
    expect(await start(1)).toMatchObject({ resumed: true, upload: a });
    // The other writer's slot 0 is another upload: a handle names a writer's slot, never another's.
    expect(await readUpload(env.DB, { writer: "WRITE_TOKEN_CI", slot: 0 })).toEqual(c);
  });

  it("two starts of one NAR at the same moment end up with one upload", async () => {
    const [x, y] = await Promise.all([1, 2].map(() => start(1)));
    expect(x!.upload.uploadId).toBe(y!.upload.uploadId);
    expect((await uploadRows()).map((r) => [r.writer, r.slot, r.nar])).toEqual([[WRITER, 0, narFile(1)]]);
    expect(await r2HasUpload(x!.upload)).toBe(true);
  });

  it(`refuses a writer's upload beyond ${MAX_UPLOADS_PER_WRITER} (429), however many start at once`, async () => {
    const results = await Promise.allSettled(Array.from({ length: MAX_UPLOADS_PER_WRITER + 16 }, (_, i) => start(i, 1000)));
    const rows = await uploadRows();
    expect(rows.length).toBeLessThanOrEqual(MAX_UPLOADS_PER_WRITER);
    const ok = results.flatMap((r) => (r.status === "fulfilled" ? [r.value.upload] : []));
    expect(ok).toHaveLength(rows.length);
    expect(ok.map((u) => u.uploadId).sort()).toEqual(rows.map((r) => r.upload_id).sort());
    for (const r of results) if (r.status === "rejected") expect(String(r.reason)).toMatch(/multipart uploads in progress|started at the same moment/);
  });

  it("frees a slot only once its upload is gone from R2; the next upload there is another R2 upload", async () => {
    const a = await begin(1);
    await discardUpload(stores, a);
    expect(await uploadRows()).toEqual([]);
    expect(await r2HasUpload(a)).toBe(false);
    const b = await begin(2);
    expect(b.slot).toBe(a.slot);
    expect(b.uploadId).not.toBe(a.uploadId);
  });
});

describe("a model of two writers starting and aborting uploads at once", { timeout: 180_000 }, () => {
  const WRITERS = [WRITER, "WRITE_TOKEN_CI"] as const;
  type Op = { op: "start" | "discard"; who: 0 | 1; nar: number };
  // Starts of a few NARs race each other; starts of many fill a writer's slots to the bound.
  const op: fc.Arbitrary<Op> = fc.record({
    op: fc.constantFrom<"start" | "discard">("start", "start", "start", "start", "start", "discard"),
    who: fc.constantFrom<0 | 1>(0, 1),
    nar: fc.oneof(fc.nat(5), fc.nat(MAX_UPLOADS_PER_WRITER + 7)),
  });

  async function discardOf(o: Op): Promise<void> {
    const row = (await uploadRows()).find((r) => r.writer === WRITERS[o.who] && r.nar === narFile(o.nar));
    if (row === undefined) return;
    const upload = await readUpload(env.DB, row);
    if (upload !== null) await discardUpload(stores, upload);
  }

  it("racing starts never exceed the bound, each writer has one upload per NAR, and no writer's work touches another's uploads", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 80 }), { minLength: 1, maxLength: 4 }), async (waves) => {
        await resetAll();
        for (const wave of waves) {
          const before = await uploadRows();
          const results = await Promise.allSettled(wave.map((o) => (o.op === "start" ? start(o.nar, 1000, WRITERS[o.who]) : discardOf(o))));
          const after = await uploadRows();
          for (const [who, writer] of WRITERS.entries()) {
            const mine = after.filter((r) => r.writer === writer);
            const acted = wave.filter((o) => o.who === who);
            expect(mine.length).toBeLessThanOrEqual(MAX_UPLOADS_PER_WRITER);
            expect(mine.every((r) => r.slot >= 0 && r.slot < MAX_UPLOADS_PER_WRITER)).toBe(true);
            expect(new Set(mine.map((r) => r.nar)).size, "two uploads of one NAR by one writer").toBe(mine.length);
            // Nothing the other writer did changed this writer's uploads.
            if (acted.length === 0) expect(mine).toEqual(before.filter((r) => r.writer === writer));
            if (acted.some((o) => o.op === "discard")) continue;
            // Without aborts, uploads only accumulate: every earlier one is still there, and
            // a start is refused only at the bound (429) or when racing its own writer (409).
            for (const r of before.filter((b) => b.writer === writer)) expect(mine).toContainEqual(r);
            for (const [i, o] of wave.entries()) {
              if (o.who !== who) continue;
              const r = results[i]!;
              if (r.status === "fulfilled") {
                const u = (r.value as Awaited<ReturnType<typeof start>>).upload;
                expect(u.writer).toBe(writer);
                expect(mine).toContainEqual({ writer, slot: u.slot, nar: narFile(o.nar), upload_id: u.uploadId, started: u.started });
              } else if (/multipart uploads in progress/.test(String(r.reason))) {
                expect(mine).toHaveLength(MAX_UPLOADS_PER_WRITER);
              } else {
                expect(String(r.reason)).toMatch(/started at the same moment/);
              }
            }
          }
        }
      }),
      { numRuns: 10 },
    );
  });
});

describe("abortStaleUploads", { timeout: 60_000 }, () => {
  const later = () => Date.now() + MULTIPART_MAX_AGE_MS + 60_000;

  it("aborts uploads older than the max age, deletes their rows and parts, and nothing younger", async () => {
    const old = await begin(1);
    await receivePart(stores, old, 1, streamOf(new Uint8Array(6 * MiB)), 6 * MiB);
    expect(await abortStaleUploads(stores)).toMatchObject({ aborted: [], strays: 0, more: false });
    expect(await uploadRows()).toHaveLength(1);
    expect(await partRowCount()).toBe(1);

    // Seen from a day and a bit later.
    const pass = await abortStaleUploads(stores, { now: later() });
    expect(pass).toMatchObject({ aborted: [`WRITE_TOKEN nar/${narFile(1)}`], more: false });
    expect(await uploadRows()).toEqual([]);
    expect(await partRowCount()).toBe(0);
    expect(await keys()).toEqual([]);
    expect(await r2HasUpload(old)).toBe(false);
  });

  it("deletes the assembled object a completion that died left behind", async () => {
    const upload = await begin(1, 1000);
    const part = await receivePart(stores, upload, 1, streamOf(new Uint8Array(1000)), 1000);
    await env.CACHE.resumeMultipartUpload(multipartAssemblyKey(upload), upload.uploadId).complete([part]);
    expect(await keys()).toEqual([multipartAssemblyKey(upload)]);
    expect((await abortStaleUploads(stores, { now: later() })).aborted).toHaveLength(1);
    expect(await keys()).toEqual([]);
    expect(await uploadRows()).toEqual([]);
  });

  it("takes a named max age", async () => {
    await begin(1);
    await new Promise((r) => setTimeout(r, 20));
    expect((await abortStaleUploads(stores, { maxAgeMs: 1 })).aborted).toEqual([`WRITE_TOKEN nar/${narFile(1)}`]);
  });

  it("works through many uploads within its operation budget, oldest first", async () => {
    for (let i = 1; i <= 5; i++) await begin(i, 12 * MiB, WRITER, Date.now() + i);
    const first = await abortStaleUploads(stores, { now: later(), operations: 5 });
    // One D1 query, two aborts, one R2 delete of their assembled keys, one D1 batch.
    expect(first).toMatchObject({ aborted: [1, 2].map((i) => `WRITE_TOKEN nar/${narFile(i)}`), operations: 5, more: true });
    const second = await abortStaleUploads(stores, { now: later(), operations: 20 });
    expect(second).toMatchObject({ aborted: [3, 4, 5].map((i) => `WRITE_TOKEN nar/${narFile(i)}`), more: false });
    expect(await uploadRows()).toEqual([]);
    expect(await keys()).toEqual([]);
  });

  it("is one D1 query and no R2 call when nothing is stale, once the old bookkeeping is known to be gone", async () => {
    // The first pass of a cache looks once for R2 bookkeeping from before D1: one list, one note.
    expect(await abortStaleUploads(stores)).toEqual({ aborted: [], strays: 0, operations: 3, more: false });
    expect(await abortStaleUploads(stores)).toEqual({ aborted: [], strays: 0, operations: 1, more: false });
    await begin(1);
    expect(await abortStaleUploads(stores)).toEqual({ aborted: [], strays: 0, operations: 1, more: false });
  });

  it("leaves everything outside multipart/ alone", async () => {
    await env.CACHE.put(`nar/${narFile(1)}`, "nar");
    await env.CACHE.put("multipart-not-ours", "x");
    await begin(2);
    await abortStaleUploads(stores, { now: Date.now() + 2 * MULTIPART_MAX_AGE_MS });
    expect(await keys()).toEqual(["multipart-not-ours", `nar/${narFile(1)}`]);
  });
});

describe("the R2 bookkeeping of caches from before D1", { timeout: 60_000 }, () => {
  /** An upload recorded the old way: an R2 upload at the old key, its record and a part record. */
  async function legacyUpload(slot: number, nar: string): Promise<R2MultipartUpload> {
    const up = await env.CACHE.createMultipartUpload(`multipart/objects/WRITE_TOKEN~${slot}/assembled`);
    const part = await up.uploadPart(1, new Uint8Array(10));
    const started = String(Date.now());
    await env.CACHE.put(`multipart/uploads/WRITE_TOKEN~${slot}`, "", { customMetadata: { nar, uploadId: up.uploadId, size: "10", partSize: "10", partCount: "1", started } });
    await env.CACHE.put(`multipart/objects/WRITE_TOKEN~${slot}/part/00001`, "", { customMetadata: { uploadId: up.uploadId, etag: part.etag, size: "10" } });
    return up;
  }

  it("is aborted and deleted by the next cleanup pass, however young, and never resumed; uploads in D1 stay", async () => {
    const old = await legacyUpload(0, narFile(1));
    await env.CACHE.put("multipart/uploads/nonsense", "", { customMetadata: { nar: "x" } });
    // The layout before slots.
    await env.CACHE.put(`multipart/nar/${narFile(9)}/upload.json`, "{}");
    // A start of the same NAR begins a new upload in D1 (slot 0 there is free).
    const live = await begin(1);
    expect(live.slot).toBe(0);
    const pass = await abortStaleUploads(stores);
    expect(pass).toMatchObject({ aborted: [`WRITE_TOKEN nar/${narFile(1)}`], strays: 4, more: false });
    expect(await keys()).toEqual([]);
    await expect(old.uploadPart(2, new Uint8Array(1))).rejects.toThrow(/does not exist/);
    expect(await uploadRows()).toHaveLength(1);
    expect(await r2HasUpload(live)).toBe(true);
    // Noted as gone: the next pass asks R2 nothing.
    expect(await abortStaleUploads(stores)).toMatchObject({ operations: 1 });
  });

  it("goes a page at a time within the operation budget", async () => {
    for (let slot = 0; slot < 5; slot++) await legacyUpload(slot, narFile(slot));
    const first = await abortStaleUploads(stores, { operations: 6 });
    // One D1 query, one list, two aborts, one delete; no room for a third abort and the note.
    expect(first).toMatchObject({ aborted: [0, 1].map((i) => `WRITE_TOKEN nar/${narFile(i)}`), operations: 5, more: true });
    const second = await abortStaleUploads(stores, { operations: 20 });
    expect(second).toMatchObject({ aborted: [2, 3, 4].map((i) => `WRITE_TOKEN nar/${narFile(i)}`), more: false });
    expect(await keys()).toEqual([]);
  });
});

describe("the cron trigger", { timeout: 30_000 }, () => {
  const tickAt = (at: number, minute: number): number => {
    const d = new Date(at);
    d.setUTCMinutes(minute);
    return d.getTime();
  };

  it(`cleans up abandoned uploads at minutes that are multiples of ${MULTIPART_CLEANUP_EVERY_MINUTES}, and only then`, async () => {
    await begin(1);
    const dayLater = Date.now() + MULTIPART_MAX_AGE_MS + 2 * 60 * 60_000;
    for (const [minute, left] of [[5, 1], [MULTIPART_CLEANUP_EVERY_MINUTES + 1, 1], [2 * MULTIPART_CLEANUP_EVERY_MINUTES, 0]] as const) {
      const ctx = createExecutionContext();
      const controller = { scheduledTime: tickAt(dayLater, minute), cron: "* * * * *", noRetry() {} } as ScheduledController;
      await worker.scheduled!(controller, { ...env, GC_RETENTION_DAYS: "off" }, ctx);
      await waitOnExecutionContext(ctx);
      expect(await uploadRows(), `minute ${minute}`).toHaveLength(left);
    }
  });
});
