// The local stand-in for the bucket's public domain (src/local/public-bucket.ts), started
// next to `npm start`'s Worker, by the end-to-end tests and by bench/serve.ts: `wrangler dev`
// of that small Worker with `--persist-to` the cache's own directory, so it serves the
// objects the cache's Worker stored (the same local R2, not a copy), by key, with their
// stored headers, as R2 serves a bucket on a custom domain. Not part of the npm package.
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join, resolve } from "node:path";

const PROJECT_ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const CONFIG = join(PROJECT_ROOT, "src", "local", "public-bucket.toml");
/** wrangler dev builds and starts workerd: seconds on a quiet machine, more on a busy one. */
const START_TIMEOUT_MS = 60_000;

export class PublicBucket {
  readonly url: string;
  readonly #child: ChildProcess;
  readonly #output: { text: string };

  private constructor(url: string, child: ChildProcess, output: { text: string }) {
    this.url = url;
    this.#child = child;
    this.#output = output;
  }

  /**
   * Serves the bucket persisted under `persistTo` (what the cache's `wrangler dev
   * --persist-to` was given) on 127.0.0.1:`port`. `stdio: "inherit"` shows wrangler's
   * output (npm start); otherwise it is kept for `logs`.
   */
  static async start(persistTo: string, port: number, opts: { inherit?: boolean } = {}): Promise<PublicBucket> {
    const wrangler = join(PROJECT_ROOT, "node_modules", ".bin", "wrangler");
    const args = ["dev", "--config", CONFIG, "--persist-to", persistTo, "--ip", "127.0.0.1", "--port", String(port), "--show-interactive-dev-session=false"];
    const child = spawn(wrangler, args, {
      cwd: PROJECT_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      env: {
        ...process.env,
        PATH: `${join(PROJECT_ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
        WRANGLER_SEND_METRICS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
      },
    });
    const output = { text: "" };
    const collect = (d: Buffer): void => {
      output.text += d.toString();
      if (opts.inherit === true) process.stderr.write(d);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!output.text.includes(`Ready on ${url}`)) {
      if (child.exitCode !== null) throw new Error(`the public bucket stand-in exited with ${child.exitCode}:\n${output.text.slice(-3000)}`);
      if (Date.now() > deadline) {
        killGroup(child, "SIGKILL");
        throw new Error(`the public bucket stand-in did not come up within ${START_TIMEOUT_MS / 1000} s:\n${output.text.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return new PublicBucket(url, child, output);
  }

  /** What wrangler printed so far: one `[wrangler:info] GET /<key> …` line per request. */
  get logs(): string {
    return this.#output.text;
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((r) => this.#child.once("exit", r));
    killGroup(this.#child, "SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    killGroup(this.#child, "SIGKILL");
  }
}

/** Signals the stand-in's own process group (wrangler and its workerd), nothing else. */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}
