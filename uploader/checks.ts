// The checks of `uploader doctor`, and the quick subset `push` runs before reading any
// NAR (`preflight`): the URL answers as this cache (not another server, not https against
// http), the tokens do what they are for, the clocks agree; and on the Nix side: nix runs,
// nix-command works, Nix trusts the cache's keys and uses it, the daemon trusts this user.
// Each check is a result with a status and, when it is not ok, a hint saying what to do;
// library code, so nothing is printed here.
import { formatPublicKey, publicKeyOf } from "../src/nix/signature.ts";
import type { CacheDescription } from "../src/api/cache-description.ts";
import { MAX_CLOCK_SKEW_MS, probeCache, probeClient, type ProbeResult } from "./cache-probe.ts";
import { EXIT_CACHE, EXIT_USAGE, UploaderError, messageOf } from "./errors.ts";
import { readSecretKeyFile } from "./key-file.ts";
import { listSetting, nixCommand, nixSettings, nixVersion, userTrust, type NixSettings } from "./nix-config.ts";
import { ENV, type CacheSettings } from "./settings.ts";

export type CheckStatus = "ok" | "warn" | "fail" | "skip";

export interface CheckResult {
  name: string;
  status: CheckStatus;
  message: string;
  hint?: string;
}

function result(name: string, status: CheckStatus, message: string, hint?: string): CheckResult {
  return hint === undefined ? { name, status, message } : { name, status, message, hint };
}

/** What the token is, in words, from the cache's answer; undefined when the cache accepts it for nothing it would not do anyway. */
function describeAccess(d: CacheDescription): string | undefined {
  if (d.access.write) return "a write token";
  if (d.access.admin) return "the admin token";
  // A public cache lets anyone read: that says nothing about the token.
  if (d.access.read && d.private) return "a read token";
  return undefined;
}

/** The clock check from a probe's skew. */
export function clockCheck(skewMs: number): CheckResult {
  const seconds = Math.round(Math.abs(skewMs) / 1000);
  if (Math.abs(skewMs) <= MAX_CLOCK_SKEW_MS) return result("clock", "ok", `your clock and the cache's agree (within ${Math.max(1, seconds)} s)`);
  return result(
    "clock",
    "warn",
    `your clock is ${Math.round(seconds / 60)} min ${skewMs > 0 ? "behind" : "ahead of"} the cache's`,
    "set the time right (timedatectl set-ntp true): certificates, retention and pins go by the clock",
  );
}

/** The write-token check from the cache's description. */
export function writeCheck(settings: CacheSettings, d: CacheDescription): CheckResult {
  if (!settings.token) {
    return result("write token", "fail", "no write token given", `set ${ENV.token}, pass --token, or run uploader login ${settings.url}`);
  }
  if (d.access.write) return result("write token", "ok", `the cache accepts the token (from ${settings.from.token}) for uploads`);
  const what = describeAccess(d);
  return result(
    "write token",
    "fail",
    `the token (from ${settings.from.token}) is ${what ?? "not a token of this cache"}, which may not upload`,
    d.access.admin ? `the admin token goes in ${ENV.adminToken}; uploads need one of the Worker's WRITE_TOKEN secrets` : "check it against the Worker's WRITE_TOKEN secrets",
  );
}

/** The checks about the cache: answers, tokens, clock. Returns the probe for later checks. */
async function cacheChecks(settings: CacheSettings): Promise<{ checks: CheckResult[]; probe: ProbeResult | null }> {
  const checks: CheckResult[] = [result("settings", "ok", `cache ${settings.url} (from ${settings.from.url === "config" ? `${settings.configFile}, "${settings.name}"` : settings.from.url})`)];
  const http = probeClient(settings.url, settings.token);
  let probe: ProbeResult;
  try {
    probe = await probeCache(http);
  } catch (err) {
    if (!(err instanceof UploaderError)) throw err;
    checks.push(result("cache", "fail", err.message, err.hint));
    return { checks, probe: null };
  } finally {
    http.close();
  }
  if (probe.kind === "binary-cache") {
    checks.push(result("cache", "warn", `${settings.url}: ${probe.note}`, "the uploader can push to it, but cannot check tokens or keys: use a nix-edge-cache Worker's URL for the other checks"));
    return { checks, probe };
  }
  const d = probe.description;
  checks.push(result("cache", "ok", `a nix-edge-cache (API ${d.apiVersion}), ${d.private ? "private" : "public"}, ${d.publicKeys.length} public key${d.publicKeys.length === 1 ? "" : "s"}`));
  checks.push(writeCheck(settings, d));
  if (settings.adminToken) {
    const admin = probeClient(settings.url, settings.adminToken);
    try {
      const p = await probeCache(admin);
      const ok = p.kind === "nix-edge-cache" && p.description.access.admin;
      checks.push(ok ? result("admin token", "ok", "the cache accepts the admin token") : result("admin token", "fail", `the admin token (from ${settings.from.adminToken}) is not the cache's ADMIN_TOKEN`, "gc, pin and unpin will be refused"));
    } catch (err) {
      checks.push(result("admin token", "fail", messageOf(err)));
    } finally {
      admin.close();
    }
  }
  checks.push(clockCheck(probe.clockSkewMs));
  if (settings.secretKeyFile) {
    try {
      const key = await readSecretKeyFile(settings.secretKeyFile);
      const pub = formatPublicKey(publicKeyOf(key));
      checks.push(
        d.publicKeys.includes(pub) || d.publicKeys.length === 0
          ? result("signing key", "ok", `pushes are signed as ${key.name}`)
          : result("signing key", "warn", `pushes are signed as ${key.name}, a key the cache does not announce`, `clients that trust only the cache's keys (${d.publicKeys.join(" ")}) need the Worker's own signature (SIGNING_KEY), or add ${pub} to its TRUSTED_PUBLIC_KEYS`),
      );
    } catch (err) {
      checks.push(result("signing key", "fail", messageOf(err), err instanceof UploaderError ? err.hint : undefined));
    }
  }
  return { checks, probe };
}

/** The checks about the local Nix: it runs, nix-command, keys, substituter, trust. */
async function nixChecks(settings: CacheSettings, probe: ProbeResult | null, env: NodeJS.ProcessEnv): Promise<CheckResult[]> {
  const checks: CheckResult[] = [];
  let version: string;
  try {
    version = await nixVersion(env);
  } catch (err) {
    checks.push(result("nix", "fail", messageOf(err), err instanceof UploaderError ? err.hint : undefined));
    return checks;
  }
  checks.push(result("nix", "ok", `Nix ${version}`));
  const command = await nixCommand(env);
  checks.push(
    command.usable
      ? result("nix-command", "ok", command.enabled ? "nix-command is enabled" : "nix-command works (the uploader enables it for its own calls; nix.conf does not)")
      : result("nix-command", "fail", `nix path-info does not run: ${command.error ?? ""}`, "the uploader needs Nix 2.4 or later (nix path-info --json)"),
  );
  let conf: NixSettings;
  try {
    conf = await nixSettings(env);
  } catch (err) {
    checks.push(result("nix settings", "fail", messageOf(err)));
    return checks;
  }
  const url = settings.url.replace(/\/+$/, "");
  if (probe?.kind === "nix-edge-cache") {
    const keys = probe.description.publicKeys;
    const trusted = listSetting(conf, "trusted-public-keys");
    const missing = keys.filter((k) => !trusted.includes(k));
    if (keys.length === 0) checks.push(result("trusted key", "warn", "the cache announces no key, so Nix cannot check what it serves", "set SIGNING_KEY on the Worker"));
    else if (missing.length === 0) checks.push(result("trusted key", "ok", `Nix trusts the cache's key${keys.length === 1 ? "" : "s"}`));
    else if (missing.length < keys.length) checks.push(result("trusted key", "ok", `Nix trusts ${keys.length - missing.length} of the cache's ${keys.length} keys`));
    else checks.push(result("trusted key", "fail", `Nix does not trust the cache's key (${keys.join(" ")})`, `run uploader use ${url}`));
  }
  const substituters = [...listSetting(conf, "substituters"), ...listSetting(conf, "trusted-substituters")];
  checks.push(
    substituters.some((s) => s.replace(/\/+$/, "") === url)
      ? result("substituter", "ok", `Nix substitutes from ${url}`)
      : result("substituter", "warn", `${url} is not among Nix's substituters`, `run uploader use ${url} (pushing works without it)`),
  );
  const trust = await userTrust(conf, env);
  checks.push(
    trust.trusted === true
      ? result("trusted user", "ok", `the Nix daemon trusts you (${trust.how})`)
      : result("trusted user", "warn", `the Nix daemon does not trust you (${trust.how})`, `your own extra-substituters are ignored: an administrator can run sudo uploader use ${url}`),
  );
  return checks;
}

/** Every check of `uploader doctor`. */
export async function runChecks(settings: CacheSettings, env: NodeJS.ProcessEnv = process.env): Promise<CheckResult[]> {
  const { checks, probe } = await cacheChecks(settings);
  return [...checks, ...(await nixChecks(settings, probe, env))];
}

/**
 * `push`'s preflight: one request that proves the URL is the cache and the token may write,
 * before any NAR is read. Throws the error that every upload would hit; returns warnings
 * (a skewed clock, another kind of cache) for the caller to show.
 */
export async function preflight(settings: CacheSettings): Promise<string[]> {
  const http = probeClient(settings.url, settings.token);
  let probe: ProbeResult;
  try {
    probe = await probeCache(http);
  } finally {
    http.close();
  }
  if (probe.kind === "binary-cache") return [`${settings.url}: ${probe.note}; pushing anyway`];
  const write = writeCheck(settings, probe.description);
  if (write.status === "fail") {
    throw new UploaderError(`${settings.url}: ${write.message}`, settings.token ? EXIT_CACHE : EXIT_USAGE, write.hint);
  }
  const clock = clockCheck(probe.clockSkewMs);
  return clock.status === "ok" ? [] : [`warning: ${clock.message} (${clock.hint})`];
}
