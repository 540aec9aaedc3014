// The whole push against the real Worker (workerd + local R2 through wrangler's
// unstable_startWorker), run as users run it: `node uploader/cli.ts push …`.
//
// What is checked comes from the cache over HTTP, not from the uploader: every narinfo
// parses, its signature verifies with the user's public key (and signatures the path
// already had are kept), its references are in the cache, its NAR's bytes hash to
// FileHash and decompress (with the zstd/xz CLIs) to bytes that hash to the store's
// NarHash. A second push uploads nothing; a corrupted path is never uploaded and blocks
// its dependents without stopping the rest.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFile, readlink, stat } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { formatSha256, normaliseSha256 } from "../../src/nix/hash.ts";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { parsePublicKey, verifyNarInfo } from "../../src/nix/signature.ts";
import { HttpClient } from "../../uploader/http.ts";
import { readSecretKeyFile } from "../../uploader/key-file.ts";
import { planPush } from "../../uploader/plan.ts";
import { Progress, type PushSummary } from "../../uploader/progress.ts";
import { executePlan } from "../../uploader/run-plan.ts";
import { RemoteCache } from "../../uploader/remote-cache.ts";
import { queryClosure } from "../../uploader/store.ts";
import { prepareNar } from "../../uploader/path-upload.ts";
import { CLI, NixSandbox, run, runOk } from "./helpers.ts";
import { startWorker, type TestWorker } from "./worker.ts";

let nix: NixSandbox;
let worker: TestWorker;
let keyDir: string;
let publicKey: string;

beforeAll(async () => {
  nix = await NixSandbox.create();
  worker = await startWorker();
  keyDir = await nix.tempDir("keys-");
  publicKey = (await uploader(["keygen", "--name", "push-test-1", "--secret-key-file", join(keyDir, "sk")])).stdout.trim();
});
afterAll(async () => {
  await worker?.dispose();
  await nix?.cleanup();
});

function uploader(args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const env: NodeJS.ProcessEnv = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token, ...extraEnv };
  delete env.NIX_CACHE_SECRET_KEY_FILE;
  return run(process.execPath, [CLI, ...args], { env });
}

async function pushJson(args: string[]): Promise<PushSummary> {
  const r = await uploader(["push", "--json", ...args]);
  if (r.code !== 0) throw new Error(`push failed (${r.code}):\n${r.stderr}`);
  return JSON.parse(r.stdout) as PushSummary;
}

async function get(path: string): Promise<Response> {
  return fetch(`${worker.url}/${path}`);
}

async function narInfoOf(storePath: string): Promise<NarInfo | null> {
  const res = await get(`${storePath.slice("/nix/store/".length, "/nix/store/".length + 32)}.narinfo`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return parseNarInfo(await res.text());
}

function sha256(bytes: Uint8Array): string {
  return formatSha256(new Uint8Array(createHash("sha256").update(bytes).digest()));
}

/** Decompresses with the reference CLI. */
function decompress(method: string, bytes: Buffer): Promise<Buffer> {
  const cmd = method === "zstd" ? ["zstd", "-d", "-c", "-q"] : ["xz", "-d", "-c"];
  return new Promise((resolve, reject) => {
    const child = execFile(cmd[0]!, cmd.slice(1), { encoding: "buffer", maxBuffer: 256 << 20 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    child.stdin!.end(bytes);
  });
}

/** Checks one path's cache entry from the outside; returns its narinfo. */
async function expectInCache(storePath: string): Promise<NarInfo> {
  const info = (await queryClosure([storePath], { env: nix.env })).find((i) => i.path === storePath);
  const narinfo = await narInfoOf(storePath);
  expect(narinfo, `${storePath} has a narinfo`).not.toBeNull();
  expect(narinfo!.storePath).toBe(storePath);
  expect(normaliseSha256(narinfo!.narHash)).toBe(info!.narHash);
  expect(narinfo!.narSize).toBe(info!.narSize);
  expect(narinfo!.references.map((r) => `/nix/store/${r}`).sort()).toEqual([...info!.references].sort());
  expect(await verifyNarInfo(narinfo!, [parsePublicKey(publicKey)])).toBe(true);
  for (const sig of info!.sigs) expect(narinfo!.sigs).toContain(sig);
  for (const ref of info!.references) expect(await narInfoOf(ref), `reference ${ref} is in the cache`).not.toBeNull();
  const nar = Buffer.from(await (await get(narinfo!.url)).arrayBuffer());
  expect(nar.length).toBe(narinfo!.fileSize);
  expect(sha256(nar)).toBe(narinfo!.fileHash);
  const raw = narinfo!.compression === "none" ? nar : await decompress(narinfo!.compression!, nar);
  expect(raw.length).toBe(info!.narSize);
  expect(sha256(raw)).toBe(info!.narHash);
  return narinfo!;
}

describe("push to the Worker", () => {
  test("a closure is uploaded, signed, references first; a second push uploads nothing", async () => {
    const closure = await nix.buildClosure();
    // A signature the path already has must survive next to ours.
    await nix.nixStore(["--generate-binary-cache-key", "earlier-1", join(keyDir, "earlier-sk"), join(keyDir, "earlier-pk")]);
    await nix.nix(["store", "sign", "--key-file", join(keyDir, "earlier-sk"), closure.tree]);
    const result = join(await nix.tempDir(), "result");
    await runOk("ln", ["-s", closure.top, result]);

    const first = await pushJson(["--secret-key-file", join(keyDir, "sk"), result]);
    expect(first).toMatchObject({ uploaded: 3, alreadyCached: 0, skippedUpstream: 0, failed: 0, blocked: 0 });
    expect(first.fileBytes).toBeGreaterThan(0);
    for (const p of [closure.tree, closure.dep, closure.top]) {
      const narinfo = await expectInCache(p);
      expect(narinfo.compression).toBe("zstd");
      expect(narinfo.url).toMatch(/^nar\/[0-9a-df-np-sv-z]{52}\.nar\.zst$/);
    }
    const top = (await narInfoOf(closure.top))!;
    expect(top.deriver).toBe(closure.drv.slice("/nix/store/".length));
    expect((await narInfoOf(closure.tree))!.sigs.map((s) => s.split(":")[0])).toEqual(["earlier-1", "push-test-1"]);
    expect((await narInfoOf(closure.tree))!.ca).toMatch(/^fixed:r:sha256:/);

    const second = await pushJson(["--secret-key-file", join(keyDir, "sk"), closure.top]);
    expect(second).toMatchObject({ uploaded: 0, alreadyCached: 3, failed: 0, narBytes: 0, fileBytes: 0 });
  });

  test("real Nix substitutes what the uploader pushed, trusting only the uploader's key", async () => {
    const closure = await nix.buildClosure();
    expect(await pushJson(["--secret-key-file", join(keyDir, "sk"), closure.top])).toMatchObject({ uploaded: 3 });
    const store = await nix.tempDir("store-");
    const env = { ...nix.env, XDG_CACHE_HOME: await nix.tempDir("xdg-") };
    await runOk(
      "nix",
      ["copy", "--from", worker.url, "--to", store, closure.top, "--option", "trusted-public-keys", publicKey],
      { env },
    );
    // The whole closure arrived in the new store, executable bit and symlinks included.
    expect(await readFile(`${store}${closure.dep}`, "utf8")).toContain("I am a dependency");
    expect((await stat(`${store}${closure.top}/bin/show`)).mode & 0o111).toBe(0o111);
    expect(await readlink(`${store}${closure.top}/dep-link`)).toBe(closure.dep);
    expect(await readFile(`${store}${closure.tree}/bin/link-to-data`, "utf8")).toMatch(/^data /);
    // A key Nix does not trust: the same substitution is refused.
    const untrusted = await run(
      "nix",
      ["copy", "--from", worker.url, "--to", await nix.tempDir("store-"), closure.top, "--option", "trusted-public-keys", "other-1:rAWTx0noOtf7tqHO5iDnsH7gGNVdQYl99oaJk2gydic="],
      { env: { ...nix.env, XDG_CACHE_HOME: await nix.tempDir("xdg-") } },
    );
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toContain("lacks a valid signature");
  });

  test("xz and uncompressed NARs", async () => {
    const xzPath = await nix.addText("push-xz.txt", "compressed with xz ".repeat(100));
    const nonePath = await nix.addText("push-none.txt", "not compressed");
    expect(await pushJson(["--secret-key-file", join(keyDir, "sk"), "--compression", "xz", "--compression-level", "9", xzPath])).toMatchObject({ uploaded: 1 });
    expect(await pushJson(["--secret-key-file", join(keyDir, "sk"), "--compression", "none", nonePath])).toMatchObject({ uploaded: 1 });
    const xz = await expectInCache(xzPath);
    expect(xz.compression).toBe("xz");
    expect(xz.url).toMatch(/\.nar\.xz$/);
    const none = await expectInCache(nonePath);
    expect(none.compression).toBe("none");
    // Uncompressed, the file is the NAR: Nix names it after the NarHash (PROTOCOL.md §3.3).
    expect(none.fileHash).toBe(normaliseSha256(none.narHash));
    expect(none.url).toBe(`nar/${none.fileHash!.slice("sha256:".length)}.nar`);
  });

  test("--dry-run shows the plan and uploads nothing", async () => {
    const closure = await nix.buildClosure();
    const r = await uploader(["push", "--dry-run", "--json", closure.top]);
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as { dryRun: boolean; toUpload: Array<{ path: string; narSize: number }> };
    expect(plan.dryRun).toBe(true);
    expect(plan.toUpload.map((p) => p.path).indexOf(closure.top)).toBe(2);
    expect(plan.toUpload.map((p) => p.path).sort()).toEqual([closure.tree, closure.dep, closure.top].sort());
    const human = await uploader(["push", "--dry-run", closure.top]);
    expect(human.code).toBe(0);
    expect(human.stderr).toContain("3 to upload");
    expect(human.stderr).toContain(`upload   ${closure.top}`);
    for (const p of [closure.tree, closure.dep, closure.top]) expect(await narInfoOf(p)).toBeNull();
  });

  test("paths signed by an upstream key are skipped unless --no-skip-upstream", async () => {
    const path = await nix.addText("push-upstream.txt");
    await nix.nixStore(["--generate-binary-cache-key", "upstream-test-1", join(keyDir, "up-sk"), join(keyDir, "up-pk")]);
    await nix.nix(["store", "sign", "--key-file", join(keyDir, "up-sk"), path]);
    expect(await pushJson(["--upstream-key", "upstream-test-1", path])).toMatchObject({ uploaded: 0, skippedUpstream: 1 });
    expect(await narInfoOf(path)).toBeNull();
    expect(await pushJson(["--no-skip-upstream", path])).toMatchObject({ uploaded: 1, skippedUpstream: 0 });
    expect(await narInfoOf(path)).not.toBeNull();
  });

  test("a rejected token stops the push with exit code 4 and a hint", async () => {
    const path = await nix.addText("push-badtoken.txt");
    const r = await uploader(["push", path], { NIX_CACHE_TOKEN: "wrong" });
    expect(r.code).toBe(4);
    // The preflight asks the cache once, before reading the closure.
    expect(r.stderr).toContain("error: " + worker.url + ": the token (from env) is not a token of this cache, which may not upload");
    expect(r.stderr).toMatch(/hint: check it against the Worker's WRITE_TOKEN secrets/);
    expect(r.stderr).not.toContain("in the closure");
  });

  test("human output: plain lines and a summary on stderr, nothing on stdout", async () => {
    const path = await nix.addText("push-human.txt");
    const r = await uploader(["push", path]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`uploaded ${path}`);
    expect(r.stderr).toMatch(/1 uploaded, 0 already cached, 0 skipped \(upstream\), 0 failed/);
    expect(r.stderr).toMatch(/done in \d+\.\d s/);
  });
});

describe("the missing query against the Worker", () => {
  test("closures larger than one batch are asked in several requests", async () => {
    const present = await nix.addText("push-batch.txt");
    expect(await pushJson([present])).toMatchObject({ uploaded: 1 });
    const presentHash = present.slice("/nix/store/".length, "/nix/store/".length + 32);
    // Random 160-bit hash parts: 1234 of them are absent (a collision is out of the question).
    const unique = Array.from({ length: 1234 }, () => encodeNix32(randomBytes(20)));
    const http = new HttpClient({ baseUrl: worker.url, token: worker.token });
    const missing = await new RemoteCache(http).missing([...unique.slice(0, 700), presentHash, ...unique.slice(700)]);
    http.close();
    expect(missing.size).toBe(unique.length);
    expect(missing.has(presentHash)).toBe(false);
  });
});

describe("a corrupted store path", () => {
  test("is reported failed and never uploaded; its dependents are blocked, the rest continue", async () => {
    const closure = await nix.buildClosure();
    const infos = await queryClosure([closure.top], { env: nix.env });
    const dep = infos.find((i) => i.path === closure.dep)!;
    // What the dep's compressed NAR would be called if it were uploaded.
    const scratch = await nix.tempDir();
    const http = new HttpClient({ baseUrl: worker.url, token: worker.token });
    const cache = new RemoteCache(http);
    const settings = { cache, compression: "zstd" as const, tmpDir: scratch, secretKey: await readSecretKeyFile(join(keyDir, "sk")) };
    const wouldBe = await prepareNar(dep, settings);

    // The store is read-only, so corrupt the record instead: the disk no longer matches it.
    const corrupted = infos.map((i) => (i.path === closure.dep ? { ...i, narHash: formatSha256(new Uint8Array(32).fill(7)) } : i));
    const lines: string[] = [];
    const stream = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
    const plan = await planPush(corrupted, cache, { upstreamKeys: [] });
    const { summary } = await executePlan(plan, { ...settings, jobs: 4, progress: new Progress({ stream: stream as unknown as NodeJS.WriteStream }) });
    http.close();

    const byPath = new Map(summary.paths.map((p) => [p.path, p]));
    expect(byPath.get(closure.dep)!.outcome).toBe("failed");
    expect(byPath.get(closure.dep)!.error).toMatch(/contents do not match the store database/);
    expect(byPath.get(closure.top)!.outcome).toBe("blocked");
    expect(byPath.get(closure.tree)!.outcome).toBe("uploaded");
    expect(summary).toMatchObject({ uploaded: 1, failed: 1, blocked: 1 });
    expect(lines.join("")).toContain(`failed   ${closure.dep}`);

    expect(await narInfoOf(closure.dep)).toBeNull();
    expect(await narInfoOf(closure.top)).toBeNull();
    expect((await fetch(`${worker.url}/${wouldBe.key}`, { method: "HEAD" })).status).toBe(404);
    await expectInCache(closure.tree);

    // A wrong size alone is caught too.
    const wrongSize = infos.map((i) => (i.path === closure.dep ? { ...i, narSize: i.narSize + 8 } : i));
    const http2 = new HttpClient({ baseUrl: worker.url, token: worker.token });
    const again = await executePlan(await planPush(wrongSize, new RemoteCache(http2), { upstreamKeys: [] }), {
      ...settings,
      cache: new RemoteCache(http2),
      jobs: 1,
      progress: new Progress({ stream: stream as unknown as NodeJS.WriteStream }),
    });
    http2.close();
    expect(again.summary).toMatchObject({ uploaded: 0, alreadyCached: 1, failed: 1, blocked: 1 });
    expect(await narInfoOf(closure.dep)).toBeNull();
  });

  test("through the CLI, paths the cache refuses are reported and the exit code is 1", async () => {
    // A Worker that only accepts narinfos signed by a key we do not have refuses each one.
    const strict = await startWorker({ TRUSTED_PUBLIC_KEYS: "someone-else-1:rAWTx0noOtf7tqHO5iDnsH7gGNVdQYl99oaJk2gydic=" });
    try {
      const closure = await nix.buildClosure();
      const r = await uploader(["push", "--json", closure.top], { NIX_CACHE_URL: strict.url, NIX_CACHE_TOKEN: strict.token });
      expect(r.code).toBe(1);
      const summary = JSON.parse(r.stdout) as PushSummary;
      expect(summary.uploaded).toBe(0);
      expect(summary.failed + summary.blocked).toBe(3);
      expect(summary.failed).toBeGreaterThanOrEqual(1);
      expect(r.stderr).toMatch(/^failed   \/nix\/store\/.*HTTP 4\d\d/m);
      expect(r.stderr).toMatch(/^error: \d path(s)? failed/m);
    } finally {
      await strict.dispose();
    }
  });
});
