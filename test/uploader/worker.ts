// The Worker on loopback for the uploader's tests: wrangler's `unstable_startWorker` with
// the project's wrangler.toml, a fresh R2 bucket and D1 index in a temporary directory
// (the index's migrations applied first, as `npm start` does) and a random write token. UPSTREAM_CACHES is empty unless given, so the Worker checks every narinfo's
// references against this cache alone.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unstable_startWorker } from "wrangler";
import { PROJECT_ROOT } from "./helpers.ts";
import { applyLocalMigrations } from "../../dev/local-cache.ts";

export interface TestWorker {
  url: string;
  token: string;
  dispose: () => Promise<void>;
}

export async function startWorker(vars: Record<string, string> = {}): Promise<TestWorker> {
  // Wrangler's banner and one log line per request would drown the test output.
  process.env.WRANGLER_LOG ??= "warn";
  const token = randomBytes(16).toString("hex");
  const plain = Object.fromEntries(
    Object.entries({ UPSTREAM_CACHES: "", ...vars }).map(([k, value]) => [k, { type: "plain_text" as const, value }]),
  );
  const state = await mkdtemp(join(tmpdir(), "nec-worker-"));
  await applyLocalMigrations(state);
  const worker = await unstable_startWorker({
    config: join(PROJECT_ROOT, "wrangler.toml"),
    bindings: { WRITE_TOKEN: { type: "secret_text", value: token }, ...plain },
    // A path: wrangler keeps R2 and D1 there (the type says boolean; the path form is what
    // `wrangler dev --persist-to` uses too).
    dev: { server: { hostname: "127.0.0.1", port: 0 }, inspector: false, persist: state as unknown as boolean, watch: false },
  });
  await worker.ready;
  const url = String(await worker.url).replace(/\/$/, "");
  const dispose = async () => {
    await worker.dispose();
    await rm(state, { recursive: true, force: true });
  };
  return { url, token, dispose };
}
