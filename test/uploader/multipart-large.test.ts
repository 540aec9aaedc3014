// A NAR of more than 250 MB (random data, so it stays that large compressed) pushed by the
// uploader to the Worker with its default request limit (100 MiB, the free plan's): it goes
// in 64 MiB parts, the cache serves exactly the file the narinfo describes, and a real Nix
// substitutes it into an empty store with the same contents.
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { PushSummary } from "../../uploader/progress.ts";
import { CLI, NixSandbox, run } from "./helpers.ts";
import { expectStoredNar, expectSubstitutes, randomPath } from "./multipart-helpers.ts";
import { startWorker, type TestWorker } from "./worker.ts";

/** Just over 250 MiB of data: four full 64 MiB parts and a small fifth. */
const BYTES = 256 * 1024 * 1024 + 12_345;

let nix: NixSandbox;
let worker: TestWorker;

beforeAll(async () => {
  nix = await NixSandbox.create();
  worker = await startWorker();
});
afterAll(async () => {
  await worker?.dispose();
  await nix?.cleanup();
});

test("a NAR over 250 MB goes in parts under the default limit, and real Nix substitutes it", { timeout: 600_000 }, async () => {
  const limits = await fetch(`${worker.url}/_api/v1/limits`, { headers: { Authorization: `Bearer ${worker.token}` } });
  expect(((await limits.json()) as { maxRequestBytes: number }).maxRequestBytes).toBe(100 * 1024 * 1024);

  const env: NodeJS.ProcessEnv = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token };
  const keyFile = join(await nix.tempDir("keys-"), "sk");
  const publicKey = (await run(process.execPath, [CLI, "keygen", "--name", "large-test-1", "--secret-key-file", keyFile], { env })).stdout.trim();
  const path = await randomPath(nix, "nec-multipart-large", BYTES);

  const r = await run(process.execPath, [CLI, "push", "--json", "--verbose", "--secret-key-file", keyFile, path], { env });
  expect(r.code, r.stderr).toBe(0);
  const summary = JSON.parse(r.stdout) as PushSummary;
  expect(summary).toMatchObject({ uploaded: 1, failed: 0 });
  // Sent while being compressed, in five parts of 64 MiB (the last one smaller).
  expect(r.stderr).toMatch(/sending parts of 67108864 bytes while compressing/);
  expect(r.stderr.match(/sent part \d+ \(\d+ sent\)/g)).toHaveLength(5);

  const narinfo = await expectStoredNar(worker.url, path);
  expect(narinfo.fileSize).toBeGreaterThan(250_000_000);
  expect(summary.sentBytes).toBe(narinfo.fileSize);
  await expectSubstitutes(nix, worker.url, publicKey, path);
});
