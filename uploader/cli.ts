#!/usr/bin/env node
// The `uploader` command: the command table and the error boundary, nothing else.
// Commands live in commands/*.ts; this is the only place that prints an error and sets
// the exit code (errors.ts maps each error type to its code).
import { readFileSync } from "node:fs";
import { EXIT_INTERNAL, UploaderError, UsageError, exitCodeOf, reportedAsJson } from "./errors.ts";

interface Command {
  summary: string;
  load: () => Promise<{ HELP: string; run: (args: string[]) => Promise<void> }>;
}

/** Loaded on demand, so `--help` and `keygen` never load the push machinery. */
const COMMANDS: Record<string, Command> = {
  push: { summary: "upload store paths and their closures to the cache", load: () => import("./commands/push.ts") },
  import: { summary: "copy paths from another cache (file, http, s3) or a nix-store --export stream", load: () => import("./commands/import.ts") },
  keygen: { summary: "create a signing key pair (Nix's format)", load: () => import("./commands/keygen.ts") },
  gc: { summary: "collect garbage on the cache (admin token; --dry-run)", load: () => import("./commands/gc.ts") },
  pin: { summary: "keep a store path's closure until unpinned (admin token)", load: async () => (await import("./commands/pin.ts")).pin },
  unpin: { summary: "remove a pin (admin token)", load: async () => (await import("./commands/pin.ts")).unpin },
  pins: { summary: "list the pins", load: async () => (await import("./commands/pin.ts")).pins },
  login: { summary: "store a cache's URL and tokens, so other commands need no flags", load: () => import("./commands/login.ts") },
  use: { summary: "configure Nix to substitute from a cache (nix.conf, keys, netrc)", load: () => import("./commands/use.ts") },
  doctor: { summary: "check the cache, the tokens, the clock and the local Nix", load: () => import("./commands/doctor.ts") },
  "watch-store": { summary: "push every new store path as it appears (and what post-build-hook queues)", load: () => import("./commands/watch-store.ts") },
  "post-build-hook": { summary: "Nix's post-build-hook: queue $OUT_PATHS for watch-store", load: () => import("./commands/post-build-hook.ts") },
};

const HELP = `Usage: uploader <command> [options]

Pushes Nix store paths to a nix-edge-cache binary cache.

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(Math.max(...Object.keys(COMMANDS).map((n) => n.length)))} ${c.summary}`)
  .join("\n")}

Options:
  -h, --help     show help (also after a command: uploader push --help)
  -V, --version  show the version

Example:
  NIX_CACHE_URL=https://cache.example.org NIX_CACHE_TOKEN=... \\
    uploader push --secret-key-file cache.example.org-1.secret ./result
`;

/**
 * The package version. package.json is one level up from this file in the sources and two
 * levels up in compiled output (dist/uploader/cli.js), so look in both places.
 */
function version(): string {
  for (const candidate of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "nix-edge-cache" && pkg.version) return pkg.version;
    } catch {
      // not there: try the next place
    }
  }
  return "unknown";
}

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  try {
    if (first === undefined || first === "-h" || first === "--help" || first === "help") {
      const topic = first === "help" && rest[0] ? COMMANDS[rest[0]] : undefined;
      process.stdout.write(topic ? (await topic.load()).HELP : HELP);
      return 0;
    }
    if (first === "-V" || first === "--version") {
      process.stdout.write(`${version()}\n`);
      return 0;
    }
    const command = COMMANDS[first];
    if (!command) {
      throw new UsageError(
        first.startsWith("-") ? `unknown option "${first}" (a command comes first)` : `unknown command "${first}"`,
        `commands: ${Object.keys(COMMANDS).join(", ")}; see uploader --help`,
      );
    }
    await (await command.load()).run(rest);
    return 0;
  } catch (err) {
    report(err, argv.includes("--verbose") || argv.includes("-v"), argv.includes("--json"));
    return exitCodeOf(err);
  }
}

function report(err: unknown, verbose: boolean, json: boolean): void {
  // --json promises JSON on stdout: a fatal error is an object too, unless the command
  // already printed its result with the error in it.
  if (json && !reportedAsJson(err)) {
    const known = err instanceof UploaderError;
    const error = {
      type: known ? err.name : "InternalError",
      message: err instanceof Error ? err.message : String(err),
      ...(known && err.hint ? { hint: err.hint } : {}),
      exitCode: exitCodeOf(err),
    };
    process.stdout.write(`${JSON.stringify({ error }, null, 2)}\n`);
  }
  if (err instanceof UploaderError) {
    process.stderr.write(`error: ${err.message}\n`);
    if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
    if (verbose && err.cause) process.stderr.write(`cause: ${String(err.cause)}\n`);
    return;
  }
  // Not one of ours: a bug. Show the stack so it can be reported.
  const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`error (internal, exit ${EXIT_INTERNAL}): ${detail}\n`);
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
