// `uploader login <cache-url>`: checks the cache and the tokens, then stores them in the
// config file (config-file.ts, mode 0600) under a name, so that push, gc, pin and the
// others work without flags. Several caches, each by name (`--cache <name>`); the first
// (or `--default`) is used when none is named.
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { CACHE_NAME, configFilePath, readConfigFile, writeConfigFile, type CacheEntry } from "../config-file.ts";
import { AuthError, EXIT_CACHE, UploaderError, UsageError } from "../errors.ts";
import { probeCache, probeClient } from "../cache-probe.ts";
import { readSecretKeyFile } from "../key-file.ts";
import { ENV, parseCommandLine, resolveSetting } from "../settings.ts";

export const HELP = `Usage: uploader login [options] <cache-url>

Checks that <cache-url> is a nix-edge-cache and that the tokens are valid for it, then
stores the URL and tokens in the uploader's config file (mode 0600):
  \${XDG_CONFIG_HOME:-~/.config}/nix-edge-cache/config.json   (or $NIX_CACHE_CONFIG)
Afterwards push, gc, pin, unpin, pins and doctor use this cache without flags; with
several caches stored, pick one with --cache <name>. Flags and environment variables
still win over what is stored.

The write token comes from ${ENV.token}, --token-stdin (one line on standard input), or
a prompt on a terminal; the admin token likewise (${ENV.adminToken}, --admin-token-stdin).

Options:
  --name <name>             the name to store it under (default: the URL's host name)
  --default                 use this cache when none is named (the first one stored is)
  --token-stdin             read the write token (or a read token) from standard input
  --admin-token-stdin       read the Worker's ADMIN_TOKEN from standard input
  --no-token                store no write token (a public cache, read-only use)
  --secret-key-file <file>  also remember a signing key for push   [env ${ENV.secretKeyFile}]
  --token <token>, --admin-token <token>
                            the tokens as arguments (visible to other users in ps)
  -h, --help                show this help
`;

/** The entry name a URL gets without --name: its host, with the port when there is one. */
export function defaultName(url: URL): string {
  const name = `${url.hostname}${url.port ? `-${url.port}` : ""}`.replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
  return CACHE_NAME.test(name) ? name : "cache";
}

/** One line from standard input (a pipe), or typed at a prompt on a terminal without echo. */
async function readLine(prompt: string | undefined): Promise<string> {
  const input = process.stdin;
  if (prompt && input.isTTY) return readHidden(prompt);
  const rl = createInterface({ input, terminal: false });
  try {
    for await (const line of rl) return line.trim();
    return "";
  } finally {
    rl.close();
  }
}

/** A secret typed (or pasted) at a terminal: nothing is echoed; Enter ends it, Ctrl-C aborts. */
function readHidden(prompt: string): Promise<string> {
  const input = process.stdin;
  process.stderr.write(prompt);
  input.setRawMode(true);
  input.resume();
  let text = "";
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      input.off("data", onData);
      input.setRawMode(false);
      input.pause();
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(text.trim());
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return done();
        if (ch === "\u0003") return done(new UsageError("login interrupted", "nothing was stored"));
        if (ch === "\u007f" || ch === "\b") text = text.slice(0, -1);
        else text += ch;
      }
    };
    input.on("data", onData);
  });
}

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    name: { type: "string" },
    default: { type: "boolean" },
    "token-stdin": { type: "boolean" },
    "admin-token-stdin": { type: "boolean" },
    "no-token": { type: "boolean" },
    token: { type: "string" },
    "admin-token": { type: "string" },
    "secret-key-file": { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length !== 1) throw new UsageError("give the cache's URL", "usage: uploader login [options] <cache-url>");
  if (values["token-stdin"] && values["admin-token-stdin"]) throw new UsageError("only one token can come from standard input", "pass the other in its environment variable");
  const raw = positionals[0]!;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`"${raw}" is not a URL`, "give the cache's URL, e.g. https://cache.example.com");
  }
  const name = values.name ?? defaultName(url);
  if (!CACHE_NAME.test(name)) throw new UsageError(`--name "${name}" may only have letters, digits, ".", "_" and "-" (at most 64)`);

  const file = configFilePath();
  const config = readConfigFile(file);
  const previous = config.caches[name];

  // Each setting as every command resolves it (flag, environment, then what login stored
  // for this same URL), except that a token read from standard input wins, and the write
  // token is asked for on a terminal when none is given.
  const stored = previous?.url === raw ? previous : undefined;
  let token = values["no-token"]
    ? undefined
    : values["token-stdin"]
      ? (await readLine(undefined)) || undefined
      : resolveSetting(values.token, ENV.token, stored?.token)?.value;
  const adminToken = values["admin-token-stdin"]
    ? (await readLine(undefined)) || stored?.adminToken
    : resolveSetting(values["admin-token"], ENV.adminToken, stored?.adminToken)?.value;
  if (!values["no-token"] && !values["token-stdin"] && token === undefined && process.stdin.isTTY) {
    token = (await readLine(`write token for ${raw} (not shown; empty for none): `)) || undefined;
  }
  const keyFile = resolveSetting(values["secret-key-file"], ENV.secretKeyFile, stored?.secretKeyFile);
  // A key file given now is checked; the stored one was checked when it was stored.
  if (keyFile !== undefined && keyFile.from !== "config") await readSecretKeyFile(keyFile.value);

  // Check before storing: the URL is this kind of cache and each token does what it is for.
  const http = probeClient(raw, token);
  let access: string;
  try {
    const probe = await probeCache(http);
    if (probe.kind !== "nix-edge-cache") {
      throw new UploaderError(`${raw}: ${probe.note}`, EXIT_CACHE, "login stores nix-edge-cache caches; push works with others given --cache and NIX_CACHE_TOKEN");
    }
    const a = probe.description.access;
    if (token !== undefined && !a.write && !a.read) throw new AuthError("GET", raw, 401, "the cache does not accept this token", "check it against the Worker's WRITE_TOKEN secrets (or READ_TOKEN)");
    if (token !== undefined && !a.write && a.admin) {
      throw new AuthError("GET", raw, 403, "this is the admin token, not a write token", "pass it as the admin token (--admin-token-stdin or NIX_CACHE_ADMIN_TOKEN)");
    }
    access = token === undefined ? "no token" : a.write ? "write token accepted" : "read token accepted (pushes will be refused)";
    if (adminToken !== undefined) {
      const admin = probeClient(raw, adminToken);
      try {
        const p = await probeCache(admin);
        if (p.kind !== "nix-edge-cache" || !p.description.access.admin) {
          throw new AuthError("GET", raw, 401, "the cache does not accept the admin token", "it is the Worker's ADMIN_TOKEN secret");
        }
      } finally {
        admin.close();
      }
      access += ", admin token accepted";
    }
  } finally {
    http.close();
  }

  const entry: CacheEntry = { url: raw };
  if (token !== undefined) entry.token = token;
  if (adminToken !== undefined) entry.adminToken = adminToken;
  if (keyFile !== undefined) entry.secretKeyFile = resolve(keyFile.value);
  config.caches[name] = entry;
  if (values.default || config.default === undefined) config.default = name;
  writeConfigFile(file, config);
  process.stderr.write(
    `logged in to ${raw} as "${name}" (${access})${config.default === name ? ", the default cache" : `; use it with --cache ${name}`}\n` +
      `stored in ${file} (mode 0600)\n`,
  );
}
