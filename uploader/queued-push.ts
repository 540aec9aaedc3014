// One push of queued store paths, for `watch-store` (each batch) and `post-build-hook`
// (its direct-push fallback): the same pipeline as `uploader push` — closure
// (store.ts) → plan (plan.ts) → upload (run-plan.ts, path-upload.ts) — with one HTTP client and
// one temp directory kept for the watcher's whole life.
//
// Queued paths can stop being valid between queuing and pushing (a build that failed
// after taking its lock, a garbage collection), so they are checked first and the invalid
// ones reported apart rather than failing the batch. The outcome says, per queued path,
// whether it is in the cache now (its narinfo is there, so its closure is too).
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SecretKey } from "../src/nix/signature.ts";
import type { CompressionMethod } from "./compress.ts";
import { AuthError, HttpError, NetworkError, NixError, UploaderError, messageOf } from "./errors.ts";
import { HttpClient, permanentFailureHint } from "./http.ts";
import { preflight } from "./checks.ts";
import { planPush } from "./plan.ts";
import { Progress, formatBytes } from "./progress.ts";
import { executePlan, socketsFor } from "./run-plan.ts";
import { RemoteCache } from "./remote-cache.ts";
import type { CacheSettings } from "./settings.ts";
import { queryClosure } from "./store.ts";

/** Paths per `nix-store --check-validity` call: keeps the command line well under ARG_MAX. */
const VALIDITY_CHUNK = 500;

export interface PusherSettings {
  cacheUrl: string;
  token: string | undefined;
  secretKey: SecretKey | undefined;
  compression: CompressionMethod;
  level: number | undefined;
  jobs: number;
  upstreamKeys: readonly string[];
  verbose: boolean;
  /** Environment for nix and nix-store (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

export interface BatchOutcome {
  /** Queued paths now in the cache: uploaded, already there, or signed by an upstream cache. */
  done: string[];
  /** Queued paths that are not valid in the local store: nothing to push. */
  invalid: string[];
  /** Queued paths not pushed, and why (the path failed, or a path of its closure did). */
  failed: Array<{ path: string; error: string }>;
  /** Set when the cache refused the token: every later request would fail the same way. */
  fatal?: AuthError;
  /** Paths of the closures uploaded by this push. */
  uploaded: number;
}

export class Pusher {
  readonly #settings: PusherSettings;
  readonly #http: HttpClient;
  readonly #probe: HttpClient;
  readonly #cache: RemoteCache;
  #tmp: string | undefined;

  constructor(settings: PusherSettings) {
    this.#settings = settings;
    const progress = new Progress({ verbose: settings.verbose });
    this.#http = new HttpClient({
      baseUrl: settings.cacheUrl,
      token: settings.token,
      maxSockets: socketsFor(settings.jobs),
      onRetry: (e) => progress.retry(e),
    });
    // One attempt: the watcher has its own, longer, backoff between probes.
    this.#probe = new HttpClient({ baseUrl: settings.cacheUrl, token: settings.token, maxAttempts: 1 });
    this.#cache = new RemoteCache(this.#http);
  }

  get cacheUrl(): string {
    return String(this.#http.baseUrl);
  }

  /** Pushes `paths` with their closures. Throws when the batch could not be planned. */
  async push(paths: readonly string[]): Promise<BatchOutcome> {
    const settings = this.#settings;
    const invalid = new Set(await invalidPaths(paths, settings.env));
    const valid = paths.filter((p) => !invalid.has(p));
    if (valid.length === 0) return { done: [], invalid: [...invalid], failed: [], uploaded: 0 };

    const closure = await queryClosure(valid, settings.env ? { env: settings.env } : {});
    const plan = await planPush(closure, this.#cache, { upstreamKeys: settings.upstreamKeys });
    const outcomes = new Map<string, { outcome: string; error?: string | undefined }>();
    for (const p of plan.alreadyCached) outcomes.set(p.path, { outcome: "cached" });
    for (const p of plan.skippedUpstream) outcomes.set(p.path, { outcome: "upstream" });
    let fatal: AuthError | undefined;
    let uploaded = 0;
    if (plan.toUpload.length > 0) {
      const progress = new Progress({ verbose: settings.verbose });
      const bytes = plan.toUpload.reduce((n, p) => n + p.narSize, 0);
      progress.log(
        `pushing ${plural(valid.length, "new path")}: ${plural(closure.length, "path")} in the closure, ` +
          `${plan.toUpload.length} to upload (${formatBytes(bytes)} of NARs), ${plan.alreadyCached.length} already cached, ` +
          `${plan.skippedUpstream.length} skipped (upstream)`,
      );
      this.#tmp ??= await mkdtemp(join(tmpdir(), "nix-edge-cache-watch-"));
      const outcome = await executePlan(plan, {
        cache: this.#cache,
        compression: settings.compression,
        level: settings.level,
        secretKey: settings.secretKey,
        tmpDir: this.#tmp,
        jobs: settings.jobs,
        progress,
        observe: { nar: () => progress.counter("nar"), sent: () => progress.counter("sent"), detail: (m) => progress.detail(m) },
      });
      for (const r of outcome.summary.paths) outcomes.set(r.path, { outcome: r.outcome, error: r.error });
      fatal = outcome.fatal;
      uploaded = outcome.summary.uploaded;
    }
    const done: string[] = [];
    const failed: BatchOutcome["failed"] = [];
    for (const path of valid) {
      const o = outcomes.get(path);
      if (o && (o.outcome === "uploaded" || o.outcome === "cached" || o.outcome === "upstream")) done.push(path);
      else failed.push({ path, error: o?.error ?? "not pushed" });
    }
    return fatal ? { done, invalid: [...invalid], failed, fatal, uploaded } : { done, invalid: [...invalid], failed, uploaded };
  }

  /** Null when the cache answers `GET /nix-cache-info` now, else why it does not. */
  async probe(): Promise<string | null> {
    try {
      await this.#probe.request({ method: "GET", path: "nix-cache-info" });
      return null;
    } catch (err) {
      return messageOf(err);
    }
  }

  async close(): Promise<void> {
    this.#http.close();
    this.#probe.close();
    if (this.#tmp) await rm(this.#tmp, { recursive: true, force: true });
    this.#tmp = undefined;
  }

  /** The temp directory, for a synchronous clean-up when the process is aborted. */
  get tmpDir(): string | undefined {
    return this.#tmp;
  }
}

/** What to wait for when `err` says the cache is away or refuses us; null otherwise. */
export function cacheTrouble(err: UploaderError): string | null {
  if (err instanceof NetworkError) return `the cache to answer (${err.message})`;
  if (err instanceof AuthError) return `the cache to accept the token (${err.message}${err.hint ? `; ${err.hint}` : ""})`;
  if (err instanceof HttpError && (err.status === 408 || err.status === 429 || err.status >= 500)) return `the cache to recover (${err.message})`;
  return null;
}

/**
 * push's preflight for a watcher that is starting: a URL that is not this cache, a token
 * that may not write or a URL that cannot work (TLS against plain HTTP, an unknown host)
 * throw, as they would for push; a cache that is only away (refused connection, 5xx) is
 * returned as what to wait for, since the watcher queues until it is back. Returns the
 * preflight's warnings otherwise.
 */
export async function checkCacheAtStart(settings: CacheSettings): Promise<{ warnings: string[]; away?: string }> {
  try {
    return { warnings: await preflight(settings) };
  } catch (err) {
    if (err instanceof NetworkError && err.cause instanceof Error && permanentFailureHint(err.cause, new URL(settings.url)) !== undefined) throw err;
    const away = err instanceof UploaderError && !(err instanceof AuthError) ? cacheTrouble(err) : null;
    if (away) return { warnings: [], away };
    throw err;
  }
}

/**
 * The output paths of a derivation (`nix-store --query --outputs`): what post-build-hook
 * queues when Nix leaves OUT_PATHS empty (Nix 2.8.0, NixOS/nix#6446; rebuilds in 2.30
 * and 2.31, NixOS/nix#14287).
 */
export async function derivationOutputs(drv: string, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const out = await nixStore(["--query", "--outputs", drv], env);
  return out.split("\n").filter((l) => l !== "");
}

/** Runs nix-store to completion; its stdout, or a NixError quoting its last lines. */
function nixStore(args: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    execFile("nix-store", args, { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const code = (err as NodeJS.ErrnoException).code;
      reject(
        code === "ENOENT"
          ? new NixError("cannot run nix-store: not found", "install Nix (https://nixos.org/download) or put it on PATH")
          : new NixError(`nix-store ${args[0]} failed: ${stderr.trim().split("\n").slice(-3).join("\n") || messageOf(err)}`),
      );
    });
  });
}

/** The paths of `paths` that are not valid in the local store (`nix-store --check-validity`). */
export async function invalidPaths(paths: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const invalid: string[] = [];
  for (let i = 0; i < paths.length; i += VALIDITY_CHUNK) {
    const chunk = paths.slice(i, i + VALIDITY_CHUNK);
    const out = await nixStore(["--check-validity", "--print-invalid", ...chunk], env);
    invalid.push(...out.split("\n").filter((l) => l !== ""));
  }
  return invalid;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
