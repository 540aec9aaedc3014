// Credentials for private upstream caches, in the netrc format Nix users already write for
// their own substituters (Nix sends HTTP Basic from a netrc entry; cachix, attic and this
// cache all take the token as the password):
//
//   netrc   = { entry }                  tokens separated by any whitespace (one line is fine)
//   entry   = ("machine" <name> | "default") { "login" <user> | "password" <secret> | "account" <x> }
//
// `<name>` is a host name as curl matches it, or `host:port` (an extension, so two
// upstreams on one host can differ by port). `macdef` (macros) is not supported. Parse
// errors name the entry by position and never echo a token, since the text is a secret.

import { toBase64, utf8 } from "../nix/encoding.ts";

export interface NetrcEntry {
  /** Host (or host:port) the entry is for; null for the `default` entry. */
  machine: string | null;
  login: string;
  password: string;
}

/** Thrown for text that is not a netrc file; the message names the entry, never a value. */
export class NetrcError extends Error {
  override name = "NetrcError";
}

/** Parses netrc text into its entries, in order. */
export function parseNetrc(text: string): NetrcEntry[] {
  const tokens = text.split(/\s+/).filter((t) => t !== "");
  const entries: NetrcEntry[] = [];
  let current: { machine: string | null; login?: string; password?: string } | null = null;
  const finish = (): void => {
    if (current === null) return;
    const which = current.machine === null ? "the default entry" : `the entry for ${current.machine}`;
    if (current.password === undefined) throw new NetrcError(`${which} has no password`);
    entries.push({ machine: current.machine, login: current.login ?? "", password: current.password });
    current = null;
  };
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const value = (): string => {
      const v = tokens[i + 1];
      if (v === undefined) throw new NetrcError(`"${token}" at the end of the text has no value`);
      i++;
      return v;
    };
    switch (token) {
      case "machine":
        finish();
        current = { machine: value().toLowerCase() };
        break;
      case "default":
        finish();
        current = { machine: null };
        break;
      case "login":
      case "password":
      case "account": {
        if (current === null) throw new NetrcError(`"${token}" appears before any "machine" or "default"`);
        const v = value();
        if (token === "login") current.login = v;
        if (token === "password") current.password = v;
        break;
      }
      case "macdef":
        throw new NetrcError('"macdef" (netrc macros) is not supported');
      default:
        throw new NetrcError(`unexpected word number ${i + 1} (expected machine, default, login, password or account)`);
    }
  }
  finish();
  return entries;
}

/**
 * The entry for a URL: `machine host:port` first, then `machine host`, then `default`, as
 * curl picks them (the first matching entry wins).
 */
export function netrcEntryFor(entries: readonly NetrcEntry[], url: URL): NetrcEntry | null {
  const host = url.host.toLowerCase();
  const hostname = url.hostname.toLowerCase();
  return (
    entries.find((e) => e.machine === host) ??
    entries.find((e) => e.machine === hostname) ??
    entries.find((e) => e.machine === null) ??
    null
  );
}

/** The `Authorization` header value for an entry: HTTP Basic, as Nix sends it. */
export function basicAuthorization(entry: NetrcEntry): string {
  return `Basic ${toBase64(utf8(`${entry.login}:${entry.password}`))}`;
}
