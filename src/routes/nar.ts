// /nar/<filehash52>.nar[.ext]: the (compressed) NAR files narinfos point to.
//
// GET/HEAD stream the object from R2 (object-response.ts). PUT streams the request body
// into R2 with the sha256 from the name, so R2 itself refuses a body that does not hash
// to its name (400, nothing stored): the Worker spends no CPU on hashing, and a NAR under
// a given name can never change. An upload of a name that is already stored is a no-op.

import { Hono } from "hono";
import { toHex } from "../nix/encoding.ts";
import { decodeNix32 } from "../nix/nix32.ts";
import { SHA256_BYTES } from "../nix/hash.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { contentEncoding, requireLength } from "../http/body.ts";
import { serveObject } from "../http/object-response.ts";
import { CONTENT_TYPE } from "../api/media-types.ts";
import { requireRead, requireWrite } from "../middleware/auth.ts";
import { headObject, putStream } from "../storage/bucket.ts";
import { edgeInvalidate } from "../storage/edge-cache.ts";
import { keyFromUrl, parseNarFileName, type ObjectKey } from "../storage/keys.ts";

export const nar = new Hono<{ Bindings: WorkerEnv }>();

const LARGE_UPLOAD_HINT = "push large paths with the uploader (npx uploader push), which uploads them in parts";

function narKeyOf(request: Request): ObjectKey | null {
  const object = keyFromUrl(new URL(request.url));
  return object !== null && object.kind === "nar" ? object : null;
}

nar.get("/nar/*", requireRead, (c) => {
  const object = narKeyOf(c.req.raw);
  if (object === null) throw fail("not_found", "no such NAR in this cache");
  return serveObject(c.req.raw, c.env, c.executionCtx, object);
});

nar.put("/nar/*", requireWrite, async (c) => {
  const request = c.req.raw;
  const object = narKeyOf(request);
  const name = object === null ? null : parseNarFileName(object.key.slice("nar/".length));
  if (object === null || name === null) {
    throw fail("bad_request", "a NAR is uploaded to nar/<52-char nix32 sha256 of the file>.nar[.xz|.bz2|.zst|.br|.lz4|.lzip]");
  }
  let sha256Hex: string;
  try {
    sha256Hex = toHex(decodeNix32(name.fileHash, SHA256_BYTES));
  } catch {
    throw fail("bad_request", "the NAR file name is not a valid nix32 sha256 (it must start with 0 or 1)");
  }
  contentEncoding(request, [], "NAR");
  const length = requireLength(request, settingsOf(c.env).maxNarUploadBytes, LARGE_UPLOAD_HINT);

  const existing = await headObject(c.env.CACHE, object.key);
  if (existing !== null) {
    // The stored object was verified against the same sha256, so it is this very file.
    if (existing.size !== length) {
      throw fail("bad_request", `this NAR is stored with ${existing.size} bytes; a body of ${length} bytes cannot hash to its name`);
    }
    return new Response(null, { status: 204 });
  }
  // Conditional: a concurrent upload of the same name stored it first (the same bytes).
  const stored = await putStream(c.env.CACHE, object.key, request.body, { length, sha256Hex, contentType: CONTENT_TYPE.nar, absentBefore: true, onlyIfAbsent: true });
  if (!stored) return new Response(null, { status: 204 });
  await edgeInvalidate(new URL(request.url), object.key);
  return new Response(null, { status: 201 });
});
