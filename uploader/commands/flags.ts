// parseArgs option sets that several commands share, and the checks of push's flags
// (-j, --compression, --compression-level, --upstream-key) that push, import, watch-store
// and post-build-hook make alike: one definition, so the commands cannot drift apart.
import { DEFAULT_COMPRESSION, DEFAULT_LEVEL, parseCompressionMethod, resolveLevel, type CompressionMethod } from "../compress.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_UPSTREAM_KEYS } from "../plan.ts";
import { DEFAULT_JOBS } from "../run-plan.ts";
import { CACHE_OPTIONS, integerFlag } from "../settings.ts";

/** Upper bound for -j: beyond this, more connections only add contention. */
export const MAX_JOBS = 64;

/** The help of --compression-level and --upstream-key, alike in push, import and watch-store. */
export const LEVEL_AND_UPSTREAM_HELP = `  --compression-level <n>   zstd 1-19 (default ${DEFAULT_LEVEL.zstd}), xz 0-9 (default ${DEFAULT_LEVEL.xz})
  --upstream-key <name>     skip paths signed by this key name (repeatable;
                            default ${DEFAULT_UPSTREAM_KEYS.join(", ")})`;

/** -h, --help: every command has it. */
export const HELP_OPTION = { help: { type: "boolean", short: "h" } } as const;

/** --dry-run, --json, -v and -h of the commands that plan and report (push, import, gc). */
export const REPORT_OPTIONS = {
  "dry-run": { type: "boolean" },
  json: { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
  ...HELP_OPTION,
} as const;

/** The cache and its admin token: the commands that need the Worker's ADMIN_TOKEN (gc, pins). */
export const ADMIN_OPTIONS = {
  cache: CACHE_OPTIONS.cache,
  "admin-token": CACHE_OPTIONS["admin-token"],
} as const;

/** The flags of a push: push, import, watch-store and post-build-hook (for its direct push). */
export const PUSH_OPTIONS = {
  cache: CACHE_OPTIONS.cache,
  token: CACHE_OPTIONS.token,
  "secret-key-file": CACHE_OPTIONS["secret-key-file"],
  jobs: { type: "string", short: "j" },
  compression: { type: "string" },
  "compression-level": { type: "string" },
  "upstream-key": { type: "string", multiple: true },
  "no-skip-upstream": { type: "boolean" },
  verbose: { type: "boolean", short: "v" },
} as const;

/** PUSH_OPTIONS' values as parseArgs gives them. */
export interface PushFlags {
  cache?: string | undefined;
  token?: string | undefined;
  "secret-key-file"?: string | undefined;
  jobs?: string | undefined;
  compression?: string | undefined;
  "compression-level"?: string | undefined;
  "upstream-key"?: string[] | undefined;
  "no-skip-upstream"?: boolean | undefined;
  verbose?: boolean | undefined;
}

/** How to push, from PUSH_OPTIONS' values. */
export interface PushChoices {
  jobs: number;
  compression: CompressionMethod;
  /** undefined: the method's default level. */
  level: number | undefined;
  upstreamKeys: readonly string[];
}

/** Checks -j, --compression, --compression-level and the upstream keys; throws UsageError. */
export function pushChoices(values: PushFlags): PushChoices {
  const jobs = integerFlag("--jobs", values.jobs, 1, MAX_JOBS) ?? DEFAULT_JOBS;
  const compression = parseCompressionMethod(values.compression ?? DEFAULT_COMPRESSION);
  const level = resolveLevel(compression, integerFlag("--compression-level", values["compression-level"], -100, 100));
  if (values["no-skip-upstream"] && values["upstream-key"]) {
    throw new UsageError("--upstream-key and --no-skip-upstream contradict each other");
  }
  const upstreamKeys = values["no-skip-upstream"] ? [] : (values["upstream-key"] ?? DEFAULT_UPSTREAM_KEYS);
  return { jobs, compression, level, upstreamKeys };
}
