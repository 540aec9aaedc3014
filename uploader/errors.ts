// The uploader's typed errors and the exit code each one maps to.
//
// Library modules throw these and never print; only the CLI boundary (cli.ts) turns an
// error into a message on stderr and an exit code. Every error carries a message that says
// what went wrong, and where it helps, a `hint` that says what to do about it.

/** Exit codes, documented in `uploader push --help`. */
export const EXIT_OK = 0;
/** The push ran to the end, but at least one path failed (or was blocked by one). */
export const EXIT_PATHS_FAILED = 1;
/** Bad command line or missing setting: nothing was attempted. */
export const EXIT_USAGE = 2;
/** A local problem: Nix missing, a path not in the store, an unreadable key file. */
export const EXIT_LOCAL = 3;
/** The cache could not be used: unreachable, token rejected, or an unexpected answer. */
export const EXIT_CACHE = 4;
/** A bug: an error that is not one of ours. */
export const EXIT_INTERNAL = 70;
/** Interrupted by SIGINT (128 + signal number 2, the shell convention). */
export const EXIT_INTERRUPTED = 130;

/** Base class: an error the CLI may show to the user as is (no stack trace). */
export class UploaderError extends Error {
  readonly exitCode: number;
  readonly hint: string | undefined;
  constructor(message: string, exitCode: number, hint?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.hint = hint;
  }
}

/** The command line or the settings are wrong. */
export class UsageError extends UploaderError {
  constructor(message: string, hint?: string) {
    super(message, EXIT_USAGE, hint ?? "run with --help to see the options");
  }
}

/** `nix` could not be run, or it failed. */
export class NixError extends UploaderError {
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super(message, EXIT_LOCAL, hint, options);
  }
}

/** An argument is not (and does not point to) a valid path in the Nix store. */
export class InvalidStorePathError extends UploaderError {
  readonly path: string;
  constructor(path: string, reason: string, hint?: string) {
    super(`${path}: ${reason}`, EXIT_LOCAL, hint);
    this.path = path;
  }
}

/** A key file is missing, unreadable, malformed, or (for keygen) already exists. */
export class KeyFileError extends UploaderError {
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super(message, EXIT_LOCAL, hint, options);
  }
}

/** A file in a store path cannot be put in a NAR (socket, FIFO, device node). */
export class UnsupportedFileError extends UploaderError {
  readonly path: string;
  constructor(path: string, kind: string) {
    super(`${path}: a ${kind} cannot be stored in a NAR`, EXIT_LOCAL);
    this.path = path;
  }
}

/**
 * The NAR serialised from disk does not match what the store database recorded for the
 * path: the store path was modified or is corrupted, so it must not be pushed.
 */
export class NarMismatchError extends UploaderError {
  readonly path: string;
  constructor(path: string, expected: { narHash: string; narSize: number }, got: { narHash: string; narSize: number }) {
    super(
      `${path}: contents do not match the store database ` +
        `(recorded ${expected.narHash}, ${expected.narSize} bytes; ` +
        `read ${got.narHash}, ${got.narSize} bytes); not uploaded`,
      EXIT_LOCAL,
      `check the store with \`nix-store --verify --check-contents\`, or repair it with \`nix-store --repair-path ${path}\``,
    );
    this.path = path;
  }
}

/** The cache answered an HTTP request with an error status (after any retries). */
export class HttpError extends UploaderError {
  readonly status: number;
  readonly method: string;
  readonly url: string;
  constructor(method: string, url: string, status: number, serverMessage: string, hint?: string) {
    super(
      `${method} ${url}: HTTP ${status}${serverMessage ? `: ${serverMessage}` : ""}`,
      EXIT_CACHE,
      hint,
    );
    this.status = status;
    this.method = method;
    this.url = url;
  }
}

/**
 * The cache rejected the credentials (401) or the token may not write (403). Every later
 * request would fail the same way, so a push stops at the first one.
 */
export class AuthError extends HttpError {}

/** The request body is larger than the cache (or Cloudflare in front of it) accepts. */
export class TooLargeError extends HttpError {}

/** The cache could not be reached, even after retries. */
export class NetworkError extends UploaderError {
  constructor(message: string, options?: ErrorOptions & { hint?: string | undefined }) {
    super(message, EXIT_CACHE, options?.hint ?? "check --cache / NIX_CACHE_URL and the network", options);
  }
}

/** The push finished but some paths were not uploaded. The summary has the details. */
export class PushIncompleteError extends UploaderError {
  readonly failed: number;
  readonly blocked: number;
  constructor(failed: number, blocked: number) {
    const parts = [`${failed} path${failed === 1 ? "" : "s"} failed`];
    if (blocked > 0) parts.push(`${blocked} not uploaded because a dependency failed`);
    super(parts.join(", "), EXIT_PATHS_FAILED);
    this.failed = failed;
    this.blocked = blocked;
  }
}

/** Errors a command already printed as part of its --json result (cli.ts prints no second object). */
const inJsonResult = new WeakSet<object>();

/** Marks `err` as printed in the command's --json result; returns it. */
export function markReportedAsJson<T>(err: T): T {
  if (typeof err === "object" && err !== null) inJsonResult.add(err);
  return err;
}

export function reportedAsJson(err: unknown): boolean {
  return typeof err === "object" && err !== null && inJsonResult.has(err);
}

/** The exit code for any thrown value. */
export function exitCodeOf(err: unknown): number {
  return err instanceof UploaderError ? err.exitCode : EXIT_INTERNAL;
}

/** A one-line description of any thrown value, for per-path reports. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
