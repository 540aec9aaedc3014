// GET and HEAD of a stored object: the body is R2's stream passed straight through (never
// buffered), with ETag, Last-Modified, If-None-Match → 304, a single Range → 206 / 416,
// and the Content-Type and Cache-Control of its kind. A NAR never gets a Content-Encoding
// (Nix would decode it twice); other documents get back the encoding they were uploaded
// with, sent as is.
//
// Plain GETs cost one R2 operation. Conditional and ranged requests (Nix sends neither,
// except `Range` when resuming a NAR) first HEAD the object, because local R2 mishandles
// ranges it cannot satisfy (TOOLCHAIN G6) and the size is needed to answer 416.
//
// With NAR_BASE_URL, narinfos are answered by serveNarInfoWithBase instead: the stored text
// with its URL made absolute, so Nix downloads the NAR from the bucket's public domain.

import type { WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { isPublicCache } from "../middleware/auth.ts";
import { getObject, headObject, storageUnavailable } from "../storage/bucket.ts";
import { edgeCacheKey, edgeMatch, edgeStore, type BackgroundTasks } from "../storage/edge-cache.ts";
import type { ObjectKey } from "../storage/keys.ts";
import { withNarBaseUrl } from "./nar-base-url.ts";
import { cacheControlOf, contentTypeOf } from "./representation.ts";
import { parseRange, resolveRange } from "./range.ts";

function headersFor(obj: R2Object, object: ObjectKey, env: WorkerEnv): Headers {
  const headers = new Headers({
    "Content-Type": contentTypeOf(object.kind),
    "Cache-Control": cacheControlOf(object.kind, !isPublicCache(env)),
    ETag: obj.httpEtag,
    "Last-Modified": obj.uploaded.toUTCString(),
    "Accept-Ranges": "bytes",
  });
  const encoding = obj.httpMetadata?.contentEncoding;
  if (object.kind !== "nar" && encoding !== undefined && encoding !== "") headers.set("Content-Encoding", encoding);
  return headers;
}

function etagList(header: string): string[] {
  return header.split(",").map((t) => t.trim().replace(/^W\//, ""));
}

/** If-None-Match uses weak comparison (RFC 9110 §13.1.2). */
function noneMatch(request: Request, etag: string): boolean {
  const header = request.headers.get("If-None-Match");
  if (header === null) return false;
  const tags = etagList(header);
  return tags.includes("*") || tags.includes(etag.replace(/^W\//, ""));
}

/** If-Range: the range applies only to the representation the client already has. */
function rangeStillValid(request: Request, obj: R2Object): boolean {
  const header = request.headers.get("If-Range");
  if (header === null) return true;
  return header.trim() === obj.httpEtag || header.trim() === obj.uploaded.toUTCString();
}

function notModified(headers: Headers): Response {
  const out = new Headers();
  for (const name of ["ETag", "Cache-Control", "Last-Modified"]) {
    const v = headers.get(name);
    if (v !== null) out.set(name, v);
  }
  return new Response(null, { status: 304, headers: out });
}

function respond(body: ReadableStream | null, status: number, headers: Headers): Response {
  // Bodies stored with a Content-Encoding are already encoded: send the bytes as they are.
  const manual = headers.has("Content-Encoding");
  return new Response(body, { status, headers, ...(manual ? { encodeBody: "manual" as const } : {}) });
}

function absent(): never {
  throw fail("not_found", "no such object in this cache");
}

/** A short, stable tag of a string (FNV-1a, 32 bits, base 36): for derived ETags. */
function tagOf(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(36);
}

/**
 * Answers a GET or HEAD for a stored narinfo with its `URL:` made absolute under
 * `narBaseUrl` (NAR_BASE_URL, http/nar-base-url.ts). The body is the stored one with that
 * line changed, so it has an ETag of its own (the stored one's, tagged with the base URL)
 * and no Content-Length on HEAD; a Range is ignored (RFC 9110 allows serving the whole
 * representation), which costs nothing for a document of a few hundred bytes. A narinfo
 * stored with a Content-Encoding (none of this Worker's) is served as stored.
 */
export async function serveNarInfoWithBase(request: Request, env: WorkerEnv, ctx: BackgroundTasks, object: ObjectKey, narBaseUrl: string): Promise<Response> {
  const bucket = env.CACHE;
  const etagOf = (obj: R2Object): string => `"${obj.etag}-${tagOf(narBaseUrl)}"`;
  if (request.method === "HEAD") {
    const obj = (await headObject(bucket, object.key)) ?? absent();
    const headers = headersFor(obj, object, env);
    headers.set("ETag", etagOf(obj));
    return noneMatch(request, etagOf(obj)) ? notModified(headers) : new Response(null, { status: 200, headers });
  }
  const cacheKey = edgeCacheKey(new URL(request.url), env, object.kind, object.key);
  if (cacheKey !== null) {
    const hit = await edgeMatch(cacheKey, request);
    if (hit !== undefined) return hit;
  }
  const obj = (await getObject(bucket, object.key)) ?? absent();
  const headers = headersFor(obj, object, env);
  if (headers.has("Content-Encoding")) return respond(obj.body, 200, withLength(headers, obj.size));
  const etag = etagOf(obj);
  headers.set("ETag", etag);
  let text: string;
  try {
    text = withNarBaseUrl(await obj.text(), narBaseUrl);
  } catch (err) {
    return storageUnavailable(err);
  }
  if (noneMatch(request, etag)) return notModified(headers);
  const body = new TextEncoder().encode(text);
  const response = new Response(body, { status: 200, headers: withLength(headers, body.length) });
  return cacheKey !== null ? edgeStore(ctx, cacheKey, response, body.length) : response;
}

function withLength(headers: Headers, length: number): Headers {
  headers.set("Content-Length", String(length));
  return headers;
}

/** Answers a GET or HEAD for `object` from R2 (or the edge cache). */
export async function serveObject(request: Request, env: WorkerEnv, ctx: BackgroundTasks, object: ObjectKey): Promise<Response> {
  const bucket = env.CACHE;

  if (request.method === "HEAD") {
    const obj = (await headObject(bucket, object.key)) ?? absent();
    const headers = headersFor(obj, object, env);
    if (noneMatch(request, obj.httpEtag)) return notModified(headers);
    headers.set("Content-Length", String(obj.size));
    return new Response(null, { status: 200, headers });
  }

  const url = new URL(request.url);
  const cacheKey = edgeCacheKey(url, env, object.kind, object.key);
  if (cacheKey !== null) {
    const hit = await edgeMatch(cacheKey, request);
    if (hit !== undefined) return hit;
  }

  const range = parseRange(request.headers.get("Range"));
  if (range !== null || request.headers.has("If-None-Match")) {
    const meta = (await headObject(bucket, object.key)) ?? absent();
    const headers = headersFor(meta, object, env);
    if (noneMatch(request, meta.httpEtag)) return notModified(headers);
    if (range !== null && rangeStillValid(request, meta)) {
      const bytes = resolveRange(range, meta.size);
      if (bytes === null) {
        return new Response(null, {
          status: 416,
          headers: { "Content-Range": `bytes */${meta.size}`, "Cache-Control": "no-store" },
        });
      }
      const length = bytes.end - bytes.start + 1;
      const obj = (await getObject(bucket, object.key, { offset: bytes.start, length })) ?? absent();
      headers.set("Content-Range", `bytes ${bytes.start}-${bytes.end}/${meta.size}`);
      headers.set("Content-Length", String(length));
      return respond(obj.body, 206, headers);
    }
  }

  const obj = (await getObject(bucket, object.key)) ?? absent();
  const headers = headersFor(obj, object, env);
  headers.set("Content-Length", String(obj.size));
  const response = respond(obj.body, 200, headers);
  return cacheKey !== null ? edgeStore(ctx, cacheKey, response, obj.size) : response;
}
