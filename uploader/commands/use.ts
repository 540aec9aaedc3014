// `uploader use <cache-url>`: configures the local Nix to substitute from the cache. Reads
// the cache's public keys (GET /_api/v1/cache), writes `extra-substituters` and
// `extra-trusted-public-keys` into nix.conf (nothing twice), a netrc entry for a private
// cache, and says whether the Nix daemon will honour it for this user. Or prints the
// snippet for nix.conf, NixOS or a flake instead of writing anything.
import { homedir, userInfo } from "node:os";
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile, chmod } from "node:fs/promises";
import { EXIT_CACHE, UploaderError, UsageError } from "../errors.ts";
import { probeCache, probeClient } from "../cache-probe.ts";
import { DAEMON_SOCKET, nixSettings, userTrust } from "../nix-config.ts";
import { CACHE_OPTIONS, ENV, parseCommandLine, resolveCache } from "../settings.ts";

export const HELP = `Usage: uploader use [options] <cache-url|name>

Configures Nix to substitute from the cache: asks the cache for its public keys, then
adds to nix.conf (once; existing lines are kept)
  extra-substituters = <cache-url>
  extra-trusted-public-keys = <its keys>
and, for a private cache, a netrc entry with the read token (Nix sends it as the
password). Says whether the Nix daemon honours this for you (trusted users, or
trusted-substituters).

nix.conf: /etc/nix/nix.conf (or $NIX_CONF_DIR/nix.conf) for root, else
~/.config/nix/nix.conf; netrc: the netrc-file Nix uses for root, else ~/.config/nix/netrc
(named in that nix.conf).

Options:
  --nix-conf <file>         write to this nix.conf instead
  --netrc-file <file>       write the netrc entry to this file instead
  --print <format>          print the snippet instead of writing: nix.conf, nixos or flake
  --key <name:base64>       trust this key too (repeatable; for caches that announce none)
  --token <token>           the read (or write) token of a private cache  [env ${ENV.token}]
  -h, --help                show this help
`;

type Format = "nix.conf" | "nixos" | "flake";
const FORMATS: readonly Format[] = ["nix.conf", "nixos", "flake"];

/** The lines or Nix expression that make Nix use the cache. */
export function snippet(format: Format, url: string, keys: readonly string[]): string {
  if (format === "nix.conf") return `extra-substituters = ${url}\nextra-trusted-public-keys = ${keys.join(" ")}\n`;
  const list = (xs: readonly string[]) => `[ ${xs.map((x) => JSON.stringify(x)).join(" ")} ]`;
  const body = `extra-substituters = ${list([url])};\n    extra-trusted-public-keys = ${list(keys)};`;
  return format === "nixos"
    ? `# configuration.nix\n{\n  nix.settings = {\n    ${body}\n  };\n}\n`
    : `# flake.nix (users are asked to accept it, or it applies for trusted users)\n{\n  nixConfig = {\n    ${body}\n  };\n}\n`;
}

/** Settings lines (`name = words…`) of a nix.conf, by name, with `extra-` merged in. */
function wordsOf(text: string, name: string): string[] {
  const words: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(?:extra-)?([a-z-]+)\s*=(.*)$/.exec(line.replace(/#.*/, ""));
    if (m && m[1] === name) words.push(...m[2]!.trim().split(/\s+/).filter((w) => w !== ""));
  }
  return words;
}

/** The same URL as Nix compares substituters (without a trailing slash). */
function sameUrl(a: string, b: string): boolean {
  return a.replace(/\/+$/, "") === b.replace(/\/+$/, "");
}

/**
 * nix.conf with the cache added: only what is missing, under one comment. Returns the new
 * text and what was added (empty when everything was there).
 */
export function withCache(text: string, url: string, keys: readonly string[], netrcFile?: string): { text: string; added: string[] } {
  const added: string[] = [];
  if (!wordsOf(text, "substituters").some((u) => sameUrl(u, url))) added.push(`extra-substituters = ${url}`);
  const trusted = wordsOf(text, "trusted-public-keys");
  const newKeys = keys.filter((k) => !trusted.includes(k));
  if (newKeys.length > 0) added.push(`extra-trusted-public-keys = ${newKeys.join(" ")}`);
  if (netrcFile !== undefined && !/^\s*netrc-file\s*=/m.test(text)) added.push(`netrc-file = ${netrcFile}`);
  if (added.length === 0) return { text, added };
  const prefix = text === "" || text.endsWith("\n") ? text : `${text}\n`;
  return { text: `${prefix}# ${url}, added by uploader use\n${added.join("\n")}\n`, added };
}

/** netrc text with `machine <host>` set to the token (replacing that machine's entry). */
export function withNetrcEntry(text: string, host: string, token: string): string {
  const kept = text.split("\n").filter((line) => !new RegExp(`^\\s*machine\\s+${host.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(\\s|$)`).test(line) && line !== "");
  return `${[...kept, `machine ${host} login nix password ${token}`].join("\n")}\n`;
}

async function readOrEmpty(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw new UploaderError(`cannot read ${file}: ${(err as Error).message}`, 3);
  }
}

async function write(file: string, text: string, mode?: number): Promise<void> {
  try {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, text, mode === undefined ? {} : { mode });
    if (mode !== undefined) await chmod(file, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UploaderError(
      `cannot write ${file}: ${(err as Error).message}`,
      3,
      code === "EACCES" || code === "EPERM" ? "run it as root (sudo) for the system's nix.conf, or give --nix-conf / --print" : undefined,
    );
  }
}

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    "nix-conf": { type: "string" },
    "netrc-file": { type: "string" },
    print: { type: "string" },
    key: { type: "string", multiple: true },
    token: CACHE_OPTIONS.token,
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length > 1) throw new UsageError("give one cache", "usage: uploader use [options] <cache-url|name>");
  const format = values.print as Format | undefined;
  if (format !== undefined && !FORMATS.includes(format)) throw new UsageError(`--print takes ${FORMATS.join(", ")}, got "${format}"`);
  const settings = resolveCache({ cache: positionals[0], token: values.token });
  const url = settings.url.replace(/\/+$/, "");

  const http = probeClient(settings.url, settings.token);
  let keys: string[] = [...(values.key ?? [])];
  let isPrivate = false;
  let canRead = true;
  try {
    const probe = await probeCache(http);
    if (probe.kind === "nix-edge-cache") {
      keys = [...new Set([...probe.description.publicKeys, ...keys])];
      isPrivate = probe.description.private;
      canRead = probe.description.access.read;
    } else if (keys.length === 0) {
      throw new UploaderError(`${url}: ${probe.note}, which does not announce its keys`, EXIT_CACHE, "pass the key its narinfos are signed with: --key name:base64");
    }
  } finally {
    http.close();
  }
  if (keys.length === 0) {
    throw new UploaderError(
      `${url} announces no public key: it neither signs (SIGNING_KEY) nor requires signatures (TRUSTED_PUBLIC_KEYS)`,
      EXIT_CACHE,
      "pass the key its narinfos are signed with (--key name:base64), or set SIGNING_KEY on the Worker",
    );
  }

  if (format !== undefined) {
    process.stdout.write(snippet(format, url, keys));
    if (isPrivate) process.stderr.write(`note: the cache is private: Nix also needs a netrc entry: machine ${new URL(url).hostname} login nix password <READ_TOKEN>\n`);
    return;
  }

  const root = userInfo().uid === 0;
  const confDir = process.env.NIX_CONF_DIR || "/etc/nix";
  const userConfDir = join(process.env.XDG_CONFIG_HOME || join(homedir(), ".config"), "nix");
  const nixConf = values["nix-conf"] ?? (root ? join(confDir, "nix.conf") : join(userConfDir, "nix.conf"));
  const lines: string[] = [];

  let netrcFile: string | undefined;
  let nameNetrcInConf = false;
  if (isPrivate) {
    if (!settings.token || !canRead) {
      throw new UploaderError(
        `${url} is private and ${settings.token ? "does not accept this token for reading" : "no token was given"}`,
        EXIT_CACHE,
        `give its READ_TOKEN (or a write token): set ${ENV.token}, pass --token, or run uploader login ${url} first`,
      );
    }
    if (values["netrc-file"]) {
      netrcFile = values["netrc-file"];
      nameNetrcInConf = true;
    } else if (root) {
      const setting = (await nixSettings().catch(() => new Map())).get("netrc-file");
      netrcFile = typeof setting === "string" && setting !== "" ? setting : join(confDir, "netrc");
    } else {
      netrcFile = join(userConfDir, "netrc");
      nameNetrcInConf = true;
    }
    const host = new URL(url).hostname;
    await write(netrcFile, withNetrcEntry(await readOrEmpty(netrcFile), host, settings.token), 0o600);
    lines.push(`netrc entry for ${host} written to ${netrcFile} (mode 0600)`);
  }

  const before = await readOrEmpty(nixConf);
  const { text, added } = withCache(before, url, keys, nameNetrcInConf ? netrcFile : undefined);
  if (added.length > 0) {
    await write(nixConf, text);
    lines.unshift(`added to ${nixConf}:\n${added.map((l) => `  ${l}`).join("\n")}`);
  } else {
    lines.unshift(`${nixConf} already uses ${url} and trusts its key${keys.length === 1 ? "" : "s"}`);
  }

  const trust = await userTrust(await nixSettings().catch(() => new Map())).catch(() => ({ trusted: null, how: "Nix could not be asked" }));
  const system = nixConf === join(confDir, "nix.conf");
  if (trust.trusted === true || system) {
    lines.push(`Nix will substitute from ${url}${trust.trusted === true && !system ? ` (you are a trusted user: ${trust.how})` : ""}`);
    if (system && added.length > 0 && existsSync(DAEMON_SOCKET)) lines.push("restart the Nix daemon for it to read the new settings (systemctl restart nix-daemon)");
  } else {
    lines.push(
      `warning: you are not a trusted user of the Nix daemon (${trust.how}): it ignores extra-substituters and keys from your own nix.conf.\n` +
        `  Ask an administrator to run \`sudo uploader use ${url}\`, or to add to /etc/nix/nix.conf:\n` +
        `    extra-trusted-substituters = ${url}\n    extra-trusted-public-keys = ${keys.join(" ")}`,
    );
  }
  process.stderr.write(`${lines.join("\n")}\n`);
}
