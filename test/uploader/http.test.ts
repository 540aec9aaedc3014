// The HTTP client against a real HTTP server on loopback that misbehaves on cue: retries
// with backoff on 5xx, 429 (honouring Retry-After) and dropped connections, typed errors
// with hints for 401/403/413, exact Content-Length on streamed bodies, Bearer auth.
import { Readable } from "node:stream";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, test } from "vitest";
import { AuthError, HttpError, NetworkError, TooLargeError, UsageError } from "../../uploader/errors.ts";
import { HttpClient, parseCacheUrl, retryAfterMs, type RetryEvent } from "../../uploader/http.ts";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

type Handler = (req: Seen, res: ServerResponse, n: number) => void;

let server: Server | undefined;

/** Starts a server whose n-th request (0-based) is answered by `handler`. */
async function serve(handler: Handler): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) };
      seen.push(s);
      handler(s, res, seen.length - 1);
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, seen };
}

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

const client = (url: string, extra: Partial<ConstructorParameters<typeof HttpClient>[0]> = {}): HttpClient =>
  new HttpClient({ baseUrl: url, token: "tok", retryBaseMs: 5, ...extra });

describe("retries", () => {
  test("5xx answers are retried until one succeeds, each retry reported", async () => {
    const { url, seen } = await serve((_, res, n) => {
      res.writeHead(n < 2 ? 503 : 200).end(n < 2 ? "busy" : "ok");
    });
    const events: RetryEvent[] = [];
    const http = client(url, { onRetry: (e) => events.push(e) });
    const res = await http.request({ method: "GET", path: "x.narinfo" });
    http.close();
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe("ok");
    expect(seen).toHaveLength(3);
    expect(events.map((e) => [e.attempt, e.reason])).toEqual([
      [1, "HTTP 503"],
      [2, "HTTP 503"],
    ]);
  });

  test("429 waits as long as Retry-After says", async () => {
    const { url, seen } = await serve((_, res, n) => {
      if (n === 0) res.writeHead(429, { "retry-after": "1" }).end();
      else res.writeHead(204).end();
    });
    const http = client(url);
    const start = performance.now();
    await http.request({ method: "HEAD", path: "nar/x.nar" });
    http.close();
    expect(seen).toHaveLength(2);
    expect(performance.now() - start).toBeGreaterThanOrEqual(950);
  });

  test("a body is re-sent in full on each attempt, with an exact Content-Length", async () => {
    const payload = Buffer.alloc(3 << 20, 7);
    const { url, seen } = await serve((_, res, n) => res.writeHead(n === 0 ? 502 : 200).end());
    const http = client(url);
    let opened = 0;
    await http.request({
      method: "PUT",
      path: "nar/abc.nar.zst",
      headers: { "content-type": "application/x-nix-nar" },
      body: {
        length: payload.length,
        open: () => {
          opened++;
          // Uneven chunks, as a file stream would give them.
          return Readable.from([payload.subarray(0, 1000), payload.subarray(1000)]);
        },
      },
    });
    http.close();
    expect(opened).toBe(2);
    for (const s of seen) {
      expect(s.headers["content-length"]).toBe(String(payload.length));
      expect(s.headers["transfer-encoding"]).toBeUndefined();
      expect(s.headers.authorization).toBe("Bearer tok");
      expect(s.headers["content-type"]).toBe("application/x-nix-nar");
      expect(s.body.equals(payload)).toBe(true);
    }
  });

  test("dropped connections are retried", async () => {
    const { url, seen } = await serve((_, res, n) => {
      if (n === 0) res.socket?.destroy();
      else res.writeHead(200).end("fine");
    });
    const http = client(url);
    const res = await http.request({ method: "GET", path: "nix-cache-info" });
    http.close();
    expect(res.body.toString()).toBe("fine");
    expect(seen).toHaveLength(2);
  });

  test("an unreachable cache is a NetworkError after the last attempt", async () => {
    const { url } = await serve(() => {});
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    server = undefined;
    const http = client(url, { maxAttempts: 3 });
    const err = await http.request({ method: "GET", path: "nix-cache-info" }).catch((e: unknown) => e);
    http.close();
    expect(err).toBeInstanceOf(NetworkError);
    expect((err as Error).message).toMatch(/connection refused.*after 3 attempts/);
    expect((err as NetworkError).exitCode).toBe(4);
  });

  test("Retry-After takes seconds or an HTTP date, capped at 30 s", () => {
    expect(retryAfterMs("2")).toBe(2000);
    expect(retryAfterMs("86400")).toBe(30_000);
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(retryAfterMs("Thu, 01 Jan 2026 00:00:05 GMT", now)).toBe(5000);
    expect(retryAfterMs("Wed, 31 Dec 2025 00:00:00 GMT", now)).toBe(0);
    expect(retryAfterMs("soon")).toBeUndefined();
    expect(retryAfterMs(undefined)).toBeUndefined();
  });
});

describe("errors that retrying cannot fix", () => {
  test("401 is an AuthError, not retried, with a hint about the token", async () => {
    const { url, seen } = await serve((_, res) => res.writeHead(401, { "content-type": "application/json" }).end('{"error":"bad token"}'));
    const http = client(url);
    const err = await http.request({ method: "POST", path: "_api/v1/missing" }).catch((e: unknown) => e);
    http.close();
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).status).toBe(401);
    expect((err as AuthError).message).toContain("bad token");
    expect((err as AuthError).hint).toContain("NIX_CACHE_TOKEN");
    expect(seen).toHaveLength(1);
  });

  test("without a token no Authorization header is sent, and the hint says so", async () => {
    const { url, seen } = await serve((_, res) => res.writeHead(401).end());
    const http = new HttpClient({ baseUrl: url });
    const err = await http.request({ method: "GET", path: "x" }).catch((e: unknown) => e);
    http.close();
    expect(seen[0]!.headers.authorization).toBeUndefined();
    expect((err as AuthError).hint).toMatch(/^no token given/);
  });

  test("403 is an AuthError saying the token may not write", async () => {
    const { url } = await serve((_, res) => res.writeHead(403).end());
    const http = client(url);
    const err = await http.request({ method: "PUT", path: "x.narinfo", body: { length: 1, open: () => Buffer.from("x") } }).catch((e: unknown) => e);
    http.close();
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).hint).toContain("write token");
  });

  test("413 is a TooLargeError suggesting stronger compression", async () => {
    const { url } = await serve((_, res) => res.writeHead(413).end("Payload Too Large"));
    const http = client(url);
    const err = await http.request({ method: "PUT", path: "nar/x.nar", body: { length: 1, open: () => Buffer.from("x") } }).catch((e: unknown) => e);
    http.close();
    expect(err).toBeInstanceOf(TooLargeError);
    expect((err as TooLargeError).hint).toContain("--compression xz");
  });

  test("other 4xx answers are HttpErrors quoting the server's explanation", async () => {
    const { url, seen } = await serve((_, res) =>
      res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: "NarHash does not match the stored NAR" })),
    );
    const http = client(url);
    const err = await http.request({ method: "PUT", path: "x.narinfo", body: { length: 1, open: () => Buffer.from("x") } }).catch((e: unknown) => e);
    http.close();
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).message).toBe(`PUT ${url}x.narinfo: HTTP 400: NarHash does not match the stored NAR`);
    expect(seen).toHaveLength(1);
  });

  test("an HTML error page is named, not quoted", async () => {
    const { url } = await serve((_, res) => {
      res.writeHead(404, { "content-type": "text/html" }).end("<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>");
    });
    const http = client(url);
    const err = await http.request({ method: "PUT", path: "x.narinfo", body: { length: 1, open: () => Buffer.from("x") } }).catch((e: unknown) => e);
    http.close();
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).message).toBe(`PUT ${url}x.narinfo: HTTP 404: an HTML page ("404 Not Found"), not a cache's answer: is the URL the cache's?`);
  });

  test("TLS against a plain HTTP server and an unknown host fail at once, saying what to do", async () => {
    const { url, seen } = await serve((_, res) => res.end("ok"));
    const tls = url.replace("http:", "https:");
    const events: RetryEvent[] = [];
    const https = client(tls, { onRetry: (e) => events.push(e) });
    const err = await https.request({ method: "GET", path: "nix-cache-info" }).catch((e: unknown) => e);
    https.close();
    expect(err).toBeInstanceOf(NetworkError);
    expect((err as NetworkError).hint).toBe(`the server does not speak TLS on this port: if the cache is served over plain HTTP, use ${url.replace(/\/$/, "")}`);
    expect(events).toEqual([]);
    expect(seen).toEqual([]);
    const dns = client("http://no-such-host.invalid/", { onRetry: (e) => events.push(e) });
    const err2 = await dns.request({ method: "GET", path: "nix-cache-info" }).catch((e: unknown) => e);
    dns.close();
    expect((err2 as NetworkError).hint).toBe("no host named no-such-host.invalid: check the cache URL's spelling");
    expect(events).toEqual([]);
  });

  test("statuses listed in `accept` are answers, not errors", async () => {
    const { url } = await serve((_, res) => res.writeHead(404).end());
    const http = client(url);
    const res = await http.request({ method: "HEAD", path: "nar/x.nar", accept: [404] });
    http.close();
    expect(res.status).toBe(404);
  });
});

describe("cache URLs", () => {
  test("a path prefix is kept, with or without a trailing slash", async () => {
    const { url, seen } = await serve((_, res) => res.writeHead(200).end());
    for (const base of [`${url}prefix`, `${url}prefix/`]) {
      const http = client(base);
      await http.request({ method: "GET", path: "abc.narinfo" });
      http.close();
    }
    expect(seen.map((s) => s.url)).toEqual(["/prefix/abc.narinfo", "/prefix/abc.narinfo"]);
  });

  test("non-HTTP URLs and garbage are usage errors", () => {
    expect(() => parseCacheUrl("file:///tmp/cache")).toThrow(UsageError);
    expect(() => parseCacheUrl("cache.example.org")).toThrow(UsageError);
    expect(() => parseCacheUrl("https://cache.example.org/?x=1")).toThrow(UsageError);
  });
});
