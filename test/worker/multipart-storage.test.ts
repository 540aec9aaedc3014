// The multipart storage module against the real local R2: the R2 errors it recognises
// (pinned, since it maps their messages to 404/409/400), and the cleanup pass a cron
// calls to abort abandoned uploads.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import {
  abortStaleUploads,
  beginUpload,
  MULTIPART_MAX_AGE_MS,
  readUpload,
  receivePart,
  recordedParts,
  type TrackedUpload,
} from "../../src/storage/multipart.ts";
import { layoutFor } from "../../src/upload/part-layout.ts";
import { keys } from "../helpers/worker.ts";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../src/index.ts";

const MiB = 1024 * 1024;

beforeEach(() => reset());

function narKey(i: number): string {
  // Any valid name will do: the storage module never reads NAR bytes.
  return `nar/${String(i).padStart(52, "0")}.nar.zst`;
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([bytes as Uint8Array<ArrayBuffer>]).stream();
}

async function begin(i: number, size = 12 * MiB): Promise<TrackedUpload> {
  return beginUpload(env.CACHE, narKey(i), layoutFor(size, 6 * MiB), "size", Date.now());
}

describe("local R2 multipart errors the module recognises", { timeout: 30_000 }, () => {
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
});

describe("part bookkeeping", { timeout: 30_000 }, () => {
  it("records received parts with their sizes, readable by a later request", async () => {
    const upload = await begin(1);
    await receivePart(env.CACHE, upload, 2, streamOf(new Uint8Array(6 * MiB)), 6 * MiB);
    const again = await readUpload(env.CACHE, narKey(1));
    expect(again).toEqual(upload);
    expect((await recordedParts(env.CACHE, again!)).map(({ partNumber, size }) => ({ partNumber, size }))).toEqual([{ partNumber: 2, size: 6 * MiB }]);
  });

  it("drops unreadable bookkeeping", async () => {
    await env.CACHE.put(`multipart/${narKey(1)}/upload.json`, "{not json");
    await env.CACHE.put(`multipart/${narKey(1)}/part/00001`, "");
    expect(await readUpload(env.CACHE, narKey(1))).toBeNull();
    expect(await keys()).toEqual([]);
  });
});

describe("abortStaleUploads", { timeout: 30_000 }, () => {
  it("aborts uploads older than the max age and drops their bookkeeping, and nothing younger", async () => {
    const old = await begin(1);
    await receivePart(env.CACHE, old, 1, streamOf(new Uint8Array(6 * MiB)), 6 * MiB);
    expect(await abortStaleUploads(env.CACHE)).toEqual({ aborted: [], more: false });
    expect(await keys()).toHaveLength(2);

    // Seen from a day and a bit later.
    const later = Date.now() + MULTIPART_MAX_AGE_MS + 60_000;
    expect(await abortStaleUploads(env.CACHE, { now: later })).toEqual({ aborted: [narKey(1)], more: false });
    expect(await keys()).toEqual([]);
    await expect(env.CACHE.resumeMultipartUpload(old.target, old.uploadId).uploadPart(2, new Uint8Array(1))).rejects.toThrow(/does not exist/);
  });

  it("takes a named max age", async () => {
    await begin(1);
    await new Promise((r) => setTimeout(r, 20));
    expect((await abortStaleUploads(env.CACHE, { maxAgeMs: 1 })).aborted).toEqual([narKey(1)]);
  });

  it("works through many uploads a bounded number at a time", async () => {
    for (let i = 1; i <= 3; i++) await begin(i);
    const later = Date.now() + 2 * MULTIPART_MAX_AGE_MS;
    const first = await abortStaleUploads(env.CACHE, { now: later, limit: 2 });
    expect(first).toEqual({ aborted: [narKey(1), narKey(2)], more: true });
    const second = await abortStaleUploads(env.CACHE, { now: later, limit: 2 });
    expect(second).toEqual({ aborted: [narKey(3)], more: false });
    expect(await keys()).toEqual([]);
  });

  it("drops part records left without their upload", async () => {
    await env.CACHE.put(`multipart/${narKey(1)}/part/00001`, "", { customMetadata: { uploadId: "x", etag: "y", size: "1" } });
    const later = Date.now() + 2 * MULTIPART_MAX_AGE_MS;
    expect((await abortStaleUploads(env.CACHE, { now: later })).aborted).toEqual([narKey(1)]);
    expect(await keys()).toEqual([]);
  });

  it("leaves everything outside multipart/ alone", async () => {
    await env.CACHE.put(narKey(1), "nar");
    await env.CACHE.put("multipart-not-ours", "x");
    await abortStaleUploads(env.CACHE, { now: Date.now() + 2 * MULTIPART_MAX_AGE_MS });
    expect(await keys()).toEqual(["multipart-not-ours", narKey(1)]);
  });
});

describe("the cron trigger", { timeout: 30_000 }, () => {
  const tickAt = (at: number, minute: number): number => {
    const d = new Date(at);
    d.setUTCMinutes(minute);
    return d.getTime();
  };

  it("aborts abandoned uploads at minute 30 of the hour, and only then", async () => {
    await begin(1);
    const dayLater = Date.now() + MULTIPART_MAX_AGE_MS + 2 * 60 * 60_000;
    for (const [minute, left] of [[5, 1], [30, 0]] as const) {
      const ctx = createExecutionContext();
      const controller = { scheduledTime: tickAt(dayLater, minute), cron: "* * * * *", noRetry() {} } as ScheduledController;
      await worker.scheduled!(controller, { ...env, GC_RETENTION_DAYS: "off" }, ctx);
      await waitOnExecutionContext(ctx);
      expect((await keys()).filter((k) => k.startsWith("multipart/"))).toHaveLength(left);
    }
  });
});
