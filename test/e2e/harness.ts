// End-to-end harness: a real Nix 2.8 (Debian's nix-bin) against the cache as the README
// starts it (`npm start`, i.e. dev/local-cache.ts → wrangler dev → workerd + local R2).
//
// Nix runs single-user with a private NIX_CONF_DIR (see the project's reference notes on
// Nix 2.8 in tests): no sandbox, no substituters by default, and the test-friendly
// settings that keep a failure from stalling (download-attempts = 1, short stall timeout).
// Every Nix command gets a fresh XDG_CACHE_HOME so its narinfo disk cache cannot hide
// requests from the Worker.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import {
  PROJECT_ROOT,
  run,
  runOk,
  buildClosure as buildClosureIn,
  type Closure,
  type RunResult,
} from "../uploader/helpers.ts";

// One set of process and closure helpers serves the uploader tests and these.
export { PROJECT_ROOT, run, runOk, type Closure, type RunResult };

/** Settings every Nix command in the tests runs with (NIX-CLIENT.md §2.2). */
const NIX_CONF = `sandbox = false
build-users-group =
experimental-features = nix-command
substituters =
narinfo-cache-negative-ttl = 0
download-attempts = 1
stalled-download-timeout = 10
`;

export async function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolvePromise(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** A private Nix configuration; `env()` gives a fresh narinfo disk cache each call. */
export class NixClient {
  readonly dir: string;
  readonly confDir: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.confDir = join(dir, "nix-conf");
  }

  static async create(): Promise<NixClient> {
    const dir = await mkdtemp(join(tmpdir(), "nec-nix-"));
    const client = new NixClient(dir);
    await mkdir(client.confDir, { recursive: true });
    await writeFile(join(client.confDir, "nix.conf"), NIX_CONF);
    return client;
  }

  async env(): Promise<NodeJS.ProcessEnv> {
    const xdg = await mkdtemp(join(this.dir, "xdg-"));
    const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONF_DIR: this.confDir, XDG_CACHE_HOME: xdg };
    // A store path in a process's environment is a GC root; keep ours clean of them.
    for (const k of Object.keys(env)) if (k.startsWith("NIX_TEST_")) delete env[k];
    return env;
  }

  async nix(args: string[]): Promise<RunResult> {
    return run("nix", args, { env: await this.env() });
  }

  async nixStore(args: string[]): Promise<RunResult> {
    return run("nix-store", args, { env: await this.env() });
  }

  async netrc(token: string): Promise<string> {
    const file = join(this.dir, `netrc-${randomBytes(4).toString("hex")}`);
    await writeFile(file, `machine 127.0.0.1 login nix password ${token}\n`, { mode: 0o600 });
    return file;
  }

  async emptyStore(): Promise<string> {
    return mkdtemp(join(this.dir, "store-"));
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A fresh 3-path closure built with `nix`'s configuration (see buildClosure in the uploader helpers). */
export async function buildClosure(nix: NixClient): Promise<Closure> {
  return buildClosureIn(await nix.env(), await mkdtemp(join(nix.dir, "closure-")));
}

/** The cache as `npm start` runs it, on a free port with its own state directory. */
export class LocalCache {
  readonly url: string;
  readonly stateDir: string;
  readonly token: string;
  readonly publicKey: string;
  private readonly child: ChildProcess;
  private readonly captured: { text: string };
  /** Whether stop() deletes the state directory (not when it was another cache's). */
  private ownsState = true;

  private constructor(url: string, stateDir: string, token: string, publicKey: string, child: ChildProcess, output: { text: string }) {
    this.url = url;
    this.stateDir = stateDir;
    this.token = token;
    this.publicKey = publicKey;
    this.child = child;
    this.captured = output;
  }

  /**
   * Starts `npm start`'s launcher. `vars` override wrangler.toml settings; the tests have
   * no internet, so the default upstream (cache.nixos.org) is always switched off.
   * `sharing`: run on that cache's state directory (its bucket, index and secrets), as a
   * second deployment of the same bucket with other settings; stop() then leaves it.
   */
  static async start(vars: Record<string, string> = {}, opts: { sharing?: LocalCache } = {}): Promise<LocalCache> {
    // freePort() only finds a port that was free a moment ago; another test may take it
    // before wrangler binds it. Such a start fails fast, and a new port is tried.
    for (let attempt = 1; ; attempt++) {
      try {
        return await LocalCache.startOnce(vars, await freePort(), opts.sharing?.stateDir);
      } catch (err) {
        const portTaken = err instanceof Error && /EADDRINUSE|Address already in use/.test(err.message);
        if (!portTaken || attempt >= 3) throw err;
      }
    }
  }

  /** With `sharedStateDir`: a second Worker on another cache's bucket, index and secrets. */
  private static async startOnce(vars: Record<string, string>, port: number, sharedStateDir?: string): Promise<LocalCache> {
    const stateDir = sharedStateDir ?? (await mkdtemp(join(tmpdir(), "nec-cache-")));
    const allVars = { UPSTREAM_CACHES: "", ...vars };
    const args = [
      join(PROJECT_ROOT, "dev", "local-cache.ts"),
      "--port", String(port),
      "--state", stateDir,
      ...Object.entries(allVars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
    ];
    const child = spawn(process.execPath, args, {
      cwd: PROJECT_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
      detached: true,
    });
    const output = { text: "" };
    child.stdout?.on("data", (d: Buffer) => (output.text += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output.text += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) {
        throw new Error(`npm start exited with ${child.exitCode}:\n${output.text.split("\n").slice(-30).join("\n")}`);
      }
      // Wait for wrangler's own "Ready on <url>" too: if another process took the port,
      // that process would answer the request below.
      try {
        if (output.text.includes(`Ready on ${url}`)) {
          const res = await fetch(`${url}/nix-cache-info`);
          if (res.status === 200) break;
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`the local cache did not come up within 60 s:\n${output.text.split("\n").slice(-30).join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    const vars2 = await readFile(join(stateDir, "dev.vars"), "utf8");
    const token = /^WRITE_TOKEN=(.*)$/m.exec(vars2)?.[1];
    const publicKey = (await readFile(join(stateDir, "public-key"), "utf8")).trim();
    if (!token) throw new Error("no WRITE_TOKEN in the local cache's dev.vars");
    const cache = new LocalCache(url, stateDir, token, publicKey, child, output);
    cache.ownsState = sharedStateDir === undefined;
    return cache;
  }

  get logs(): string {
    return this.captured.text;
  }

  /**
   * A fingerprint of every object body stored in local R2 (miniflare keeps each in a blob
   * file under `v3/r2/<bucket>/blobs/`; edge-cache entries live elsewhere), to assert that
   * a refused request changed nothing.
   */
  async bucketSnapshot(): Promise<string> {
    const root = join(this.stateDir, "r2");
    const lines: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch {
        return;
      }
      for (const name of names.sort()) {
        const p = join(dir, name);
        const s = await stat(p);
        if (s.isDirectory()) await walk(p);
        else if (p.includes("/v3/r2/") && p.includes("/blobs/")) lines.push(`${p.slice(root.length)} ${s.size}`);
      }
    };
    await walk(root);
    return lines.join("\n");
  }

  async stop(): Promise<void> {
    if (this.child.pid && this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      try {
        process.kill(-this.child.pid, "SIGTERM");
      } catch {
        // already gone
      }
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      try {
        process.kill(-this.child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (this.ownsState) await rm(this.stateDir, { recursive: true, force: true });
  }
}
