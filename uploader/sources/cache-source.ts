// A binary cache that `uploader import` reads from: a directory (`file://`), any HTTP(S)
// binary cache (nix-serve, harmonia, an S3/MinIO bucket with anonymous download), or an
// S3 bucket through the S3 API (`s3://`). All three hold the same layout, the one
// `nix copy --to` writes: `nix-cache-info`, `<hash>.narinfo`, and NAR files at the
// narinfo's URL (`nar/<filehash>.nar.xz`), relative to the cache's root.
//
// A source answers "absent" with null (as Nix reads 403, 404 and 410), and throws
// SourceError when it cannot be read at all; NAR files come as streams, never in memory.
import type { Readable } from "node:stream";
import { MAX_NARINFO_LENGTH } from "../../src/nix/narinfo.ts";
import { EXIT_LOCAL, UploaderError } from "../errors.ts";

export interface CacheSource {
  /** The source as the user gave it (no credentials), for messages. */
  readonly name: string;
  /** `nix-cache-info`, or null when the source has none. */
  cacheInfo(): Promise<string | null>;
  /** The narinfo text for a store path's hash part, or null when the source lacks it. */
  narInfo(hashPart: string): Promise<string | null>;
  /** A NAR file as stored, by its narinfo's URL (relative to the cache's root). */
  openFile(url: string): Promise<Readable>;
  /**
   * The hash parts of every narinfo the source holds (`--all`); absent when the source
   * cannot list its objects (a plain HTTP cache).
   */
  listNarInfos?: (() => AsyncIterable<string>) | undefined;
  /** Releases connections. */
  close(): void;
}

/** The source could not be read (missing, unreachable, credentials refused, malformed). */
export class SourceError extends UploaderError {
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super(message, EXIT_LOCAL, hint, options);
  }
}

/** A narinfo file name: the 32-character nix32 hash part, then `.narinfo`. */
export const NARINFO_FILE = /^([0-9abcdfghijklmnpqrsvwxyz]{32})\.narinfo$/;

/**
 * The largest narinfo read from a source: the core's limit (what the Worker parses), so a
 * hostile or broken source cannot make the uploader buffer more.
 */
export const MAX_SOURCE_NARINFO_BYTES = MAX_NARINFO_LENGTH;

/** Reads a small document from a byte stream, refusing more than `limit` bytes. */
export async function readBounded(body: AsyncIterable<Uint8Array>, limit: number, what: string): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new SourceError(`${what} is larger than ${limit} bytes: not a narinfo`);
    chunks.push(chunk);
  }
  return new TextDecoder("utf-8", { fatal: false }).decode(Buffer.concat(chunks));
}

/**
 * A narinfo's URL as a path below the cache's root: relative, without `..` or a query
 * (harmonia writes `nar/<hash>.nar?hash=…`: the query is kept for HTTP sources by the
 * caller). Null when it points outside the cache.
 */
export function relativeNarPath(url: string): string | null {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith("/")) return null;
  const path = url.split(/[?#]/, 1)[0]!;
  if (path === "" || path.split("/").some((seg) => seg === ".." || seg === "." || seg === "")) return null;
  return path;
}
