// Settings of upstream aggregation: AGGREGATE_UPSTREAMS, AGGREGATE_WRITE_THROUGH_KEYS, the
// daily write-through budget and the AGGREGATE_UPSTREAMS_NETRC secret; the netrc format;
// what nix-cache-info announces.
import { reset } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import type { WorkerEnv } from "../../src/env.ts";
import { basicAuthorization, netrcEntryFor, NetrcError, parseNetrc } from "../../src/upstream/netrc.ts";
import {
  aggregatedUpstreams, DEFAULT_WRITE_THROUGH_DAILY_BYTES, DEFAULT_WRITE_THROUGH_DAILY_OBJECTS, MAX_AGGREGATE_UPSTREAMS, parseAggregation,
  referenceCaches, writeThroughEnabled,
} from "../../src/upstream/settings.ts";
import { AppError } from "../../src/errors.ts";
import { callWith, errorOf, TEST_PUBLIC_KEY_TEXT } from "../helpers/worker.ts";

afterEach(() => reset());

function envWith(overrides: Partial<Record<string, string>>): WorkerEnv {
  return { ...env, ...overrides } as WorkerEnv;
}

function misconfiguration(overrides: Partial<Record<string, string>>): string {
  try {
    parseAggregation(envWith(overrides));
  } catch (e) {
    if (e instanceof AppError && e.kind === "misconfigured") return e.message;
    throw e;
  }
  throw new Error("no misconfiguration reported");
}

describe("AGGREGATE_UPSTREAMS", () => {
  it("is off by default: no upstreams, no write-through", () => {
    const a = parseAggregation(envWith({}));
    expect(a.upstreams).toEqual([]);
    expect(writeThroughEnabled(a)).toBe(false);
  });

  it("keeps the configured order and names each upstream by host[:port] and base path", () => {
    const a = parseAggregation(
      envWith({ AGGREGATE_UPSTREAMS: " https://cache.nixos.org/  http://127.0.0.1:8080\nhttps://example.com/cache/sub/ https://[::1]:9000 " }),
    );
    expect(a.upstreams.map((u) => [u.index, u.url, u.id])).toEqual([
      [0, "https://cache.nixos.org", "cache.nixos.org"],
      [1, "http://127.0.0.1:8080", "127.0.0.1:8080"],
      [2, "https://example.com/cache/sub", "example.com/cache/sub"],
      [3, "https://[::1]:9000", "%5B::1%5D:9000"],
    ]);
    expect(a.upstreams.every((u) => u.authorization === null)).toBe(true);
  });

  it("gives another configuration another fingerprint, so memos of one never apply to the other", () => {
    const one = parseAggregation(envWith({ AGGREGATE_UPSTREAMS: "https://a.example https://b.example" }));
    const swapped = parseAggregation(envWith({ AGGREGATE_UPSTREAMS: "https://b.example https://a.example" }));
    const same = parseAggregation(envWith({ AGGREGATE_UPSTREAMS: "https://a.example/ https://b.example/" }));
    expect(one.fingerprint).toMatch(/^[0-9a-f]{8}$/);
    expect(swapped.fingerprint).not.toBe(one.fingerprint);
    expect(same.fingerprint).toBe(one.fingerprint);
  });

  it.each([
    ["not-a-url", /AGGREGATE_UPSTREAMS entry 1 is not a URL/],
    ["https://ok.example ftp://x.example", /entry 2 must be an http\(s\) URL/],
    ["https://user:pw@x.example", /must not carry credentials; put them in the AGGREGATE_UPSTREAMS_NETRC secret/],
    ["https://x.example/?a=b", /must not have a query or fragment/],
    ["https://x.example/#frag", /must not have a query or fragment/],
    ["https://x.example http://x.example/", /lists x\.example twice/],
  ])("refuses %j", (value, message) => {
    expect(misconfiguration({ AGGREGATE_UPSTREAMS: value })).toMatch(message);
  });

  it(`refuses more than ${MAX_AGGREGATE_UPSTREAMS} upstreams (the subrequest budget)`, () => {
    const list = Array.from({ length: MAX_AGGREGATE_UPSTREAMS + 1 }, (_, i) => `https://u${i}.example`).join(" ");
    expect(misconfiguration({ AGGREGATE_UPSTREAMS: list })).toMatch(/at most 8/);
    const ok = list.split(" ").slice(0, MAX_AGGREGATE_UPSTREAMS).join(" ");
    expect(parseAggregation(envWith({ AGGREGATE_UPSTREAMS: ok })).upstreams).toHaveLength(MAX_AGGREGATE_UPSTREAMS);
  });

  it("fails every request with a 500 naming the setting (fail fast), nix-cache-info included", async () => {
    const res = await callWith({ AGGREGATE_UPSTREAMS: "nope" }, "/nix-cache-info");
    expect(res.status).toBe(500);
    expect(await errorOf(res)).toMatch(/AGGREGATE_UPSTREAMS entry 1/);
  });

  it("exports the upstream URLs, in order and without credentials, for pages that show them", () => {
    const e = envWith({
      AGGREGATE_UPSTREAMS: "https://private.example/ https://cache.nixos.org",
      AGGREGATE_UPSTREAMS_NETRC: "machine private.example password hunter2",
    });
    expect(aggregatedUpstreams(e)).toEqual(["https://private.example", "https://cache.nixos.org"]);
    expect(aggregatedUpstreams(envWith({}))).toEqual([]);
  });
});

describe("AGGREGATE_WRITE_THROUGH_KEYS", () => {
  it("turns write-through on when upstreams are aggregated", () => {
    const a = parseAggregation(envWith({ AGGREGATE_UPSTREAMS: "https://x.example", AGGREGATE_WRITE_THROUGH_KEYS: TEST_PUBLIC_KEY_TEXT }));
    expect(a.writeThroughKeys.map((k) => k.name)).toEqual(["test-cache-1"]);
    expect(writeThroughEnabled(a)).toBe(true);
    // Keys without upstreams copy nothing.
    expect(writeThroughEnabled(parseAggregation(envWith({ AGGREGATE_WRITE_THROUGH_KEYS: TEST_PUBLIC_KEY_TEXT })))).toBe(false);
  });

  it("refuses something that is not a public key", () => {
    expect(misconfiguration({ AGGREGATE_WRITE_THROUGH_KEYS: `${TEST_PUBLIC_KEY_TEXT} cache.nixos.org-1:short` })).toMatch(
      /AGGREGATE_WRITE_THROUGH_KEYS entry 2 is not a Nix public key/,
    );
  });
});

describe("AGGREGATE_WRITE_THROUGH_DAILY_BYTES and _OBJECTS", () => {
  it("default to 1 GiB and 1000 objects a day", () => {
    expect(parseAggregation(envWith({})).writeThroughLimits).toEqual({
      bytes: DEFAULT_WRITE_THROUGH_DAILY_BYTES,
      objects: DEFAULT_WRITE_THROUGH_DAILY_OBJECTS,
    });
    expect(DEFAULT_WRITE_THROUGH_DAILY_BYTES).toBe(1024 ** 3);
    expect(DEFAULT_WRITE_THROUGH_DAILY_OBJECTS).toBe(1000);
  });

  it("take whole numbers, 0 included (no copies)", () => {
    const a = parseAggregation(envWith({ AGGREGATE_WRITE_THROUGH_DAILY_BYTES: " 5000000 ", AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS: "0" }));
    expect(a.writeThroughLimits).toEqual({ bytes: 5_000_000, objects: 0 });
  });

  it.each(["AGGREGATE_WRITE_THROUGH_DAILY_BYTES", "AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS"])("%s refuses anything else, naming itself", (name) => {
    for (const bad of ["-1", "1e9", "1.5", "1 GiB", "lots", "0x10", "99999999999999999"]) {
      expect(misconfiguration({ [name]: bad })).toMatch(new RegExp(`^${name} must be a whole number`));
    }
  });

  it("fail every request with a 500 naming the setting (fail fast)", async () => {
    const res = await callWith({ AGGREGATE_WRITE_THROUGH_DAILY_BYTES: "1GB" }, "/nix-cache-info");
    expect(res.status).toBe(500);
    expect(await errorOf(res)).toMatch(/AGGREGATE_WRITE_THROUGH_DAILY_BYTES/);
  });
});

describe("AGGREGATE_UPSTREAMS_NETRC", () => {
  it("gives each upstream the credentials of its machine entry: host:port first, then host, then default", () => {
    const a = parseAggregation(
      envWith({
        AGGREGATE_UPSTREAMS: "http://127.0.0.1:8001 http://127.0.0.1:8002 https://private.example https://other.example",
        AGGREGATE_UPSTREAMS_NETRC: [
          "machine 127.0.0.1:8001 login a password port-token",
          "machine 127.0.0.1 login b password host-token",
          "machine PRIVATE.example password private-token",
          "default login d password default-token",
        ].join("\n"),
      }),
    );
    const basic = (login: string, password: string) => basicAuthorization({ machine: null, login, password });
    expect(a.upstreams.map((u) => u.authorization)).toEqual([
      basic("a", "port-token"),
      basic("b", "host-token"),
      basic("", "private-token"),
      basic("d", "default-token"),
    ]);
    expect(basic("nix", "tok")).toBe(`Basic ${btoa("nix:tok")}`);
  });

  it("is a secret: a malformed one is refused without echoing any of it", () => {
    const message = misconfiguration({ AGGREGATE_UPSTREAMS: "https://x.example", AGGREGATE_UPSTREAMS_NETRC: "machine x.example login hunter2" });
    expect(message).toMatch(/AGGREGATE_UPSTREAMS_NETRC is not a netrc file: the entry for x\.example has no password/);
    expect(message).not.toContain("hunter2");
  });

  it("lets the reference check use the aggregated upstreams with their credentials, and UPSTREAM_CACHES once each", () => {
    const a = parseAggregation(
      envWith({ AGGREGATE_UPSTREAMS: "https://private.example https://cache.nixos.org", AGGREGATE_UPSTREAMS_NETRC: "machine private.example password t" }),
    );
    expect(referenceCaches(["https://cache.nixos.org", "https://extra.example"], a)).toEqual([
      { url: "https://private.example", authorization: basicAuthorization({ machine: null, login: "", password: "t" }) },
      { url: "https://cache.nixos.org", authorization: null },
      { url: "https://extra.example", authorization: null },
    ]);
  });
});

describe("netrc", () => {
  it("reads entries on one line or many, in any order of fields", () => {
    expect(parseNetrc("machine a.example login x password y\n\nmachine b.example password p account q login l\ndefault password z")).toEqual([
      { machine: "a.example", login: "x", password: "y" },
      { machine: "b.example", login: "l", password: "p" },
      { machine: null, login: "", password: "z" },
    ]);
    expect(parseNetrc("  ")).toEqual([]);
  });

  it.each([
    ["login x password y", /before any "machine" or "default"/],
    ["machine a.example login", /"login" at the end of the text has no value/],
    ["machine a.example password secret1 macdef init", /"macdef" \(netrc macros\) is not supported/],
    ["machine a.example password secret1 bogus", /unexpected word number 5/],
  ])("refuses %j, naming no value", (text, message) => {
    let error: unknown;
    try {
      parseNetrc(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(NetrcError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain("secret1");
  });

  it("matches a URL by host:port, then host name, then default, case-insensitively", () => {
    const entries = parseNetrc("machine h.example:8443 password p1 machine H.Example password p2 default password p3");
    expect(netrcEntryFor(entries, new URL("https://h.example:8443/x"))?.password).toBe("p1");
    expect(netrcEntryFor(entries, new URL("https://h.example/x"))?.password).toBe("p2");
    expect(netrcEntryFor(entries, new URL("https://elsewhere.example"))?.password).toBe("p3");
    expect(netrcEntryFor(parseNetrc("machine a.example password p"), new URL("https://b.example"))).toBeNull();
  });
});

describe("nix-cache-info with aggregation", () => {
  it("lists the aggregated upstreams in order on an Upstreams line, after the lines Nix reads", async () => {
    const res = await callWith({ AGGREGATE_UPSTREAMS: "https://cache.nixos.org/ https://nix-community.cachix.org" }, "/nix-cache-info");
    expect(await res.text()).toBe(
      "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\nUpstreams: https://cache.nixos.org https://nix-community.cachix.org\n",
    );
  });

  it("never shows credentials", async () => {
    const res = await callWith(
      { AGGREGATE_UPSTREAMS: "https://private.example", AGGREGATE_UPSTREAMS_NETRC: "machine private.example password hunter2" },
      "/nix-cache-info",
    );
    const text = await res.text();
    expect(text).toContain("Upstreams: https://private.example\n");
    expect(text).not.toContain("hunter2");
  });
});
