// A local stand-in for R2's public bucket access (a bucket on a custom domain, or r2.dev),
// for `npm start`, the end-to-end tests and bench/serve.ts. Never deployed: wrangler.toml's
// Worker is src/index.ts; this one runs under its own config (public-bucket.toml) with
// `wrangler dev --persist-to` the same directory as the cache's, so it reads the very
// objects the cache's Worker wrote, through the same local R2.
//
// What it does is what R2's public access does, and nothing else:
//   GET/HEAD /<key>   the object at the percent-decoded path (no leading slash), with the
//                     headers stored on it (httpMetadata: Content-Type, Cache-Control,
//                     Content-Encoding…), ETag, Last-Modified, Content-Length; a single
//                     Range → 206; If-None-Match → 304
//   anything else     404 (no listing, no index page) or 405 (other methods)
// Nothing is computed for a reader: a binary cache served like this is complete only if
// every file Nix asks for (nix-cache-info included) is an object in the bucket. It uses the
// R2 binding directly rather than src/storage/: it stands in for R2 itself, not the Worker.

import { parseRange, resolveRange } from "../http/range.ts";

interface PublicBucketEnv {
  BUCKET: R2Bucket;
}

function notFound(): Response {
  return new Response("Object not found\n", { status: 404, headers: { "Content-Type": "text/plain" } });
}

function headersOf(obj: R2Object): Headers {
  const headers = new Headers();
  obj.writeHttpMetadata(headers);
  headers.set("ETag", obj.httpEtag);
  headers.set("Last-Modified", obj.uploaded.toUTCString());
  headers.set("Accept-Ranges", "bytes");
  return headers;
}

function noneMatch(request: Request, etag: string): boolean {
  const header = request.headers.get("If-None-Match");
  if (header === null) return false;
  const tags = header.split(",").map((t) => t.trim().replace(/^W\//, ""));
  return tags.includes("*") || tags.includes(etag.replace(/^W\//, ""));
}

function respond(body: ReadableStream | null, status: number, headers: Headers): Response {
  // A stored Content-Encoding means the bytes are encoded already: send them as they are.
  return new Response(body, { status, headers, ...(headers.has("Content-Encoding") ? { encodeBody: "manual" as const } : {}) });
}

export default {
  async fetch(request, env): Promise<Response> {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response(null, { status: 405, headers: { Allow: "GET, HEAD" } });
    }
    let key: string;
    try {
      key = decodeURIComponent(new URL(request.url).pathname.slice(1));
    } catch {
      return notFound();
    }
    if (key === "") return notFound();
    const spec = parseRange(request.headers.get("Range"));
    if (request.method === "GET" && spec === null && !request.headers.has("If-None-Match")) {
      // The common case in one R2 operation, as R2's own public access does it.
      const obj = await env.BUCKET.get(key);
      if (obj === null) return notFound();
      const headers = headersOf(obj);
      headers.set("Content-Length", String(obj.size));
      return respond(obj.body, 200, headers);
    }
    // Conditional, ranged and HEAD requests look at the object first (local R2 mishandles
    // ranges it cannot satisfy, TOOLCHAIN G6).
    const meta = await env.BUCKET.head(key);
    if (meta === null) return notFound();
    const headers = headersOf(meta);
    if (noneMatch(request, meta.httpEtag)) return new Response(null, { status: 304, headers });
    if (request.method === "HEAD" || spec === null) {
      headers.set("Content-Length", String(meta.size));
      if (request.method === "HEAD") return new Response(null, { status: 200, headers });
      const obj = await env.BUCKET.get(key);
      return obj === null ? notFound() : respond(obj.body, 200, headers);
    }
    const range = resolveRange(spec, meta.size);
    if (range === null) return new Response(null, { status: 416, headers: { "Content-Range": `bytes */${meta.size}` } });
    const length = range.end - range.start + 1;
    const part = await env.BUCKET.get(key, { range: { offset: range.start, length } });
    if (part === null) return notFound();
    headers.set("Content-Range", `bytes ${range.start}-${range.end}/${meta.size}`);
    headers.set("Content-Length", String(length));
    return respond(part.body, 206, headers);
  },
} satisfies ExportedHandler<PublicBucketEnv>;
