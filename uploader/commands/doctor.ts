// `uploader doctor`: runs every check of checks.ts against the cache the other commands
// would use (flags, environment, or what login stored) and the local Nix, and prints one
// line per check with what to do about each one that is not ok.
import { EXIT_PATHS_FAILED, UploaderError, markReportedAsJson } from "../errors.ts";
import { runChecks, type CheckStatus } from "../checks.ts";
import { CACHE_OPTIONS, ENV, parseCommandLine, resolveCache } from "../settings.ts";

export const HELP = `Usage: uploader doctor [options]

Checks the setup, one line each:
  cache         the URL answers as a nix-edge-cache (not another server, not https
                against plain http, not a path that is not the cache's)
  write token   the token is valid for uploads (and the admin token, when given)
  clock         this machine's clock agrees with the cache's
  signing key   the secret key file (when given) reads
  nix           Nix runs, nix-command works
  trusted key   the local Nix trusts the cache's public keys
  substituter   the local Nix substitutes from the cache
  trusted user  the Nix daemon trusts this user (or none is needed)

Options:
  --cache <url|name>        the cache (default: as push would use)  [env ${ENV.cacheUrl}]
  --token <token>           a write token                           [env ${ENV.token}]
  --admin-token <token>     also check the Worker's ADMIN_TOKEN     [env ${ENV.adminToken}]
  --secret-key-file <file>  also check this signing key            [env ${ENV.secretKeyFile}]
  --json                    print the results as JSON on stdout
  -h, --help                show this help

Exit status: 0 nothing failed (warnings allowed); 1 a check failed; 2 bad usage.
`;

const MARK: Record<CheckStatus, string> = { ok: "✓", warn: "!", fail: "✗", skip: "-" };

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, { ...CACHE_OPTIONS, json: { type: "boolean" }, help: { type: "boolean", short: "h" } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new UploaderError(`unexpected argument "${positionals[0]}"`, 2, "give the cache with --cache");
  const checks = await runChecks(resolveCache(values));
  const failed = checks.filter((c) => c.status === "fail");
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ ok: failed.length === 0, checks }, null, 2)}\n`);
  } else {
    const width = Math.max(...checks.map((c) => c.name.length));
    const lines = checks.map((c) => `${MARK[c.status]} ${c.name.padEnd(width)}  ${c.message}${c.hint ? `\n  ${" ".repeat(width)}  → ${c.hint}` : ""}`);
    process.stderr.write(`${lines.join("\n")}\n`);
  }
  if (failed.length > 0) {
    const err = new UploaderError(`${failed.length} check${failed.length === 1 ? "" : "s"} failed: ${failed.map((c) => c.name).join(", ")}`, EXIT_PATHS_FAILED);
    throw values.json ? markReportedAsJson(err) : err;
  }
}
