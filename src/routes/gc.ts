// POST /_api/v1/gc: one batch of garbage collection, for `uploader gc` (ADMIN_TOKEN). The
// request and answer types are the shared contract (src/api/gc.ts).
//
//   request   {"dryRun"?: bool, "olderThanSeconds"?: n | "before"?: ms since epoch,
//              "runId"?: id, "restart"?: bool}                         all optional
//   response  the batch's progress (gc/collector.ts GcProgress), garbage paths given as
//             store paths: {"status", "run", "waitMs", "batch", "totals",
//             "found": {"paths": [{"path", "fileSize"}], "files": [{"key", "size"}]}, …};
//             when done, "result" says what the run deleted, and "unreadable"
//             ([{"key", "path", "reason"}], with "unreadableCount") the documents it keeps
//             but could not read, for which it deleted no narinfo and no NAR
//
// A batch reads push times from the D1 index as well as from R2, and removes the rows of the
// paths it deletes (gc/collector.ts); "batch.operations" counts its R2 and D1 calls.
//
// Without runId a call starts a collection (with the given age, else GC_RETENTION_DAYS) or
// joins the one in progress; the caller then repeats the call with the run's id until the
// status is "done", sleeping waitMs when the run waits and a moment when it is "busy"
// (the cron trigger is running a batch of the same collection).

import { Hono } from "hono";
import { GC_PATH, type GcBatchAnswer } from "../api/gc.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { readText } from "../http/body.ts";
import { requireAdmin } from "../middleware/auth.ts";
import { STORE_DIR } from "../nix/store-path.ts";
import { runGcBatch, type GcRequest } from "../gc/collector.ts";

export const gc = new Hono<{ Bindings: WorkerEnv }>();

/** The request is a few small fields. */
const MAX_GC_BODY_BYTES = 4096;

/** Longest age accepted (a century): anything larger is a typo. */
const MAX_AGE_SECONDS = 100 * 365 * 24 * 3600;

const RUN_ID = /^[0-9a-z]{1,20}-[0-9a-z]{1,20}$/;

function parseRequest(text: string, now: number): GcRequest {
  let body: unknown = {};
  if (text.trim() !== "") {
    try {
      body = JSON.parse(text);
    } catch {
      throw fail("bad_request", 'the body is not JSON; send {"dryRun": true, "olderThanSeconds": 86400} or {}');
    }
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw fail("bad_request", "the body must be a JSON object");
  const { dryRun, olderThanSeconds, before, runId, restart } = body as Record<string, unknown>;
  const req: GcRequest = { dryRun: false, trigger: "manual" };
  if (dryRun !== undefined) {
    if (typeof dryRun !== "boolean") throw fail("bad_request", "dryRun must be true or false");
    req.dryRun = dryRun;
  }
  if (restart !== undefined) {
    if (typeof restart !== "boolean") throw fail("bad_request", "restart must be true or false");
    req.restart = restart;
  }
  if (olderThanSeconds !== undefined && before !== undefined) throw fail("bad_request", "give olderThanSeconds or before, not both");
  if (olderThanSeconds !== undefined) {
    if (typeof olderThanSeconds !== "number" || !Number.isFinite(olderThanSeconds) || olderThanSeconds < 0 || olderThanSeconds > MAX_AGE_SECONDS) {
      throw fail("bad_request", "olderThanSeconds must be a number of seconds from 0 to a century");
    }
    req.cutoff = now - olderThanSeconds * 1000;
  }
  if (before !== undefined) {
    if (typeof before !== "number" || !Number.isSafeInteger(before) || before < 0) throw fail("bad_request", "before must be a time in ms since the epoch");
    req.cutoff = before;
  }
  if (runId !== undefined) {
    if (typeof runId !== "string" || !RUN_ID.test(runId)) throw fail("bad_request", "runId is not the id of a collection");
    req.runId = runId;
  }
  return req;
}

gc.post(`/${GC_PATH}`, requireAdmin, async (c) => {
  const now = Date.now();
  const req = parseRequest(await readText(c.req.raw, MAX_GC_BODY_BYTES, "the request body"), now);
  const progress = await runGcBatch({ bucket: c.env.CACHE, db: c.env.DB, settings: settingsOf(c.env).gc, clock: Date.now }, req);
  const { found, ...rest } = progress;
  const answer: GcBatchAnswer = {
    ...rest,
    found: {
      paths: found.paths.map((p) => ({ path: p.name === null ? `${STORE_DIR}/${p.hash}` : `${STORE_DIR}/${p.hash}-${p.name}`, fileSize: p.fileSize })),
      files: found.files,
    },
  };
  return c.json(answer, 200, { "Cache-Control": "no-store" });
});
