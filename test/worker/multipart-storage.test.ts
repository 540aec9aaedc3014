// The multipart storage module against the real local R2: the R2 errors and answers it
// relies on (pinned, since it maps their messages to 404/409/400 and its integrity rests on
// R2's checked, conditional put), the key and handle layout, slots, and the cleanup pass a
// cron calls to abort abandoned uploads.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import worker from "../../src/index.ts";
import { MULTIPART_CLEANUP_EVERY_MINUTES } from "../../src/scheduled.ts";
import { multipartPartKey, multipartUploadKey, parseUploadSlotName, uploadSlotName } from "../../src/storage/keys.ts";
import {
  abortStaleUploads,
  handleOf,
  MAX_UPLOADS_PER_WRITER,
  MULTIPART_MAX_AGE_MS,
  parseHandle,
  readUpload,
  receivePart,
  recordedParts,
  startUpload,
  type TrackedUpload,
} from "../../src/storage/multipart.ts";
import { layoutFor } from "../../src/upload/part-layout.ts";
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

async function begin(i: number, size = 12 * MiB, writer = WRITER): Promise<TrackedUpload> {
  return (await startUpload(env.CACHE, writer, narFile(i), layoutFor(size, 6 * MiB), Date.now(), () => true)).upload;
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

describe("slots and part bookkeeping", { timeout: 30_000 }, () => {
  it("records received parts with their sizes, readable by a later request", async () => {
    const upload = await begin(1);
    await receivePart(env.CACHE, upload, 2, streamOf(new Uint8Array(6 * MiB)), 6 * MiB);
    const again = await readUpload(env.CACHE, upload);
    expect(again).toEqual(upload);
    expect((await recordedParts(env.CACHE, again!)).map(({ partNumber, size }) => ({ partNumber, size }))).toEqual([{ partNumber: 2, size: 6 * MiB }]);
  });

  it("records only parts of the layout: numbers 1..partCount, each of its size", async () => {
    const upload = await begin(1);
    for (const [n, size] of [[0, 6 * MiB], [3, 6 * MiB], [2, 6 * MiB - 1], [10_000, 1]] as const) {
      await expect(receivePart(env.CACHE, upload, n, streamOf(new Uint8Array(size)), size)).rejects.toThrow(/cannot have/);
    }
    expect(await keys()).toEqual([multipartUploadKey(upload)]);
  });

  it("ignores part records of another upload that used the slot before", async () => {
    const upload = await begin(1);
    await env.CACHE.put(multipartPartKey(upload, 1), "", { customMetadata: { uploadId: "an earlier one", etag: "e", size: String(6 * MiB) } });
    expect(await recordedParts(env.CACHE, upload)).toEqual([]);
  });

  it("gives each writer its own slots, the lowest free first, and each upload of a NAR once per writer", async () => {
    const a = await begin(1);
    const b = await begin(2);
    const c = await begin(1, 12 * MiB, "WRITE_TOKEN_CI");
    expect([a.slot, b.slot, c.slot]).toEqual([0, 1, 0]);
    expect(c.uploadId).not.toBe(a.uploadId);
    const again = await startUpload(env.CACHE, WRITER, narFile(1), layoutFor(12 * MiB, 6 * MiB), Date.now(), () => true);
    expect(again).toMatchObject({ resumed: true, upload: a });
  });

  it("two starts of one NAR at the same moment end up with one upload", async () => {
    const layout = layoutFor(12 * MiB, 6 * MiB);
    const [x, y] = await Promise.all([1, 2].map(() => startUpload(env.CACHE, WRITER, narFile(1), layout, Date.now(), () => true)));
    expect(x!.upload.uploadId).toBe(y!.upload.uploadId);
    expect(await keys()).toEqual(["multipart/uploads/WRITE_TOKEN~0"]);
  });

  it(`refuses a writer's upload beyond ${MAX_UPLOADS_PER_WRITER} (429), however many start at once`, async () => {
    const layout = layoutFor(1000, 6 * MiB);
    const results = await Promise.allSettled(
      Array.from({ length: MAX_UPLOADS_PER_WRITER + 16 }, (_, i) => startUpload(env.CACHE, WRITER, narFile(i), layout, Date.now(), () => true)),
    );
    const records = (await keys()).filter((k) => k.startsWith("multipart/uploads/"));
    expect(records.length).toBeLessThanOrEqual(MAX_UPLOADS_PER_WRITER);
    const ok = results.filter((r) => r.status === "fulfilled").length;
    expect(ok).toBe(records.length);
    for (const r of results) if (r.status === "rejected") expect(String(r.reason)).toMatch(/multipart uploads in progress|started at the same moment/);
  });

  it("an unreadable record keeps its slot until the cleanup removes it", async () => {
    await env.CACHE.put(multipartUploadKey({ writer: WRITER, slot: 0 }), "", { customMetadata: { nar: "nonsense" } });
    expect(await readUpload(env.CACHE, { writer: WRITER, slot: 0 })).toBeNull();
    expect((await begin(1)).slot).toBe(1);
    const pass = await abortStaleUploads(env.CACHE, { now: Date.now() + 2 * MULTIPART_MAX_AGE_MS });
    expect(pass).toMatchObject({ strays: 1, more: false });
    expect(pass.aborted).toHaveLength(1);
    expect(await keys()).toEqual([]);
  });
});

describe("abortStaleUploads", { timeout: 60_000 }, () => {
  const later = () => Date.now() + MULTIPART_MAX_AGE_MS + 60_000;

  it("aborts uploads older than the max age and deletes all their objects, and nothing younger", async () => {
    const old = await begin(1);
    await receivePart(env.CACHE, old, 1, streamOf(new Uint8Array(6 * MiB)), 6 * MiB);
    expect(await abortStaleUploads(env.CACHE)).toMatchObject({ aborted: [], strays: 0, more: false });
    expect(await keys()).toHaveLength(2);

    // Seen from a day and a bit later.
    const pass = await abortStaleUploads(env.CACHE, { now: later() });
    expect(pass).toMatchObject({ aborted: [`WRITE_TOKEN nar/${narFile(1)}`], more: false });
    expect(await keys()).toEqual([]);
    await expect(env.CACHE.resumeMultipartUpload(`multipart/objects/WRITE_TOKEN~0/assembled`, old.uploadId).uploadPart(2, new Uint8Array(1))).rejects.toThrow(/does not exist/);
  });

  it("takes a named max age", async () => {
    await begin(1);
    await new Promise((r) => setTimeout(r, 20));
    expect((await abortStaleUploads(env.CACHE, { maxAgeMs: 1 })).aborted).toEqual([`WRITE_TOKEN nar/${narFile(1)}`]);
  });

  it("works through many uploads within its operation budget, oldest first", async () => {
    for (let i = 1; i <= 5; i++) await begin(i);
    const first = await abortStaleUploads(env.CACHE, { now: later(), operations: 5 });
    // One list of multipart/, one of the records, two aborts, one delete.
    expect(first).toMatchObject({ aborted: [1, 2].map((i) => `WRITE_TOKEN nar/${narFile(i)}`), operations: 5, more: true });
    const second = await abortStaleUploads(env.CACHE, { now: later(), operations: 20 });
    expect(second).toMatchObject({ aborted: [3, 4, 5].map((i) => `WRITE_TOKEN nar/${narFile(i)}`), more: false });
    expect(await keys()).toEqual([]);
  });

  it("costs one R2 call when nothing is in progress, and a few when nothing is stale", async () => {
    expect(await abortStaleUploads(env.CACHE)).toEqual({ aborted: [], strays: 0, operations: 1, more: false });
    await begin(1);
    expect(await abortStaleUploads(env.CACHE)).toEqual({ aborted: [], strays: 0, operations: 3, more: false });
  });

  it("deletes old part records and objects no upload accounts for, and leaves young ones", async () => {
    const live = await begin(1);
    await env.CACHE.put(multipartPartKey({ writer: WRITER, slot: 7 }, 1), "", { customMetadata: { uploadId: "x", etag: "y", size: "1" } });
    await env.CACHE.put(`multipart/objects/WRITE_TOKEN_CI~3/assembled`, "left behind");
    // The bookkeeping of the layout before slots.
    await env.CACHE.put(`multipart/nar/${narFile(9)}/upload.json`, "{}");
    await env.CACHE.put(`multipart/nar/${narFile(9)}/part/00001`, "");
    const young = await abortStaleUploads(env.CACHE);
    expect(young.strays).toBe(0);
    expect(await keys()).toHaveLength(5);

    // A day later the live upload is stale too and goes as well.
    const pass = await abortStaleUploads(env.CACHE, { now: later() });
    expect(pass).toMatchObject({ aborted: [`WRITE_TOKEN nar/${live.nar}`], strays: 4, more: false });
    expect(await keys()).toEqual([]);
  });

  it("leaves everything outside multipart/ alone", async () => {
    await env.CACHE.put(`nar/${narFile(1)}`, "nar");
    await env.CACHE.put("multipart-not-ours", "x");
    await begin(2);
    await abortStaleUploads(env.CACHE, { now: Date.now() + 2 * MULTIPART_MAX_AGE_MS });
    expect(await keys()).toEqual(["multipart-not-ours", `nar/${narFile(1)}`]);
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
      expect((await keys()).filter((k) => k.startsWith("multipart/")), `minute ${minute}`).toHaveLength(left);
    }
  });
});
