// `npm start`: run the cache locally, the way a newcomer first tries it.
//
// Starts the Worker under `wrangler dev` with local R2 storage and a local D1 index (its
// migrations applied first, so a fresh or older state directory is brought up to date),
// after making sure a throwaway write token and signing key exist (generated once into the
// state directory, never committed), and prints what Nix and the uploader need to use it. Tests start the
// cache through this same script, so what the README promises is what they exercise. A
// development tool, in dev/ with the public bucket's stand-in: not part of the npm package.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { appendFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import {
  formatPublicKey,
  formatSecretKey,
  generateKeyPair,
  parseSecretKey,
  publicKeyOf,
} from "../src/nix/signature.ts";
import { PublicBucket } from "./public-bucket.ts";

const PROJECT_ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
/** wrangler dev's own default port; the README and docs use it. */
const DEFAULT_PORT = 8787;
/** Name of the throwaway signing key; `-1` follows Nix's convention of numbering keys. */
const LOCAL_KEY_NAME = "nix-edge-cache-local-1";

const HELP = `Usage: npm start [-- options]

Starts a local nix-edge-cache (the Worker under wrangler dev, local R2 and D1) on
http://127.0.0.1:${DEFAULT_PORT}, creating a throwaway write token and signing key on first run.

Options:
  --port <n>        port to listen on (default ${DEFAULT_PORT})
  --state <dir>     where the token, key, R2 and D1 data live (default .wrangler/local-cache)
  --var KEY:VALUE   override a Worker setting from wrangler.toml (repeatable),
                    e.g. --var UPSTREAM_CACHES: to check references against this cache only
  --public-bucket   also serve the bucket as R2 serves it on a public domain, on the next
                    port (a local stand-in), and set NAR_BASE_URL to it: NARs are then
                    downloaded from there, and Nix can read the bucket directly
  -h, --help        show this help
`;

interface LocalSecrets {
  writeToken: string;
  /** ADMIN_TOKEN: garbage collection and pins (uploader gc, uploader pin). */
  adminToken: string;
  signingKey: string;
  publicKey: string;
}

/**
 * A random token in hex: 192 bits, and never starting with "-" (a base64url token did one
 * time in 64, and `--token <it>` on a command line then reads as an option).
 */
function newToken(): string {
  return randomBytes(24).toString("hex");
}

/**
 * Applies the D1 index's migrations (migrations/) to the local database kept under
 * `persistTo` (what `wrangler dev --persist-to` and unstable_startWorker's `persist` use).
 */
export async function applyLocalMigrations(persistTo: string): Promise<void> {
  const wrangler = join(PROJECT_ROOT, "node_modules", ".bin", "wrangler");
  const args = ["d1", "migrations", "apply", "DB", "--local", "--config", join(PROJECT_ROOT, "wrangler.toml"), "--persist-to", persistTo];
  const output: string[] = [];
  const code = await new Promise<number | null>((resolvePromise, reject) => {
    const child = spawn(wrangler, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        PATH: `${join(PROJECT_ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
        WRANGLER_SEND_METRICS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        CI: "true",
      },
    });
    child.stdout.on("data", (d: Buffer) => output.push(d.toString()));
    child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
    child.on("error", reject);
    child.on("exit", resolvePromise);
  });
  if (code !== 0) throw new Error(`applying the D1 migrations failed (wrangler ${args.join(" ")}):\n${output.join("").slice(-2000)}`);
}

/** Reads `KEY=value` lines (the .dev.vars format wrangler reads). */
function parseDevVars(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) vars.set(m[1]!, m[2]!);
  }
  return vars;
}

/** Loads the state directory's secrets, creating them on first use. */
export async function ensureLocalSecrets(stateDir: string): Promise<LocalSecrets> {
  const varsFile = join(stateDir, "dev.vars");
  if (existsSync(varsFile)) {
    const vars = parseDevVars(await readFile(varsFile, "utf8"));
    const writeToken = vars.get("WRITE_TOKEN");
    const signingKey = vars.get("SIGNING_KEY");
    if (writeToken && signingKey) {
      let adminToken = vars.get("ADMIN_TOKEN");
      if (!adminToken) {
        // A state directory from before ADMIN_TOKEN existed: add one, keep the rest.
        adminToken = newToken();
        await appendFile(varsFile, `ADMIN_TOKEN=${adminToken}\n`);
      }
      return { writeToken, adminToken, signingKey, publicKey: formatPublicKey(publicKeyOf(parseSecretKey(signingKey))) };
    }
  }
  await mkdir(stateDir, { recursive: true });
  const key = await generateKeyPair(LOCAL_KEY_NAME);
  const secrets = {
    writeToken: newToken(),
    adminToken: newToken(),
    signingKey: formatSecretKey(key),
    publicKey: formatPublicKey(publicKeyOf(key)),
  };
  await writeFile(
    varsFile,
    `# Throwaway secrets for the local cache, generated by npm start. Never deploy these.\n` +
      `WRITE_TOKEN=${secrets.writeToken}\nSIGNING_KEY=${secrets.signingKey}\nADMIN_TOKEN=${secrets.adminToken}\n`,
    { mode: 0o600 },
  );
  await writeFile(join(stateDir, "public-key"), secrets.publicKey);
  return secrets;
}

/**
 * A netrc file with the write token, for `nix copy --to` (Nix sends HTTP Basic from netrc;
 * the machine is the bare host, which is all curl matches). Rewritten on every start, so
 * it always holds the current token; the user's own netrc is never touched.
 */
async function writeNetrc(stateDir: string, s: LocalSecrets): Promise<string> {
  const file = join(stateDir, "netrc");
  await writeFile(file, `machine 127.0.0.1 login nix password ${s.writeToken}\n`, { mode: 0o600 });
  return file;
}

function usage(url: string, s: LocalSecrets, netrc: string): string {
  return `
nix-edge-cache is starting on ${url}  (local R2 storage; Ctrl-C stops it)

  Use it from Nix (nix.conf, or --option on the command line):
    extra-substituters = ${url}
    extra-trusted-public-keys = ${s.publicKey}

  Push with the uploader (or store URL and token once: npx uploader login ${url}):
    export NIX_CACHE_URL=${url} NIX_CACHE_TOKEN=${s.writeToken}
    npx uploader push ./result

  Push with plain Nix (the token is the password in this netrc file):
    nix copy --extra-experimental-features nix-command --to '${url}?compression=zstd' --option netrc-file ${netrc} ./result
  Nix keeps the narinfos it uploaded, without the cache's signature, for 30 days: to
  substitute them on this machine, add --option narinfo-cache-positive-ttl 0.

  Collect garbage, pin a closure (the admin token):
    export NIX_CACHE_ADMIN_TOKEN=${s.adminToken}
    npx uploader gc --dry-run
    npx uploader pin release ./result

  The cache signs every narinfo it stores with the throwaway key above.
`;
}

/** Asks the Worker for /nix-cache-info until it answers (or the Worker has exited). */
async function firstCacheInfo(url: string, exited: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !exited(); i++) {
    try {
      if ((await fetch(`${url}/nix-cache-info`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function publicBucketUsage(url: string, bucketUrl: string, s: LocalSecrets): string {
  return `
  The bucket, as R2 serves it on a public domain: ${bucketUrl}  (a local stand-in)
    NAR_BASE_URL=${bucketUrl}: narinfos from ${url} send NAR downloads there
    (one Worker request per path). Or read the bucket directly (no Worker request):
    extra-substituters = ${bucketUrl}
    extra-trusted-public-keys = ${s.publicKey}
  Pushes still go to ${url}.
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      state: { type: "string" },
      var: { type: "string", multiple: true },
      "public-bucket": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const port = values.port ? Number(values.port) : DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port must be a port number, got ${values.port}`);
  }
  const stateDir = resolve(values.state ?? join(PROJECT_ROOT, ".wrangler", "local-cache"));
  const secrets = await ensureLocalSecrets(stateDir);
  const url = `http://127.0.0.1:${port}`;
  await applyLocalMigrations(join(stateDir, "r2"));
  process.stderr.write(usage(url, secrets, await writeNetrc(stateDir, secrets)));
  const bucketPort = port + 1;
  const bucketUrl = `http://127.0.0.1:${bucketPort}`;
  if (values["public-bucket"]) process.stderr.write(publicBucketUsage(url, bucketUrl, secrets));

  const args = [
    "dev",
    "--config", join(PROJECT_ROOT, "wrangler.toml"),
    "--ip", "127.0.0.1",
    "--port", String(port),
    "--persist-to", join(stateDir, "r2"),
    "--env-file", join(stateDir, "dev.vars"),
    "--show-interactive-dev-session=false",
    ...(values.var ?? []).flatMap((v) => ["--var", v]),
    ...(values["public-bucket"] ? ["--var", `NAR_BASE_URL:${bucketUrl}`] : []),
  ];
  const wrangler = join(PROJECT_ROOT, "node_modules", ".bin", "wrangler");
  const child = spawn(wrangler, args, {
    stdio: "inherit",
    env: {
      ...process.env,
      PATH: `${join(PROJECT_ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
    },
  });
  // The stand-in reads the same persisted R2 (dev/public-bucket.ts).
  const bucket = values["public-bucket"] ? await PublicBucket.start(join(stateDir, "r2"), bucketPort, { inherit: true }) : null;
  // The Worker writes the bucket's nix-cache-info object when it first answers for it
  // (deployed, the cron trigger does it within a minute); direct readers need it at once.
  if (bucket !== null) await firstCacheInfo(url, () => child.exitCode !== null);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      child.kill(signal);
      void bucket?.stop();
    });
  }
  child.on("exit", (code, signal) => {
    void (bucket?.stop() ?? Promise.resolve()).then(() => process.exit(code ?? (signal ? 1 : 0)));
  });
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
