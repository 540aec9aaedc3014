// Documents Nix stores next to narinfos and NARs, kept verbatim (PROTOCOL §5.1):
//   /<hash32>.ls                            NAR listing (write-nar-listing=1)
//   /log/<drv base name>                    build log (nix store copy-log, nix log)
//   /realisations/<id>.doi                  CA realisation, Nix <= 2.34
//   /build-trace-v2/<drv>/<output>.doi      CA realisation, Nix >= 2.35 (a 404 on its PUT
//                                           fails the whole `nix copy`)
//   /debuginfo/<build id>                   dwarffs link (index-debug-info=1)
// Reads are public (or need the read token); uploads need a write token, a key of the
// right shape and a Content-Length within the kind's limit, and are streamed into R2. A
// later upload replaces an earlier one (logs of a rebuild, re-signed realisations).
//
// A body compressed by Nix 2.32+ (ls-compression, log-compression: any of its compression
// methods) is stored as sent, with its Content-Encoding, and served back with it (never
// re-encoded: object-response.ts sends it with encodeBody "manual"). Decoding it here
// would cost more CPU than a request has for a large listing or log, and nothing in it
// needs checking. Who can read what back (PROTOCOL §5.4): Nix 2.8–2.33 decode every
// method Nix compresses with; 2.34+ let libcurl decode, which knows gzip, deflate, br and
// zstd only, so a log uploaded with xz or bzip2 is readable by older Nix only. Nix never
// reads a .ls back. `none` is stored as no encoding.

import { Hono } from "hono";
import type { WorkerEnv } from "../env.ts";
import { fail } from "../errors.ts";
import { contentEncoding, requireLength, UPLOAD_ENCODINGS } from "../http/body.ts";
import { serveObject } from "../http/object-response.ts";
import { contentTypeOf } from "../http/representation.ts";
import { requireRead, requireWrite } from "../middleware/auth.ts";
import { putStream } from "../storage/bucket.ts";
import { keyFromUrl, type ObjectKey, type ObjectKind } from "../storage/keys.ts";

export const documents = new Hono<{ Bindings: WorkerEnv }>();

type DocumentKind = Exclude<ObjectKind, "narinfo" | "nar">;

/** Largest upload per kind, in bytes. */
export const MAX_DOCUMENT_BYTES: Readonly<Record<DocumentKind, number>> = {
  // A listing costs ~100 bytes of JSON per file; 32 MiB covers trees of ~300k files
  // (texlive, the biggest closures in nixpkgs, has about 200k).
  listing: 32 * 1024 * 1024,
  // Build logs of the largest builds (LLVM, browsers) reach tens of MB uncompressed.
  log: 64 * 1024 * 1024,
  // Realisations are small JSON objects: id, out path, signatures, dependencies.
  realisation: 64 * 1024,
  "build-trace": 64 * 1024,
  // `{"archive":"../nar/<file>","member":"lib/debug/.build-id/…"}`.
  debuginfo: 4 * 1024,
};

const ROUTES = ["/:file{[^/]+\\.ls}", "/log/*", "/realisations/*", "/build-trace-v2/*", "/debuginfo/*"];

function documentKeyOf(request: Request): (ObjectKey & { kind: DocumentKind }) | null {
  const object = keyFromUrl(new URL(request.url));
  if (object === null || object.kind === "narinfo" || object.kind === "nar") return null;
  return object as ObjectKey & { kind: DocumentKind };
}

const SHAPES =
  "<hash32>.ls, log/<hash>-<name>.drv, realisations/sha256:<64 hex>!<output>.doi, " +
  "build-trace-v2/<hash>-<name>.drv/<output>.doi or debuginfo/<40 hex>";

for (const route of ROUTES) {
  documents.get(route, requireRead, (c) => {
    const object = documentKeyOf(c.req.raw);
    if (object === null) throw fail("not_found", "no such object in this cache");
    return serveObject(c.req.raw, c.env, c.executionCtx, object);
  });

  documents.put(route, requireWrite, async (c) => {
    const request = c.req.raw;
    const object = documentKeyOf(request);
    if (object === null) throw fail("bad_request", `not a valid key; documents are stored at ${SHAPES}`);
    const encoding = contentEncoding(request, UPLOAD_ENCODINGS, "document");
    const limit = MAX_DOCUMENT_BYTES[object.kind];
    const length = requireLength(request, limit, "this kind of document is not expected to be that large");
    await putStream(c.env.CACHE, object.key, request.body, {
      length,
      contentType: contentTypeOf(object.kind),
      ...(encoding === undefined ? {} : { contentEncoding: encoding }),
    });
    return new Response(null, { status: 201 });
  });
}
