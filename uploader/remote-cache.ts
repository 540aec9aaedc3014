// The cache's HTTP API as the uploader uses it: which paths are missing, NAR and narinfo
// uploads, and narinfo reads. URL layout and content types follow what `nix copy` sends
// (PROTOCOL.md §5.6); the batch query is the Worker's own `POST /_api/v1/missing`.
import type { Readable } from "node:stream";
import { HttpError, UploaderError, EXIT_CACHE } from "./errors.ts";
import { mapConcurrent } from "../src/concurrency.ts";
import type { HttpClient } from "./http.ts";

/** The Worker answers at most this many hashes per missing query (its MAX_MISSING_BATCH). */
export const MISSING_BATCH = 500;
/** Missing queries in flight at once: enough to hide latency, few enough to be polite. */
const MISSING_CONCURRENCY = 4;
/**
 * Narinfo HEADs in flight at once when the cache has no batch endpoint (a plain binary
 * cache such as another nix-serve): one request per path, so keep many going.
 */
const HEAD_CONCURRENCY = 16;

const NAR_CONTENT_TYPE = "application/x-nix-nar";
const NARINFO_CONTENT_TYPE = "text/x-nix-narinfo";

export class RemoteCache {
  readonly http: HttpClient;
  constructor(http: HttpClient) {
    this.http = http;
  }

  /**
   * The subset of `hashParts` (store path hash parts) whose narinfo the cache lacks.
   * Uses the batch endpoint, chunked; falls back to one HEAD per narinfo when the server
   * does not have it (404/405), so the uploader also works against plain caches.
   */
  async missing(hashParts: readonly string[]): Promise<Set<string>> {
    const chunks: string[][] = [];
    for (let i = 0; i < hashParts.length; i += MISSING_BATCH) chunks.push(hashParts.slice(i, i + MISSING_BATCH));
    const missing = new Set<string>();
    try {
      await mapConcurrent(chunks, MISSING_CONCURRENCY, async (chunk) => {
        for (const hash of await this.#missingBatch(chunk)) missing.add(hash);
      });
    } catch (err) {
      if (err instanceof HttpError && (err.status === 404 || err.status === 405)) {
        return this.#missingByHead(hashParts);
      }
      throw err;
    }
    return missing;
  }

  /** True when the cache already has the file at `key` (e.g. `nar/<hash>.nar.zst`). */
  async has(key: string): Promise<boolean> {
    const res = await this.http.request({ method: "HEAD", path: key, accept: [404] });
    return res.status !== 404;
  }

  async putNar(key: string, length: number, open: () => Readable): Promise<void> {
    await this.http.request({
      method: "PUT",
      path: key,
      headers: { "content-type": NAR_CONTENT_TYPE },
      body: { length, open },
    });
  }

  async putNarInfo(hashPart: string, text: string): Promise<void> {
    const bytes = Buffer.from(text, "utf8");
    await this.http.request({
      method: "PUT",
      path: `${hashPart}.narinfo`,
      headers: { "content-type": NARINFO_CONTENT_TYPE },
      body: { length: bytes.length, open: () => bytes },
    });
  }

  /** The narinfo text, or null when the cache does not have it. */
  async getNarInfo(hashPart: string): Promise<string | null> {
    const res = await this.http.request({ method: "GET", path: `${hashPart}.narinfo`, accept: [404] });
    return res.status === 404 ? null : res.body.toString("utf8");
  }

  async #missingBatch(hashes: string[]): Promise<string[]> {
    const body = Buffer.from(JSON.stringify({ hashes }), "utf8");
    const res = await this.http.request({
      method: "POST",
      path: "_api/v1/missing",
      headers: { "content-type": "application/json" },
      body: { length: body.length, open: () => body },
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body.toString("utf8"));
    } catch {
      parsed = undefined;
    }
    if (
      !parsed ||
      typeof parsed !== "object" ||
      !("missing" in parsed) ||
      !Array.isArray(parsed.missing) ||
      !parsed.missing.every((h: unknown) => typeof h === "string")
    ) {
      throw new UploaderError(
        `${this.http.url("_api/v1/missing")}: unexpected answer (expected {"missing": [...]})`,
        EXIT_CACHE,
        "is --cache pointing at a nix-edge-cache Worker?",
      );
    }
    const asked = new Set(hashes);
    return (parsed.missing as string[]).filter((h) => asked.has(h));
  }

  async #missingByHead(hashParts: readonly string[]): Promise<Set<string>> {
    const missing = new Set<string>();
    await mapConcurrent(hashParts, HEAD_CONCURRENCY, async (hash) => {
      if (!(await this.has(`${hash}.narinfo`))) missing.add(hash);
    });
    return missing;
  }
}
