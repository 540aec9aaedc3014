// Pins: named roots that garbage collection keeps with their whole closure.
//
//   GET    /_api/v1/pins          → {"pins": {"<name>": {"path", "pinnedAt"}}}   write or admin token
//   PUT    /_api/v1/pins/<name>   {"path": "/nix/store/<hash>-<name>"}           admin token
//          → 201 (new) or 200 (moved) {"name", "path", "pinnedAt", "previous"?}
//   DELETE /_api/v1/pins/<name>   → 200 {"name", "path", "pinnedAt"}; 404 when absent   admin token
//
// The types and the name rule are the shared contract (src/api/pins.ts).
//
// Pins are rows of the D1 table `pins` (storage/pins.ts; a cache from before the table has
// its R2 document moved there on the first pins request or collection).
// Changing pins decides what a collection may delete, so it takes ADMIN_TOKEN like `gc`;
// write tokens (one per CI pipeline) can add paths but never make any deletable. A pin
// needs the path's narinfo in the cache and goes through the upload gate like a narinfo
// upload (gc/upload-gate.ts): a path being collected cannot be pinned until it is pushed
// again, and a pin set while a collection runs is seen by its second look.

import { Hono } from "hono";
import { PIN_NAME, PINS_PATH, type Pin, type PinList, type RemovePinAnswer, type SetPinAnswer } from "../api/pins.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { readText } from "../http/body.ts";
import { requireAdmin, requireWriteOrAdmin } from "../middleware/auth.ts";
import { parseStorePath } from "../nix/store-path.ts";
import { MAX_PINS, pinsObject } from "../gc/pins.ts";
import { openUploadGate } from "../gc/upload-gate.ts";
import { headKey } from "../storage/gc-store.ts";
import { narInfoKey } from "../storage/keys.ts";
import { listPins, movePinsDocument, removePin, setPin } from "../storage/pins.ts";

export const pins = new Hono<{ Bindings: WorkerEnv }>();

/** A pin request is one store path. */
const MAX_PIN_BODY_BYTES = 4096;

/** Moves the pins of a cache from before the pins table (an R2 document) into it. */
async function movedPins(env: WorkerEnv): Promise<void> {
  const legacy = await movePinsDocument(env.CACHE, env.DB);
  if (legacy.state === "damaged") {
    throw fail("conflict", `${legacy.reason}; repair it or delete it (wrangler r2 object delete <bucket>/_gc/pins.json --remote), then set the lost pins again`);
  }
}

function pinName(raw: string): string {
  if (!PIN_NAME.test(raw)) {
    throw fail("bad_request", "a pin name is 1-100 letters, digits, '.', '_', '+' or '-', starting with a letter or digit");
  }
  return raw;
}

pins.get(`/${PINS_PATH}`, requireWriteOrAdmin, async (c) => {
  await movedPins(c.env);
  return c.json({ pins: pinsObject(await listPins(c.env.DB)) } satisfies PinList, 200, { "Cache-Control": "no-store" });
});

pins.put(`/${PINS_PATH}/:name`, requireAdmin, async (c) => {
  const name = pinName(c.req.param("name"));
  let body: unknown;
  try {
    body = JSON.parse(await readText(c.req.raw, MAX_PIN_BODY_BYTES, "the request body"));
  } catch (e) {
    if (e instanceof SyntaxError) throw fail("bad_request", 'the body is not JSON; send {"path": "/nix/store/<hash>-<name>"}');
    throw e;
  }
  const path = typeof body === "object" && body !== null ? (body as { path?: unknown }).path : undefined;
  const storePath = typeof path === "string" ? parseStorePath(path) : null;
  if (typeof path !== "string" || storePath === null) throw fail("bad_request", 'send {"path": "/nix/store/<hash>-<name>"} with a valid store path');

  const bucket = c.env.CACHE;
  await movedPins(c.env);
  const gate = await openUploadGate(bucket, settingsOf(c.env).gc.uploadWindowMs);
  gate.checkPath(storePath.hash, path);
  const stored = await headKey(bucket, narInfoKey(storePath.hash));
  if (stored === null) throw fail("unprocessable", `${path} is not in this cache; push it before pinning it`);

  const pin: Pin = { path, pinnedAt: Date.now() };
  gate.assertInTime();
  const result = await setPin(c.env.DB, name, pin, MAX_PINS);
  if (!result.set) throw fail("payload_too_large", `this cache already has ${MAX_PINS} pins; remove some (uploader unpin <name>)`);
  const previous = result.previous;
  return c.json({ name, ...pin, ...(previous === null ? {} : { previous: previous.path }) } satisfies SetPinAnswer, previous === null ? 201 : 200);
});

pins.delete(`/${PINS_PATH}/:name`, requireAdmin, async (c) => {
  const name = pinName(c.req.param("name"));
  await movedPins(c.env);
  const removed = await removePin(c.env.DB, name, Date.now());
  if (removed === null) throw fail("not_found", `there is no pin named ${name}`);
  return c.json({ name, ...removed } satisfies RemovePinAnswer);
});
