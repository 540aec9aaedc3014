// The `.ls` listing of a NAR (PROTOCOL §5.1): the tree of names, types, sizes and offsets
// Nix writes next to a NAR with `?write-nar-listing=1`, in Nix 2.8's shape. readNar
// (nar-reader.ts) builds it while it validates; formatNarListing writes it byte for byte as
// Nix does.

import { compareBytes, utf8 } from "./encoding.ts";

/** A node of the `.ls` listing, in Nix 2.8's shape (PROTOCOL §5.1). */
export type NarListingNode =
  | {
      type: "regular";
      size: number;
      /** Present (true) only for executables, as Nix 2.8 writes it. */
      executable?: true;
      /** Offset of the contents in the uncompressed NAR. */
      narOffset?: number;
    }
  | { type: "symlink"; target: string }
  | { type: "directory"; entries: Record<string, NarListingNode> };

/** The `.ls` document: `{"version":1,"root":{…}}`. */
export interface NarListing {
  version: 1;
  root: NarListingNode;
}

// JSON strings escaped exactly as Nix 2.8's JSON writer does it (observed): `"`, `\`, \n,
// \r, \t as two-character escapes, other control characters as \u00xx, everything else
// verbatim (UTF-8). JSON.stringify would write \b and \f instead of \u0008 and \u000c.
const JSON_ESCAPED = /["\\\x00-\x1f]/g;
const JSON_SHORT_ESCAPES: Record<string, string> = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function jsonString(s: string): string {
  return `"${s.replace(JSON_ESCAPED, (c) => JSON_SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)}"`;
}

function listingNodeJson(n: NarListingNode): string {
  switch (n.type) {
    case "regular":
      return (
        `{"type":"regular","size":${n.size}` +
        (n.executable ? `,"executable":true` : "") +
        (n.narOffset !== undefined ? `,"narOffset":${n.narOffset}` : "") +
        "}"
      );
    case "symlink":
      return `{"type":"symlink","target":${jsonString(n.target)}}`;
    case "directory": {
      // Entries in NAR order (UTF-8 bytes), whatever order the object's keys have.
      const names = Object.keys(n.entries)
        .map((name) => [name, utf8(name)] as const)
        .sort((a, b) => compareBytes(a[1], b[1]));
      const body = names.map(([name]) => `${jsonString(name)}:${listingNodeJson(n.entries[name]!)}`).join(",");
      return `{"type":"directory","entries":{${body}}}`;
    }
  }
}

/**
 * The `.ls` JSON byte for byte as Nix 2.8 writes it (`nix copy ?write-nar-listing=1`):
 * `{"version":1,"root":{…}}`, compact, entries in NAR order, Nix's string escaping.
 */
export function formatNarListing(l: NarListing): string {
  return `{"version":${l.version},"root":${listingNodeJson(l.root)}}`;
}
