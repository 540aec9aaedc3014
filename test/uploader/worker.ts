// The Worker on loopback for the uploader's tests: wrangler's `unstable_startWorker` with
// the project's wrangler.toml, a fresh in-memory R2 bucket (persist: false) and a random
// write token. UPSTREAM_CACHES is empty unless given, so the Worker checks every narinfo's
// references against this cache alone.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { unstable_startWorker } from "wrangler";
import { PROJECT_ROOT } from "./helpers.ts";

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
  const worker = await unstable_startWorker({
    config: join(PROJECT_ROOT, "wrangler.toml"),
    bindings: { WRITE_TOKEN: { type: "secret_text", value: token }, ...plain },
    dev: { server: { hostname: "127.0.0.1", port: 0 }, inspector: false, persist: false, watch: false },
  });
  await worker.ready;
  const url = String(await worker.url).replace(/\/$/, "");
  return { url, token, dispose: () => worker.dispose() };
}
