// Command-line and environment settings shared by the commands: parsing with node:util's
// parseArgs (errors become UsageError), the documented environment variables, and the
// rule that a flag wins over its environment variable.
import { parseArgs, type ParseArgsConfig } from "node:util";
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

/** The flag's value, else the environment variable's (empty counts as unset). */
export function flagOrEnv(flag: string | undefined, envName: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (flag !== undefined && flag !== "") return flag;
  const fromEnv = env[envName];
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined;
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
