// Any HTTP(S) binary cache read anonymously: nix-serve, harmonia, another nix-edge-cache,
// or an S3/MinIO bucket with anonymous download (its public URL, e.g.
// `https://minio.example.com/nix-cache`). As Nix does, 403, 404 and 410 mean "absent".
// It cannot list its paths, so `--all` needs the s3:// or file:// form.
import type { Readable } from "node:stream";
import type { RetryEvent } from "../http.ts";
import { MAX_SOURCE_NARINFO_BYTES, SourceError, readBounded, relativeNarPath, type CacheSource } from "./cache-source.ts";
import { SourceHttp, errorSnippet, type SourceResponse } from "./source-http.ts";

/** Statuses Nix reads as "this cache does not have it". */
const ABSENT = new Set([403, 404, 410]);

export class HttpSource implements CacheSource {
  readonly name: string;
  readonly #base: URL;
  readonly #http: SourceHttp;

  constructor(url: URL, options: { onRetry?: (e: RetryEvent) => void } = {}) {
    this.name = String(url);
    if (url.username || url.password) {
      throw new SourceError(`${url.protocol}//…@${url.host}: credentials in the source URL are not supported`, "an HTTP source is read anonymously");
    }
    this.#base = new URL(url);
    this.#base.search = "";
    this.#base.hash = "";
    if (!this.#base.pathname.endsWith("/")) this.#base.pathname += "/";
    this.#http = new SourceHttp({ onRetry: options.onRetry });
  }

  cacheInfo(): Promise<string | null> {
    return this.#small("nix-cache-info");
  }

  narInfo(hashPart: string): Promise<string | null> {
    return this.#small(`${hashPart}.narinfo`);
  }

  async openFile(url: string): Promise<Readable> {
    if (relativeNarPath(url) === null) throw new SourceError(`${this.name}: the NAR URL ${JSON.stringify(url)} points outside the cache`);
    const target = new URL(url, this.#base);
    const res = await this.#http.get(target);
    if (res.status !== 200) throw await failure(res, target);
    return res.body;
  }

  close(): void {}

  async #small(name: string): Promise<string | null> {
    const url = new URL(name, this.#base);
    const res = await this.#http.get(url);
    if (ABSENT.has(res.status)) {
      res.body.destroy();
      return null;
    }
    if (res.status !== 200) throw await failure(res, url);
    return readBounded(res.body, MAX_SOURCE_NARINFO_BYTES, String(url));
  }
}

async function failure(res: SourceResponse, url: URL): Promise<SourceError> {
  const snippet = await errorSnippet(res);
  return new SourceError(`GET ${url}: HTTP ${res.status}${snippet ? `: ${snippet}` : ""}`);
}
