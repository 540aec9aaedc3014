// Asking a URL whether it is this cache, and saying what it is instead when it is not.
//
// `probeCache` sends `GET /_api/v1/cache` (src/api/cache-description.ts) and, only when
// that is not answered, `GET nix-cache-info` (every Nix binary cache has one) and the same
// at the server's root, to tell apart:
//   - a nix-edge-cache Worker: its description (keys, privacy, clock, what the token may do);
//   - another kind of binary cache (or an older Worker): usable by push, not by use/login;
//   - something else: a typed error whose hint says what is probably wrong (a path that is
//     not the cache's, an HTML page, a redirect to https, plain HTTP against TLS).
// Network failures that repeat (TLS, DNS) fail at once (http.ts); the probe tries twice at
// most, so a wrong URL costs a second, not five retries with backoff.
import { CACHE_DESCRIPTION_PATH, CacheDescriptionError, parseCacheDescription, type CacheDescription } from "../src/api/cache-description.ts";
import { CONTENT_TYPE } from "../src/api/media-types.ts";
import { EXIT_CACHE, UploaderError } from "./errors.ts";
import { HttpClient, type HttpResponse } from "./http.ts";

/** Attempts per probe request: one retry for a blip, not a minute of backoff. */
export const PROBE_ATTEMPTS = 2;

/** The local clock may differ from the cache's by this much before doctor and push warn. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

export type ProbeResult =
  | { kind: "nix-edge-cache"; description: CacheDescription; clockSkewMs: number }
  | { kind: "binary-cache"; note: string };

/** The URL does not answer as a binary cache; the hint says what it probably is. */
export class NotACacheError extends UploaderError {
  constructor(message: string, hint: string) {
    super(message, EXIT_CACHE, hint);
  }
}

/** A client for probing: the given credentials, few attempts. */
export function probeClient(url: string, token: string | undefined): HttpClient {
  return new HttpClient({ baseUrl: url, token, maxAttempts: PROBE_ATTEMPTS, maxSockets: 2 });
}

const REDIRECTS = [301, 302, 303, 307, 308];
const ANSWERS = [400, 401, 403, 404, 405, 406, 410, ...REDIRECTS];

/** What the URL is: this cache (with its description), another binary cache, or an error. */
export async function probeCache(http: HttpClient): Promise<ProbeResult> {
  const sent = Date.now();
  const res = await http.request({ method: "GET", path: CACHE_DESCRIPTION_PATH, accept: ANSWERS, headers: { accept: CONTENT_TYPE.json } });
  const received = Date.now();
  checkCommonMistakes(http, res, CACHE_DESCRIPTION_PATH);
  if (res.status === 200 && isJson(res)) {
    let description: CacheDescription;
    try {
      description = parseCacheDescription(JSON.parse(res.body.toString("utf8")));
    } catch (err) {
      if (!(err instanceof CacheDescriptionError) && !(err instanceof SyntaxError)) throw err;
      throw new NotACacheError(
        `${http.url(CACHE_DESCRIPTION_PATH)}: not a nix-edge-cache description (${err.message})`,
        "is the URL the cache's? A nix-edge-cache Worker answers this with its settings",
      );
    }
    // The Worker read its clock somewhere between sending and receiving.
    const clockSkewMs = description.time - (sent + received) / 2;
    return { kind: "nix-edge-cache", description, clockSkewMs };
  }
  return { kind: "binary-cache", note: await asBinaryCache(http) };
}

/** Redirects, plain HTTP to a TLS port, HTML pages: the same mistakes on every path. */
function checkCommonMistakes(http: HttpClient, res: HttpResponse, path: string): void {
  const url = http.url(path);
  if (REDIRECTS.includes(res.status)) {
    const location = res.headers.location ?? "";
    let target: URL | undefined;
    try {
      target = new URL(location, url);
    } catch {
      target = undefined;
    }
    const base = target && target.href.endsWith(path) ? target.href.slice(0, -path.length) : undefined;
    throw new NotACacheError(
      `${url}: redirected (HTTP ${res.status}) to ${location || "nowhere"}`,
      base
        ? `use the URL it redirects to: ${base.replace(/\/$/, "")} (Nix and the uploader do not follow redirects for uploads)`
        : "give the cache's own URL, not one that redirects",
    );
  }
  const text = res.body.toString("utf8", 0, Math.min(res.body.length, 2000));
  if (res.status === 400 && /plain HTTP request was sent to HTTPS port/i.test(text)) {
    throw new NotACacheError(`${url}: the server expects TLS on this port`, `use https://${url.host}${http.baseUrl.pathname.replace(/\/$/, "")}`);
  }
}

function isJson(res: HttpResponse): boolean {
  return /^application\/json\b/i.test(String(res.headers["content-type"] ?? ""));
}

function isHtml(res: HttpResponse): boolean {
  return /^text\/html\b/i.test(String(res.headers["content-type"] ?? "")) || /^\s*<(!doctype|html)/i.test(res.body.toString("utf8", 0, 200));
}

/**
 * After /_api/v1/cache was not answered: is this another binary cache (nix-cache-info
 * with a StoreDir)? Returns a note saying what it is; throws NotACacheError otherwise.
 */
async function asBinaryCache(http: HttpClient): Promise<string> {
  const info = await http.request({ method: "GET", path: "nix-cache-info", accept: ANSWERS });
  checkCommonMistakes(http, info, "nix-cache-info");
  const text = info.body.toString("utf8", 0, Math.min(info.body.length, 4000));
  if (info.status === 200 && /^StoreDir: \S+$/m.test(text)) {
    return "a Nix binary cache, but not a nix-edge-cache Worker (or one older than GET /_api/v1/cache)";
  }
  const here = http.url("nix-cache-info");
  if (info.status === 200 && isHtml(info)) {
    throw new NotACacheError(`${here}: the server answers with an HTML page, not a binary cache`, await elsewhereHint(http, "is this the cache's URL? A cache answers nix-cache-info with a StoreDir line"));
  }
  if (info.status === 401 || info.status === 403) {
    throw new NotACacheError(`${here}: HTTP ${info.status}`, "a nix-edge-cache answers nix-cache-info without a token: is something in front of it asking for one?");
  }
  throw new NotACacheError(
    `${here}: HTTP ${info.status}${info.status === 200 ? " without a StoreDir line" : ""}: no Nix binary cache at this URL`,
    await elsewhereHint(http, "check the URL: a cache at https://host/prefix answers https://host/prefix/nix-cache-info"),
  );
}

/** When the URL has a path, is there a cache at the server's root instead? */
async function elsewhereHint(http: HttpClient, otherwise: string): Promise<string> {
  if (http.baseUrl.pathname === "/") return otherwise;
  const root = new HttpClient({ baseUrl: http.baseUrl.origin, maxAttempts: 1, maxSockets: 1 });
  try {
    const res = await root.request({ method: "GET", path: "nix-cache-info", accept: ANSWERS });
    if (res.status === 200 && /^StoreDir: \S+$/m.test(res.body.toString("utf8"))) {
      return `there is a cache at ${http.baseUrl.origin}: did you mean that URL (without ${http.baseUrl.pathname.replace(/\/$/, "")})?`;
    }
  } catch {
    // the root does not answer either: nothing better to say
  } finally {
    root.close();
  }
  return otherwise;
}
