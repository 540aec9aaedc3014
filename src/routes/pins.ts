// Pins: named roots that garbage collection keeps with their whole closure.
//
//   GET    /_api/v1/pins          → {"pins": {"<name>": {"path", "pinnedAt"}}}   write or admin token
//   PUT    /_api/v1/pins/<name>   {"path": "/nix/store/<hash>-<name>"}           admin token
//          → 201 (new) or 200 (moved) {"name", "path", "pinnedAt", "previous"?}
//   DELETE /_api/v1/pins/<name>   → 200 {"name", "path", "pinnedAt"}; 404 when absent   admin token
//
// Changing pins decides what a collection may delete, so it takes ADMIN_TOKEN like `gc`;
// write tokens (one per CI pipeline) can add paths but never make any deletable. A pin
// needs the path's narinfo in the cache and goes through the upload gate like a narinfo
// upload (gc/upload-gate.ts): a path being collected cannot be pinned until it is pushed
// again, and a pin set while a collection runs is seen by its second look.

import { Hono } from "hono";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { readText } from "../http/body.ts";
import { requireAdmin, requireWriteOrAdmin } from "../middleware/auth.ts";
import { parseStorePath } from "../nix/store-path.ts";
import { formatPins, MAX_PINS, parsePins, PIN_NAME, pinsObject, type Pin, type PinMap } from "../gc/pins.ts";
import { openUploadGate } from "../gc/upload-gate.ts";
import { getTextObject, headKey, PINS_KEY, putGcObject } from "../storage/gc-store.ts";
import { narInfoKey } from "../storage/keys.ts";

export const pins = new Hono<{ Bindings: WorkerEnv }>();

/** A pin request is one store path. */
const MAX_PIN_BODY_BYTES = 4096;

/** Tries after a lost race with another pin change, before answering 409. */
const RACE_RETRIES = 2;

async function readPins(bucket: R2Bucket): Promise<{ pins: PinMap; etag: string | null }> {
  const stored = await getTextObject(bucket, PINS_KEY);
  return stored === null ? { pins: new Map(), etag: null } : { pins: parsePins(stored.text), etag: stored.etag };
}

/** Applies `change` to the pins document with a conditional write, retrying lost races. */
async function updatePins(bucket: R2Bucket, change: (pins: PinMap) => void, beforeWrite: () => void = () => {}): Promise<void> {
  for (let attempt = 0; attempt <= RACE_RETRIES; attempt++) {
    const { pins, etag } = await readPins(bucket);
    change(pins);
    beforeWrite();
    const written = await putGcObject(bucket, PINS_KEY, formatPins(pins), etag === null ? { ifAbsent: true } : { ifEtag: etag });
    if (written !== null) return;
  }
  throw fail("conflict", "the pins changed at the same time; retry");
}

function pinName(raw: string): string {
  if (!PIN_NAME.test(raw)) {
    throw fail("bad_request", "a pin name is 1-100 letters, digits, '.', '_', '+' or '-', starting with a letter or digit");
  }
  return raw;
}

pins.get("/_api/v1/pins", requireWriteOrAdmin, async (c) => {
  const { pins: all } = await readPins(c.env.CACHE);
  return c.json({ pins: pinsObject(all) }, 200, { "Cache-Control": "no-store" });
});

pins.put("/_api/v1/pins/:name", requireAdmin, async (c) => {
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
  const gate = await openUploadGate(bucket, settingsOf(c.env).gc.uploadWindowMs);
  gate.checkPath(storePath.hash, path);
  const stored = await headKey(bucket, narInfoKey(storePath.hash));
  if (stored === null) throw fail("unprocessable", `${path} is not in this cache; push it before pinning it`);

  const pin: Pin = { path, pinnedAt: Date.now() };
  let previous: Pin | undefined;
  await updatePins(
    bucket,
    (all) => {
      previous = all.get(name);
      if (previous === undefined && all.size >= MAX_PINS) {
        throw fail("payload_too_large", `this cache already has ${MAX_PINS} pins; remove some (uploader unpin <name>)`);
      }
      all.set(name, pin);
    },
    () => gate.assertInTime(),
  );
  return c.json({ name, ...pin, ...(previous === undefined ? {} : { previous: previous.path }) }, previous === undefined ? 201 : 200);
});

pins.delete("/_api/v1/pins/:name", requireAdmin, async (c) => {
  const name = pinName(c.req.param("name"));
  let removed: Pin | undefined;
  await updatePins(c.env.CACHE, (all) => {
    removed = all.get(name);
    if (removed === undefined) throw fail("not_found", `there is no pin named ${name}`);
    all.delete(name);
  });
  return c.json({ name, ...removed! });
});
