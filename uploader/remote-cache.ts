// The cache's HTTP API as the uploader uses it: which paths are missing, NAR and narinfo
// uploads, and narinfo reads. URL layout and content types follow what `nix copy` sends
// (PROTOCOL.md §5.6); the batch query is the Worker's own `POST /_api/v1/missing`. Limits,
// types and content types come from the contract the Worker shares (src/api/).
import type { Readable } from "node:stream";
import { HttpError, UploaderError, EXIT_CACHE } from "./errors.ts";
import { mapConcurrent } from "../src/concurrency.ts";
import type { HttpClient } from "./http.ts";
import { MAX_MISSING_BATCH, MISSING_PATH, parseMissingAnswer, type MissingAnswer, type MissingRequest } from "../src/api/missing.ts";
import { CONTENT_TYPE } from "../src/api/media-types.ts";

/** Missing queries in flight at once: enough to hide latency, few enough to be polite. */
const MISSING_CONCURRENCY = 4;
/**
 * Narinfo HEADs in flight at once when the cache has no batch endpoint (a plain binary
 * cache such as another nix-serve): one request per path, so keep many going.
 */
const HEAD_CONCURRENCY = 16;

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
    for (let i = 0; i < hashParts.length; i += MAX_MISSING_BATCH) chunks.push(hashParts.slice(i, i + MAX_MISSING_BATCH));
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
      headers: { "content-type": CONTENT_TYPE.nar },
      body: { length, open },
    });
  }

  async putNarInfo(hashPart: string, text: string): Promise<void> {
    const bytes = Buffer.from(text, "utf8");
    await this.http.request({
      method: "PUT",
      path: `${hashPart}.narinfo`,
      headers: { "content-type": CONTENT_TYPE.narinfo },
      body: { length: bytes.length, open: () => bytes },
    });
  }

  /** The narinfo text, or null when the cache does not have it. */
  async getNarInfo(hashPart: string): Promise<string | null> {
    const res = await this.http.request({ method: "GET", path: `${hashPart}.narinfo`, accept: [404] });
    return res.status === 404 ? null : res.body.toString("utf8");
  }

  /**
   * The missing ones among `hashes` (one batch). While the cache's index is being adopted,
   * an answer may leave some "unchecked" (src/api/missing.ts): those are asked again until
   * every hash is settled; each request looks some up and moves the adoption on. Should a
   * cache make no progress, the unsettled ones count as missing (uploading a path the cache
   * has is harmless).
   */
  async #missingBatch(hashes: string[]): Promise<string[]> {
    const missing: string[] = [];
    let ask = hashes;
    for (;;) {
      const answer = await this.#askMissing(ask);
      const asked = new Set(ask);
      const unchecked = new Set(answer.unchecked.filter((h) => asked.has(h)));
      const settled = answer.missing.filter((h) => asked.has(h) && !unchecked.has(h));
      if (unchecked.size === 0 || unchecked.size === ask.length) return [...missing, ...settled, ...unchecked];
      missing.push(...settled);
      ask = ask.filter((h) => unchecked.has(h));
    }
  }

  async #askMissing(hashes: string[]): Promise<MissingAnswer> {
    const body = Buffer.from(JSON.stringify({ hashes } satisfies MissingRequest), "utf8");
    const res = await this.http.request({
      method: "POST",
      path: MISSING_PATH,
      headers: { "content-type": CONTENT_TYPE.json },
      body: { length: body.length, open: () => body },
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body.toString("utf8"));
    } catch {
      parsed = undefined;
    }
    const answer = parseMissingAnswer(parsed);
    if (answer === null) {
      throw new UploaderError(
        `${this.http.url(MISSING_PATH)}: unexpected answer (expected {"missing": [...]})`,
        EXIT_CACHE,
        "is --cache pointing at a nix-edge-cache Worker?",
      );
    }
    return answer;
  }

  async #missingByHead(hashParts: readonly string[]): Promise<Set<string>> {
    const missing = new Set<string>();
    await mapConcurrent(hashParts, HEAD_CONCURRENCY, async (hash) => {
      if (!(await this.has(`${hash}.narinfo`))) missing.add(hash);
    });
    return missing;
  }
}
