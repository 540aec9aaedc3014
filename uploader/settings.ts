// Command-line, environment and config-file settings shared by the commands: parsing with
// node:util's parseArgs (errors become UsageError), the documented environment variables,
// and `resolveCache`, the one place that decides which cache and which tokens a command
// uses: a flag wins over its environment variable, which wins over the config file that
// `uploader login` writes (config-file.ts); `resolveSetting` is that precedence for one
// setting, which login and keygen use too.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { CACHE_NAME, configFilePath, defaultEntry, readConfigFile, type CacheEntry } from "./config-file.ts";
import { UsageError } from "./errors.ts";

/** Environment variables the uploader reads, each the fallback for one flag. */
export const ENV = {
  /** --cache: the cache's base URL. */
  cacheUrl: "NIX_CACHE_URL",
  /** --token: a write token (one of the Worker's WRITE_TOKEN secrets). */
  token: "NIX_CACHE_TOKEN",
  /** --secret-key-file: the Nix secret key that signs narinfos (and keygen's output file). */
  secretKeyFile: "NIX_CACHE_SECRET_KEY_FILE",
  /** --admin-token: the Worker's ADMIN_TOKEN (garbage collection, pin changes). */
  adminToken: "NIX_CACHE_ADMIN_TOKEN",
} as const;

type Options = NonNullable<ParseArgsConfig["options"]>;

/** parseArgs in strict mode, with its errors turned into UsageError. */
export function parseCommandLine<T extends Options>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (err) {
    const message = err instanceof Error ? err.message.replace(/\s*To specify a positional argument.*$/s, "") : String(err);
    throw new UsageError(message);
  }
}

/** Where a setting came from, for `doctor` and for hints. */
export type SettingSource = "flag" | "env" | "config";

/**
 * The one precedence of every setting: the flag's value, else the environment variable's,
 * else the config file's (empty counts as unset), without surrounding whitespace: a secret
 * pasted or piped in with `echo` ends in a newline. With where it came from; undefined
 * when none is given.
 */
export function resolveSetting(
  flag: string | undefined,
  envName: string,
  fromConfig: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): { value: string; from: SettingSource } | undefined {
  const fromFlag = flag?.trim();
  if (fromFlag) return { value: fromFlag, from: "flag" };
  const fromEnv = env[envName]?.trim();
  if (fromEnv) return { value: fromEnv, from: "env" };
  const fromFile = fromConfig?.trim();
  return fromFile ? { value: fromFile, from: "config" } : undefined;
}

/** The flag's value, else the environment variable's (resolveSetting without a config file). */
export function flagOrEnv(flag: string | undefined, envName: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return resolveSetting(flag, envName, undefined, env)?.value;
}

/** parseArgs options of the settings every cache command takes (commands pick theirs). */
export const CACHE_OPTIONS = {
  cache: { type: "string" },
  token: { type: "string" },
  "admin-token": { type: "string" },
  "secret-key-file": { type: "string" },
} as const satisfies Options;

/** The cache settings as given on a command line (parseArgs values; all optional). */
export interface CacheFlags {
  /** A URL, or the name of a cache in the config file. */
  cache?: string | undefined;
  token?: string | undefined;
  "admin-token"?: string | undefined;
  "secret-key-file"?: string | undefined;
}

/** The cache a command talks to and the credentials it has for it. */
export interface CacheSettings {
  /** The cache's URL as given (http(s)://host[:port][/prefix]). */
  url: string;
  /** The config file's entry for this cache, when there is one. */
  name: string | undefined;
  /** A write token (or a read token, for reading a private cache). */
  token: string | undefined;
  /** The Worker's ADMIN_TOKEN. */
  adminToken: string | undefined;
  secretKeyFile: string | undefined;
  /** The config file consulted (it may not exist). */
  configFile: string;
  from: { url: SettingSource; token?: SettingSource; adminToken?: SettingSource; secretKeyFile?: SettingSource };
}

/**
 * Which cache, and with which credentials: each setting from its flag, else its environment
 * variable, else the config file's entry for the cache. The cache is `--cache` or
 * NIX_CACHE_URL (a URL, or the name of an entry), else the config file's default entry.
 * A URL that matches an entry's URL takes that entry's tokens. Throws UsageError when no
 * cache is given anywhere, ConfigFileError when the config file is malformed.
 */
export function resolveCache(flags: CacheFlags, env: NodeJS.ProcessEnv = process.env): CacheSettings {
  const configFile = configFilePath(env);
  const config = readConfigFile(configFile);
  const given = resolveSetting(flags.cache, ENV.cacheUrl, undefined, env);
  let entry: [string, CacheEntry] | undefined;
  let url: string;
  let from: CacheSettings["from"];
  if (given !== undefined) {
    const cache = given.value;
    if (!cache.includes("://")) {
      const named = config.caches[cache];
      if (!named) {
        const known = Object.keys(config.caches);
        throw new UsageError(
          CACHE_NAME.test(cache) ? `no cache named "${cache}" in ${configFile}` : `the cache "${cache}" is neither a URL nor a cache name`,
          known.length > 0
            ? `known caches: ${known.join(", ")}; or give a URL such as https://cache.example.com`
            : "give its URL (https://…), or run uploader login <cache-url> --name <name> first",
        );
      }
      entry = [cache, named];
      url = named.url;
    } else {
      url = cache;
      const wanted = normalised(cache);
      entry = Object.entries(config.caches).find(([, e]) => normalised(e.url) === wanted);
    }
    from = { url: given.from };
  } else {
    entry = defaultEntry(config);
    if (!entry) {
      const names = Object.keys(config.caches);
      throw new UsageError(
        `no cache given: pass --cache <url>, set ${ENV.cacheUrl}, or run uploader login <cache-url>`,
        names.length > 1 ? `${configFile} has several caches (${names.join(", ")}) and no default: pass --cache <name> or run uploader login --default` : undefined,
      );
    }
    url = entry[1].url;
    from = { url: "config" };
  }
  const pick = (flag: string | undefined, envName: string, fromConfig: string | undefined, key: "token" | "adminToken" | "secretKeyFile"): string | undefined => {
    const setting = resolveSetting(flag, envName, fromConfig, env);
    if (setting !== undefined) from[key] = setting.from;
    return setting?.value;
  };
  const e = entry?.[1];
  return {
    url,
    name: entry?.[0],
    token: pick(flags.token, ENV.token, e?.token, "token"),
    adminToken: pick(flags["admin-token"], ENV.adminToken, e?.adminToken, "adminToken"),
    secretKeyFile: pick(flags["secret-key-file"], ENV.secretKeyFile, e?.secretKeyFile, "secretKeyFile"),
    configFile,
    from,
  };
}

/** A URL compared as the HTTP client uses it: trailing slash, default port, lower-case host. */
function normalised(url: string): string {
  try {
    const u = new URL(url);
    if (!u.pathname.endsWith("/")) u.pathname += "/";
    return u.href;
  } catch {
    return url;
  }
}

/**
 * Throws UsageError unless the settings carry the token a command needs: `write` (push),
 * `admin` (gc, pin, unpin), `any` (either, e.g. listing pins). Returns the token to send.
 */
export function requireToken(settings: CacheSettings, kind: "write" | "admin" | "any"): string {
  const token = kind === "write" ? settings.token : kind === "admin" ? settings.adminToken : (settings.adminToken ?? settings.token);
  if (token) return token;
  const login = `or store it with uploader login ${settings.url}`;
  if (kind === "write") throw new UsageError(`no write token given: set ${ENV.token} (or pass --token), ${login}`, "a write token is one of the Worker's WRITE_TOKEN secrets");
  if (kind === "admin") throw new UsageError(`no admin token given: set ${ENV.adminToken} (or pass --admin-token), ${login}`, "the admin token is the Worker's ADMIN_TOKEN secret");
  throw new UsageError(`no token given: set ${ENV.adminToken} or ${ENV.token} (or pass --admin-token or --token), ${login}`);
}

/** A whole number flag within [min, max]; undefined when not given. */
export function integerFlag(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = /^-?\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got "${value}"`);
  }
  return n;
}
