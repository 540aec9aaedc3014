// The action's inputs (action.yml), read from the runner's INPUT_* variables and checked
// before anything runs, so a mistake in the workflow is reported at the action's step,
// naming the input, rather than at the end of the job.
import { booleanInput, input, InputError, type Env } from "./runner.ts";

/** The uploader's own bounds (uploader/commands/push.ts): checked here to fail early. */
const MAX_JOBS = 64;
const COMPRESSIONS = ["zstd", "xz", "none"] as const;

export interface ActionInputs {
  cacheUrl: string;
  /** Empty: no token, so nothing is pushed (pull requests from forks get no secrets). */
  token: string;
  /** A Nix secret key, `name:base64`, or empty. */
  secretKey: string;
  /** Explicit paths; empty: every store path the job created. */
  paths: string[];
  /** Store paths matching this are not pushed (only applies to the job's new paths). */
  exclude: RegExp | undefined;
  compression: string;
  jobs: number | undefined;
  failOnError: boolean;
}

export function readInputs(env: Env = process.env): ActionInputs {
  const cacheUrl = input("cache-url", env);
  if (!cacheUrl) throw new InputError("cache-url", "is required (the cache's URL, e.g. https://cache.example.com)");
  let parsed: URL;
  try {
    parsed = new URL(cacheUrl);
  } catch {
    throw new InputError("cache-url", `is not a URL: "${cacheUrl}"`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    throw new InputError("cache-url", `must be an http(s) URL, got "${cacheUrl}"`);
  }
  const secretKey = input("secret-key", env);
  if (secretKey && !/^[A-Za-z0-9.-]+:[A-Za-z0-9+/]+={0,2}$/.test(secretKey)) {
    throw new InputError("secret-key", "must be a Nix secret key, one line `name:base64` (the file `uploader keygen` writes)");
  }
  const compression = input("compression", env) || "zstd";
  if (!(COMPRESSIONS as readonly string[]).includes(compression)) {
    throw new InputError("compression", `must be one of ${COMPRESSIONS.join(", ")}, got "${compression}"`);
  }
  const jobsText = input("jobs", env);
  let jobs: number | undefined;
  if (jobsText) {
    jobs = /^\d+$/.test(jobsText) ? Number(jobsText) : Number.NaN;
    if (!Number.isSafeInteger(jobs) || jobs < 1 || jobs > MAX_JOBS) {
      throw new InputError("jobs", `must be a whole number from 1 to ${MAX_JOBS}, got "${jobsText}"`);
    }
  }
  const excludeText = input("exclude", env);
  let exclude: RegExp | undefined;
  if (excludeText) {
    try {
      exclude = new RegExp(excludeText);
    } catch (err) {
      throw new InputError("exclude", `is not a regular expression: ${(err as Error).message}`);
    }
  }
  return {
    cacheUrl,
    token: input("token", env),
    secretKey,
    paths: input("paths", env).split(/\s+/).filter((p) => p !== ""),
    exclude,
    compression,
    jobs,
    failOnError: booleanInput("fail-on-error", env),
  };
}
