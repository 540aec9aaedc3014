// /<hash32>.narinfo: the metadata Nix asks for first for every store path.
//
// GET/HEAD stream the stored document (with NAR_BASE_URL, its URL made absolute so the NAR
// comes from the bucket's public domain); on a miss, with AGGREGATE_UPSTREAMS set, the
// upstreams are asked (upstream-narinfo.ts). PUT decodes a body sent with a Content-Encoding
// (narinfo-compression: br, zstd, gzip or deflate), parses it with the core parser, applies
// the acceptance rules (ingest/narinfo-acceptance.ts: StorePath, URL, Compression, the
// stored NAR, references, signatures) and stores it under the immutability rule
// (ingest/narinfo-store.ts): 201 when stored, 204 when nothing changed or signatures
// were merged, 409 for a different narinfo of the same path.

import { Hono } from "hono";
import { NixFormatError } from "../nix/errors.ts";
import { MAX_NARINFO_LENGTH, parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { AppError, fail } from "../errors.ts";
import { contentEncoding, DECODABLE_ENCODINGS, readDecodedText } from "../http/body.ts";
import { serveNarInfoWithBase, serveObject } from "../http/object-response.ts";
import { requireRead, requireWrite, writerOf } from "../middleware/auth.ts";
import { edgeInvalidate } from "../storage/edge-cache.ts";
import { keyFromUrl, type ObjectKey } from "../storage/keys.ts";
import { openUploadGate } from "../gc/upload-gate.ts";
import { acceptNarInfo } from "../ingest/narinfo-acceptance.ts";
import { storeNarInfo } from "../ingest/narinfo-store.ts";
import { serveUpstreamNarInfo } from "./upstream-narinfo.ts";

export const narinfo = new Hono<{ Bindings: WorkerEnv }>();

/** Route pattern: one path segment ending in .narinfo (the key shape is checked after). */
const NARINFO_ROUTE = "/:file{[^/]+\\.narinfo}";

/**
 * Largest narinfo body, in bytes: the core parser's own limit (1 MiB), which fits the
 * longest narinfos real closures produce (thousands of references).
 */
const MAX_NARINFO_BYTES = MAX_NARINFO_LENGTH;

function narInfoKeyOf(request: Request): ObjectKey | null {
  const object = keyFromUrl(new URL(request.url));
  return object !== null && object.kind === "narinfo" ? object : null;
}

narinfo.get(NARINFO_ROUTE, requireRead, async (c) => {
  const object = narInfoKeyOf(c.req.raw);
  if (object === null) throw fail("not_found", "no such narinfo in this cache");
  const settings = settingsOf(c.env);
  const base = settings.narBaseUrl;
  const serve = (): Promise<Response> =>
    base === null ? serveObject(c.req.raw, c.env, c.executionCtx, object) : serveNarInfoWithBase(c.req.raw, c.env, c.executionCtx, object, base);
  if (settings.aggregation.upstreams.length === 0) return serve();
  try {
    return await serve();
  } catch (err) {
    if (!(err instanceof AppError && err.kind === "not_found")) throw err;
    const hashPart = object.key.slice(0, object.key.length - ".narinfo".length);
    return serveUpstreamNarInfo(c.req.raw, c.env, c.executionCtx, hashPart);
  }
});

narinfo.put(NARINFO_ROUTE, requireWrite, async (c) => {
  const request = c.req.raw;
  const object = narInfoKeyOf(request);
  if (object === null) throw fail("bad_request", "a narinfo is uploaded to /<32-char nix32 hash part>.narinfo");
  // Nix 2.32+ with narinfo-compression sends the narinfo encoded: it is decoded (bounded)
  // to be checked, and stored and served plain like any other.
  const encoding = contentEncoding(
    request,
    DECODABLE_ENCODINGS,
    "narinfo",
    "the Worker decodes a narinfo to check it and can only decode those: set narinfo-compression to one of them, or leave it unset",
  );
  const text = await readDecodedText(request, encoding, MAX_NARINFO_BYTES, "the narinfo");
  let info: NarInfo;
  try {
    info = parseNarInfo(text);
  } catch (e) {
    if (e instanceof NixFormatError) throw fail("bad_request", `invalid narinfo: ${e.message}`);
    throw e;
  }
  const hashPart = object.key.slice(0, object.key.length - ".narinfo".length);
  const settings = settingsOf(c.env);
  // The fence is read before the NAR and references are checked (gc/fence.ts).
  const gate = await openUploadGate(c.env.CACHE, settings.gc.uploadWindowMs);
  const accepted = await acceptNarInfo(info, hashPart, c.env.CACHE, c.env.DB, settings);
  gate.checkNarInfo(accepted);
  const outcome = await storeNarInfo(c.env.CACHE, object.key, accepted, { db: c.env.DB, token: writerOf(request), gate });
  if (outcome !== "unchanged") await edgeInvalidate(new URL(request.url), object.key);
  return new Response(null, { status: outcome === "created" ? 201 : 204 });
});
