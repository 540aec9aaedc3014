// The Content-Types of the cache's HTTP API, as Nix and the uploader send them and the
// Worker serves and stores them (src/http/representation.ts picks one per kind of object).
// Nix itself ignores them on reads; `nix copy` sends the NAR and narinfo ones on uploads
// (PROTOCOL.md §5.6), and so does the uploader (uploader/remote-cache.ts).

export const CONTENT_TYPE = {
  cacheInfo: "text/x-nix-cache-info",
  narinfo: "text/x-nix-narinfo",
  nar: "application/x-nix-nar",
  json: "application/json",
  log: "text/plain; charset=utf-8",
} as const;
