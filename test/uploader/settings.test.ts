// resolveCache: which cache and which credentials a command uses, from flags, environment
// variables and the config file `uploader login` writes; flags win over the environment,
// which wins over the file. Also the config file's checks and its mode.
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ConfigFileError, configFilePath, readConfigFile, writeConfigFile } from "../../uploader/config-file.ts";
import { UsageError } from "../../uploader/errors.ts";
import { requireToken, resolveCache } from "../../uploader/settings.ts";

let dir: string;
let file: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nec-settings-"));
  file = join(dir, "config.json");
  writeConfigFile(file, {
    default: "main",
    caches: {
      main: { url: "https://main.example.com", token: "main-write", adminToken: "main-admin", secretKeyFile: "/keys/main.secret" },
      other: { url: "http://127.0.0.1:8787/prefix/", token: "other-write" },
    },
  });
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ NIX_CACHE_CONFIG: file, ...extra });

describe("resolveCache", () => {
  test("without flags or environment: the default cache with all its settings, from the config file", () => {
    const s = resolveCache({}, env());
    expect(s).toMatchObject({ url: "https://main.example.com", name: "main", token: "main-write", adminToken: "main-admin", secretKeyFile: "/keys/main.secret" });
    expect(s.from).toEqual({ url: "config", token: "config", adminToken: "config", secretKeyFile: "config" });
  });

  test("--cache names an entry, or gives a URL that matches one (its tokens apply)", () => {
    expect(resolveCache({ cache: "other" }, env())).toMatchObject({ url: "http://127.0.0.1:8787/prefix/", name: "other", token: "other-write", adminToken: undefined });
    expect(resolveCache({ cache: "http://127.0.0.1:8787/prefix" }, env())).toMatchObject({ name: "other", token: "other-write" });
    expect(resolveCache({}, env({ NIX_CACHE_URL: "other" }))).toMatchObject({ name: "other", token: "other-write" });
  });

  test("a URL no entry has: no tokens from the file", () => {
    const s = resolveCache({ cache: "https://elsewhere.example.com" }, env());
    expect(s).toMatchObject({ url: "https://elsewhere.example.com", name: undefined, token: undefined, adminToken: undefined });
    expect(() => requireToken(s, "write")).toThrow(/no write token given: set NIX_CACHE_TOKEN \(or pass --token\), or store it with uploader login https:\/\/elsewhere/);
  });

  test("flags win over the environment, which wins over the file; values are trimmed", () => {
    const fromEnv = resolveCache({}, env({ NIX_CACHE_TOKEN: "env-write\n", NIX_CACHE_ADMIN_TOKEN: " env-admin " }));
    expect(fromEnv).toMatchObject({ name: "main", token: "env-write", adminToken: "env-admin", secretKeyFile: "/keys/main.secret" });
    expect(fromEnv.from).toMatchObject({ token: "env", adminToken: "env", secretKeyFile: "config" });
    const fromFlags = resolveCache({ token: "flag-write\r\n", "secret-key-file": "k.secret" }, env({ NIX_CACHE_TOKEN: "env-write" }));
    expect(fromFlags).toMatchObject({ token: "flag-write", secretKeyFile: "k.secret" });
    expect(fromFlags.from).toMatchObject({ token: "flag", secretKeyFile: "flag" });
    expect(resolveCache({ cache: "other" }, env({ NIX_CACHE_URL: "https://main.example.com" })).name).toBe("other");
  });

  test("no cache anywhere, or an unknown name: a usage error saying what to do", () => {
    const none = { NIX_CACHE_CONFIG: join(dir, "absent.json") };
    expect(() => resolveCache({}, none)).toThrow(UsageError);
    expect(() => resolveCache({}, none)).toThrow(/pass --cache <url>, set NIX_CACHE_URL, or run uploader login <cache-url>/);
    expect(() => resolveCache({ cache: "nosuch" }, env())).toThrow(/no cache named "nosuch"/);
    try {
      resolveCache({ cache: "nosuch" }, env());
    } catch (err) {
      expect((err as UsageError).hint).toContain("known caches: main, other");
    }
  });

  test("several caches and no default: says to name one", async () => {
    const two = join(dir, "two.json");
    writeConfigFile(two, { caches: { a: { url: "https://a.example" }, b: { url: "https://b.example" } } });
    try {
      resolveCache({}, { NIX_CACHE_CONFIG: two });
      expect.unreachable();
    } catch (err) {
      expect((err as UsageError).hint).toMatch(/several caches \(a, b\) and no default/);
    }
    const one = join(dir, "one.json");
    writeConfigFile(one, { caches: { only: { url: "https://only.example" } } });
    expect(resolveCache({}, { NIX_CACHE_CONFIG: one }).name).toBe("only");
  });
});

describe("the config file", () => {
  test("lives in the XDG config directory unless NIX_CACHE_CONFIG names it", () => {
    expect(configFilePath({ XDG_CONFIG_HOME: "/x/conf", HOME: "/home/u" })).toBe("/x/conf/nix-edge-cache/config.json");
    expect(configFilePath({ HOME: "/home/u" })).toBe("/home/u/.config/nix-edge-cache/config.json");
    expect(configFilePath({ NIX_CACHE_CONFIG: "/etc/c.json", XDG_CONFIG_HOME: "/x" })).toBe("/etc/c.json");
  });

  test("is written with mode 0600 in a 0700 directory", async () => {
    const nested = join(dir, "new", "config.json");
    writeConfigFile(nested, { caches: {} });
    expect((await stat(nested)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, "new"))).mode & 0o777).toBe(0o700);
  });

  test("a malformed file is an error naming the field", async () => {
    const bad = join(dir, "bad.json");
    for (const [doc, message] of [
      ["[", /not JSON/],
      ['{"caches": {"x": {}}}', /caches\.x\.url must be the cache's URL/],
      ['{"caches": {"x": {"url": "https://x", "token": 5}}}', /caches\.x\.token must be a string/],
      ['{"default": "y", "caches": {"x": {"url": "https://x"}}}', /"default" must name one of the caches \(x\)/],
      ['{"caches": {"a b": {"url": "https://x"}}}', /cache name "a b"/],
    ] as const) {
      await writeFile(bad, doc);
      expect(() => readConfigFile(bad)).toThrow(ConfigFileError);
      expect(() => readConfigFile(bad)).toThrow(message);
    }
  });
});
