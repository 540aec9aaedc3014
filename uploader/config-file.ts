// The uploader's configuration file: the caches `uploader login` remembered, so that
// `push`, `gc`, `pin` and the others work without flags.
//
//   $NIX_CACHE_CONFIG, else $XDG_CONFIG_HOME/nix-edge-cache/config.json,
//   else ~/.config/nix-edge-cache/config.json
//
//   {
//     "default": "<name>",                       optional: the cache used when none is named
//     "caches": {
//       "<name>": {
//         "url": "https://cache.example.com/",   required
//         "token": "…",                          optional: a write token (or a read token)
//         "adminToken": "…",                     optional: the Worker's ADMIN_TOKEN
//         "secretKeyFile": "/path/to/key"        optional: signs narinfos on push
//       }
//     }
//   }
//
// It holds secrets, so it is written with mode 0600 (its directory 0700), atomically
// (a temp file renamed over it), and reading it warns about nothing: the format is checked
// field by field and an error names the field.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { EXIT_LOCAL, UploaderError } from "./errors.ts";

/** Environment variable naming the config file itself (tests, CI, several setups). */
export const CONFIG_ENV = "NIX_CACHE_CONFIG";

/** Cache names: what `--cache <name>` and `login --name` accept. */
export const CACHE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface CacheEntry {
  url: string;
  token?: string;
  adminToken?: string;
  secretKeyFile?: string;
}

export interface ConfigFile {
  default?: string;
  caches: Record<string, CacheEntry>;
}

/** The config file is malformed or cannot be read or written. */
export class ConfigFileError extends UploaderError {
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(`${file}: ${message}`, EXIT_LOCAL, "fix or delete the file, then run uploader login <cache-url> again", options);
  }
}

/** Where the config file is (it need not exist). */
export function configFilePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env[CONFIG_ENV]) return env[CONFIG_ENV];
  const base = env.XDG_CONFIG_HOME && env.XDG_CONFIG_HOME.startsWith("/") ? env.XDG_CONFIG_HOME : join(env.HOME || homedir(), ".config");
  return join(base, "nix-edge-cache", "config.json");
}

/** The config file's contents; an empty configuration when there is no file. */
export function readConfigFile(file: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { caches: {} };
    throw new ConfigFileError(file, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigFileError(file, `not JSON (${(err as Error).message})`);
  }
  return parseConfig(parsed, file);
}

/** Checks a parsed config document; throws ConfigFileError naming the bad field. */
export function parseConfig(doc: unknown, file: string): ConfigFile {
  if (!isObject(doc)) throw new ConfigFileError(file, "expected a JSON object");
  const caches = doc.caches ?? {};
  if (!isObject(caches)) throw new ConfigFileError(file, '"caches" must be an object of named caches');
  const out: ConfigFile = { caches: {} };
  for (const [name, entry] of Object.entries(caches)) {
    if (!CACHE_NAME.test(name)) throw new ConfigFileError(file, `cache name "${name}" may only have letters, digits, ".", "_" and "-"`);
    if (!isObject(entry)) throw new ConfigFileError(file, `caches.${name} must be an object`);
    if (typeof entry.url !== "string" || entry.url === "") throw new ConfigFileError(file, `caches.${name}.url must be the cache's URL`);
    const e: CacheEntry = { url: entry.url };
    for (const field of ["token", "adminToken", "secretKeyFile"] as const) {
      const v = entry[field];
      if (v === undefined) continue;
      if (typeof v !== "string") throw new ConfigFileError(file, `caches.${name}.${field} must be a string`);
      if (v.trim() !== "") e[field] = v.trim();
    }
    out.caches[name] = e;
  }
  if (doc.default !== undefined) {
    if (typeof doc.default !== "string" || !(doc.default in out.caches)) {
      throw new ConfigFileError(file, `"default" must name one of the caches (${Object.keys(out.caches).join(", ") || "none"})`);
    }
    out.default = doc.default;
  }
  return out;
}

/** Writes the config file with mode 0600 (directory 0700), replacing it atomically. */
export function writeConfigFile(file: string, config: ConfigFile): void {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
    // The mode given to writeFileSync applies only to a new file, and the umask narrows it.
    chmodSync(tmp, 0o600);
    renameSync(tmp, file);
  } catch (err) {
    throw new ConfigFileError(file, `cannot write: ${(err as Error).message}`, { cause: err });
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The entry named `name`, or (without a name) the default: `default`, or the only one. */
export function defaultEntry(config: ConfigFile): [string, CacheEntry] | undefined {
  const name = config.default ?? (Object.keys(config.caches).length === 1 ? Object.keys(config.caches)[0] : undefined);
  return name === undefined ? undefined : [name, config.caches[name]!];
}
