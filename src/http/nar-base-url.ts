// NAR_BASE_URL: narinfos served by the Worker point at the NAR on another host, the bucket's
// public domain (README "Reads without the Worker"), so NAR downloads never reach the
// Worker: one Worker request per substituted path instead of two.
//
// The stored narinfo says `URL: nar/<file>` (relative to the cache); the Worker answers it
// with `URL: <NAR_BASE_URL>/nar/<file>`. Signatures do not cover URL (the fingerprint is
// `1;storePath;narHash;narSize;refs`), and Nix fetches an absolute URL as it is: in Nix
// 2.8 and 2.26 HttpBinaryCacheStore::makeRequest passes a path starting with `http://`,
// `https://` or `file://` through unchanged; 2.34 resolves it against the cache's URL
// (parseURLRelative), which keeps an absolute one. Only the URL line changes; a URL that
// is not relative to the cache is left alone.

import { fail } from "../errors.ts";

/** The NAR_BASE_URL var: an http(s) URL without query or fragment; null when unset. */
export function parseNarBaseUrl(value: string | undefined): string | null {
  const text = (value ?? "").trim();
  if (text === "") return null;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw fail("misconfigured", "NAR_BASE_URL is not a URL (e.g. https://nars.example.org, the bucket's public domain)");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw fail("misconfigured", "NAR_BASE_URL must be an http(s) URL");
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw fail("misconfigured", "NAR_BASE_URL must be a plain http(s) URL, without query, fragment or credentials");
  }
  return url.href.replace(/\/+$/, "");
}

const URL_LINE = /^URL: (.*)$/m;

/**
 * The narinfo text with its relative `URL:` made absolute under `base`. Relative means
 * what the Worker stores (`nar/…`): no scheme, no leading slash.
 */
export function withNarBaseUrl(text: string, base: string): string {
  const m = URL_LINE.exec(text);
  if (m === null) return text;
  const url = m[1]!;
  if (url.startsWith("/") || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(url)) return text;
  return `${text.slice(0, m.index)}URL: ${base}/${url}${text.slice(m.index + m[0].length)}`;
}
