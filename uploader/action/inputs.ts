// The action's inputs (action.yml), read from the runner's INPUT_* variables and checked
// before anything runs, so a mistake in the workflow is reported at the action's step,
// naming the input, rather than at the end of the job.
import { booleanInput, input, InputError, type Env } from "./runner.ts";

/** The uploader's own bounds (MAX_JOBS in uploader/commands/flags.ts): checked here to fail early. */
const MAX_JOBS = 64;
const COMPRESSIONS = ["zstd", "xz", "none"] as const;
/** How the job's paths reach the cache (see steps.ts). */
export const PUSH_MODES = ["hook", "store-diff"] as const;
export type PushMode = (typeof PUSH_MODES)[number];
/** A Nix public key, `name:base64` (32 bytes: 44 characters with padding). */
const PUBLIC_KEY = /^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=$/;
/**
 * Flags the action sets itself from its inputs: given again in uploader-args they would
 * contradict them (or, for --token, put the secret on a command line, visible in `ps`).
 */
const OWN_FLAGS = ["--cache", "--token", "--secret-key-file", "--json", "--spool", "--spool-only", "--compression", "--jobs", "-j", "--exclude"];

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
  /** Configure nothing for pushing, push nothing (substitution is still configured). */
  skipPush: boolean;
  /** hook: Nix's post-build-hook and a background watcher; store-diff: the new paths at the end. */
  pushMode: PushMode;
  /** Make Nix substitute from the cache (and the extra caches) in the job's later steps. */
  configureNix: boolean;
  extraSubstituters: string[];
  extraTrustedPublicKeys: string[];
  /** More flags for the uploader (push and watch-store), one word each. */
  uploaderArgs: string[];
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
  const pushMode = (input("push-mode", env) || "hook") as PushMode;
  if (!PUSH_MODES.includes(pushMode)) {
    throw new InputError("push-mode", `must be one of ${PUSH_MODES.join(", ")}, got "${pushMode}"`);
  }
  const extraSubstituters = words(input("extra-substituters", env));
  for (const u of extraSubstituters) {
    if (!/^(https?|s3|file):\/\/\S+$/.test(u)) throw new InputError("extra-substituters", `must be cache URLs separated by spaces or newlines, got "${u}"`);
  }
  const extraTrustedPublicKeys = words(input("extra-trusted-public-keys", env));
  for (const k of extraTrustedPublicKeys) {
    if (!PUBLIC_KEY.test(k)) throw new InputError("extra-trusted-public-keys", `must be Nix public keys (name:base64) separated by spaces or newlines, got "${k}"`);
  }
  const uploaderArgs = words(input("uploader-args", env));
  for (const a of uploaderArgs) {
    const flag = a.split("=")[0]!;
    if (OWN_FLAGS.includes(flag)) {
      throw new InputError("uploader-args", `must not contain ${flag}: the action sets it from its inputs (cache-url, token, secret-key, compression, jobs, exclude)`);
    }
  }
  return {
    cacheUrl,
    token: input("token", env),
    secretKey,
    paths: words(input("paths", env)),
    exclude,
    compression,
    jobs,
    failOnError: booleanInput("fail-on-error", env),
    skipPush: booleanInput("skip-push", env),
    pushMode,
    configureNix: input("configure-nix", env) === "" ? true : booleanInput("configure-nix", env),
    extraSubstituters,
    extraTrustedPublicKeys,
    uploaderArgs,
  };
}

function words(text: string): string[] {
  return text.split(/\s+/).filter((w) => w !== "");
}
