// An S3 bucket read through the S3 API: `s3://bucket?endpoint=…&profile=…&region=…`, with
// the meaning Nix's S3 store gives each parameter (libstore/s3-url.cc, s3-binary-cache-store):
//   region            the signing region, default us-east-1;
//   endpoint          an S3-compatible server (MinIO, R2, …) as a URL
//                     (`http://localhost:9000`) or, as older Nix took it, a bare host[:port];
//                     without it, AWS: https://<bucket>.s3.<region>.amazonaws.com;
//   scheme            http or https for a bare endpoint (deprecated by Nix), default https;
//   profile           the AWS profile holding the credentials (aws-credentials.ts);
//   addressing-style  auto (default: virtual-hosted on AWS, path-style with an endpoint,
//                     path-style for bucket names with dots), path or virtual.
// Write-side parameters of the same URL (compression=, secret-key=, …) are accepted and
// ignored, so the URL that `nix copy --to` used can be pasted as it is.
//
// Requests are signed with SigV4 by aws4fetch (a small, dependency-free signer), or sent
// unsigned when no credentials are found (a bucket with anonymous download). Objects are
// the layout `nix copy --to s3://` writes: `nix-cache-info`, `<hash>.narinfo` and
// `nar/<filehash>.nar.<ext>` at the bucket's root; `--all` lists the narinfos with
// ListObjectsV2 (a thousand keys a page, only the root's keys).
import { AwsClient } from "aws4fetch";
import type { Readable } from "node:stream";
import type { RetryEvent } from "../http.ts";
import { UsageError } from "../errors.ts";
import { resolveAwsCredentials, type AwsCredentials } from "./aws-credentials.ts";
import { MAX_SOURCE_NARINFO_BYTES, NARINFO_FILE, SourceError, readBounded, relativeNarPath, type CacheSource } from "./cache-source.ts";
import { SourceHttp, errorSnippet, type SourceResponse } from "./source-http.ts";

/** Nix's default region for S3 stores. */
export const DEFAULT_S3_REGION = "us-east-1";

/** Parameters of Nix's store URLs that only matter when writing (or to Nix itself). */
const IGNORED_PARAMETERS = new Set([
  "compression", "compression-level", "parallel-compression", "secret-key", "secret-keys", "write-nar-listing",
  "narinfo-compression", "ls-compression", "log-compression", "multipart-upload", "multipart-chunk-size",
  "multipart-threshold", "storage-class", "buffer-size", "want-mass-query", "priority", "trusted",
  "index-debug-info", "local-nar-cache", "path-info-cache-size", "system-features", "versionId",
]);

export interface S3Location {
  bucket: string;
  region: string;
  profile?: string | undefined;
  /** The bucket's root, ending in `/`: objects are `new URL(key, root)`. */
  root: URL;
  /** The URL ListObjectsV2 is asked at (the bucket, without a trailing slash for path-style). */
  listUrl: URL;
}

/** Parses an `s3://` store URL as Nix does; UsageError names what is wrong. */
export function parseS3Url(raw: string): S3Location {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`"${raw}" is not an s3:// URL`, "use s3://bucket?endpoint=https://host&profile=name&region=us-east-1");
  }
  const bucket = url.hostname;
  if (url.protocol !== "s3:" || bucket === "") throw new UsageError(`"${raw}" has no bucket name`, "use s3://bucket?…");
  if (url.pathname !== "" && url.pathname !== "/") {
    throw new UsageError(`"${raw}": an S3 store is a whole bucket, s3://bucket?…, without a path`);
  }
  const params = url.searchParams;
  for (const key of params.keys()) {
    if (!["region", "endpoint", "scheme", "profile", "addressing-style"].includes(key) && !IGNORED_PARAMETERS.has(key)) {
      throw new UsageError(`unknown parameter "${key}" in ${raw}`, "an s3:// source takes region, endpoint, scheme, profile and addressing-style");
    }
  }
  const region = params.get("region") || DEFAULT_S3_REGION;
  const scheme = params.get("scheme") || "https";
  if (scheme !== "http" && scheme !== "https") throw new UsageError(`scheme=${scheme} in ${raw}: use http or https`);
  const style = params.get("addressing-style") || "auto";
  if (!["auto", "path", "virtual"].includes(style)) {
    throw new UsageError(`addressing-style=${style} in ${raw}: use auto, path or virtual`);
  }
  const dotted = bucket.includes(".");
  if (style === "virtual" && dotted) {
    throw new UsageError(`bucket name "${bucket}" contains a dot, which virtual-hosted-style addressing cannot use`, "use addressing-style=path or auto");
  }
  const endpointParam = params.get("endpoint");
  let endpoint: URL;
  let virtual: boolean;
  if (endpointParam) {
    try {
      endpoint = new URL(endpointParam.includes("://") ? endpointParam : `${scheme}://${endpointParam}`);
    } catch {
      throw new UsageError(`endpoint=${endpointParam} in ${raw} is not a URL or host[:port]`);
    }
    if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") throw new UsageError(`endpoint=${endpointParam}: use an http or https URL`);
    virtual = style === "virtual";
  } else {
    endpoint = new URL(`${scheme}://s3.${region}.amazonaws.com`);
    virtual = style !== "path" && !dotted;
  }
  const root = new URL(endpoint);
  root.search = "";
  root.hash = "";
  if (virtual) root.hostname = `${bucket}.${endpoint.hostname}`;
  const prefix = root.pathname.replace(/\/+$/, "");
  root.pathname = virtual ? `${prefix}/` : `${prefix}/${encodeURIComponent(bucket)}/`;
  const listUrl = new URL(root);
  if (!virtual) listUrl.pathname = listUrl.pathname.replace(/\/$/, "");
  return { bucket, region, profile: params.get("profile") || undefined, root, listUrl };
}

/** What a S3 error answer says: its Code and Message elements. */
function s3ErrorCode(snippet: string): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(snippet)?.[1];
}

export class S3Source implements CacheSource {
  readonly name: string;
  readonly location: S3Location;
  readonly credentials: AwsCredentials | null;
  readonly #http: SourceHttp;

  private constructor(name: string, location: S3Location, credentials: AwsCredentials | null, onRetry?: (e: RetryEvent) => void) {
    this.name = name;
    this.location = location;
    this.credentials = credentials;
    let sign: ((url: URL) => Promise<Request>) | undefined;
    if (credentials) {
      // Retries are the uploader's (SourceHttp), so aws4fetch only signs.
      const aws = new AwsClient({
        accessKeyId: credentials.accessKeyId,
        secretAccessKey: credentials.secretAccessKey,
        ...(credentials.sessionToken ? { sessionToken: credentials.sessionToken } : {}),
        service: "s3",
        region: location.region,
        retries: 0,
      });
      sign = (url) => aws.sign(String(url), { method: "GET" });
    }
    this.#http = new SourceHttp({ sign, onRetry });
  }

  static async open(raw: string, options: { env?: NodeJS.ProcessEnv; home?: string; onRetry?: (e: RetryEvent) => void } = {}): Promise<S3Source> {
    const location = parseS3Url(raw);
    const credentials = await resolveAwsCredentials({ profile: location.profile, ...(options.env ? { env: options.env } : {}), ...(options.home ? { home: options.home } : {}) });
    return new S3Source(raw, location, credentials, options.onRetry);
  }

  /** nix-cache-info; every refusal here is an error, so bad credentials fail at once. */
  async cacheInfo(): Promise<string | null> {
    const url = new URL("nix-cache-info", this.location.root);
    const res = await this.#http.get(url);
    if (res.status === 404) {
      res.body.destroy();
      return null;
    }
    if (res.status !== 200) throw await this.#failure(res, url);
    return readBounded(res.body, MAX_SOURCE_NARINFO_BYTES, String(url));
  }

  async narInfo(hashPart: string): Promise<string | null> {
    const url = new URL(`${hashPart}.narinfo`, this.location.root);
    const res = await this.#http.get(url);
    if (res.status === 404) {
      res.body.destroy();
      return null;
    }
    if (res.status === 403) {
      // Without s3:ListBucket, S3 answers 403 AccessDenied for a missing key; a refused
      // signature is an error.
      const snippet = await errorSnippet(res);
      if (s3ErrorCode(snippet) === "AccessDenied") return null;
      throw this.#refused(url, res.status, snippet);
    }
    if (res.status !== 200) throw await this.#failure(res, url);
    return readBounded(res.body, MAX_SOURCE_NARINFO_BYTES, String(url));
  }

  async openFile(narUrl: string): Promise<Readable> {
    const rel = relativeNarPath(narUrl);
    if (rel === null) throw new SourceError(`${this.name}: the NAR URL ${JSON.stringify(narUrl)} points outside the bucket`);
    const url = new URL(rel, this.location.root);
    const res = await this.#http.get(url);
    if (res.status !== 200) throw await this.#failure(res, url);
    return res.body;
  }

  async *listNarInfos(): AsyncIterable<string> {
    let token: string | undefined;
    for (;;) {
      const url = new URL(this.location.listUrl);
      url.searchParams.set("list-type", "2");
      url.searchParams.set("delimiter", "/");
      if (token) url.searchParams.set("continuation-token", token);
      const res = await this.#http.get(url);
      if (res.status !== 200) throw await this.#failure(res, url);
      const xml = await res.text();
      for (const m of xml.matchAll(/<Key>([^<]*)<\/Key>/g)) {
        const name = NARINFO_FILE.exec(decodeXml(m[1]!));
        if (name) yield name[1]!;
      }
      const truncated = /<IsTruncated>true<\/IsTruncated>/.test(xml);
      token = /<NextContinuationToken>([^<]*)<\/NextContinuationToken>/.exec(xml)?.[1];
      if (!truncated || !token) return;
      token = decodeXml(token);
    }
  }

  close(): void {}

  async #failure(res: SourceResponse, url: URL): Promise<SourceError> {
    const snippet = await errorSnippet(res);
    return this.#refused(url, res.status, snippet);
  }

  #refused(url: URL, status: number, snippet: string): SourceError {
    const code = s3ErrorCode(snippet);
    const message = /<Message>([^<]*)<\/Message>/.exec(snippet)?.[1];
    const detail = code ? `${code}${message ? `: ${decodeXml(message)}` : ""}` : snippet;
    let hint: string | undefined;
    if (status === 403 || status === 401) {
      hint = this.credentials
        ? `the request was signed with credentials from ${this.credentials.from} for region ${this.location.region}: check them, and region= (the bucket's region)`
        : "no AWS credentials were found, so the request was anonymous: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile with profile=";
    }
    return new SourceError(`GET ${url}: HTTP ${status}${detail ? ` (${detail})` : ""}`, hint);
  }
}

function decodeXml(s: string): string {
  return s
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCodePoint(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_, n: string) => String.fromCodePoint(parseInt(n, 16)))
    .replace(/&amp;/g, "&");
}
