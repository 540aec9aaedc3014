// NARs larger than one request, through the Worker's multipart API, as users run the
// uploader (`node uploader/cli.ts push …`) against the real Worker (workerd + local R2)
// with a small request limit of 6 MiB, so that a NAR of a few tens of MiB takes several
// parts and the tests stay quick.
//
// What is checked comes from outside the uploader: the cache's narinfo and NAR over HTTP
// (the NAR's bytes hash to FileHash and decompress to the store's NarHash), a real Nix
// substituting the path into an empty store (contents compared with `nix-store --dump`),
// the Worker's own account of which parts it holds after a push was killed, a file that
// does not hash to its name refused by the Worker's verified completion, two pipelines
// (two write tokens, each with its own upload) pushing one path at once, and plain
// `nix copy` refused with a 413 that names the uploader.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { formatSha256, normaliseSha256 } from "../../src/nix/hash.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { AuthError, HttpError, NetworkError, TooLargeError } from "../../uploader/errors.ts";
import { refusedForGood, uploadInParts } from "../../uploader/multipart.ts";
import { HttpClient } from "../../uploader/http.ts";
import { planPush } from "../../uploader/plan.ts";
import { Progress, type PushSummary } from "../../uploader/progress.ts";
import { executePlan } from "../../uploader/run-plan.ts";
import { RemoteCache } from "../../uploader/remote-cache.ts";
import { queryClosure } from "../../uploader/store.ts";
import { prepareNar } from "../../uploader/path-upload.ts";
import { CLI, NixSandbox, run } from "./helpers.ts";
import { expectStoredNar, expectSubstitutes, randomPath } from "./multipart-helpers.ts";
import { startWorker, type TestWorker } from "./worker.ts";

/** The Worker's request limit in these tests: parts of 6 MiB. */
const LIMIT = 6 * 1024 * 1024;
/** A second write token (WRITE_TOKEN_CI), as a second CI pipeline has. */
const SECOND_TOKEN = randomBytes(16).toString("hex");

let nix: NixSandbox;
let worker: TestWorker;
let keyFile: string;
let publicKey: string;

beforeAll(async () => {
  nix = await NixSandbox.create();
  worker = await startWorker({ MAX_NAR_UPLOAD_BYTES: String(LIMIT), WRITE_TOKEN_CI: SECOND_TOKEN });
  keyFile = join(await nix.tempDir("keys-"), "sk");
  publicKey = (await uploader(["keygen", "--name", "multipart-test-1", "--secret-key-file", keyFile])).stdout.trim();
});
afterAll(async () => {
  await worker?.dispose();
  await nix?.cleanup();
});

function uploaderEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token };
  delete env.NIX_CACHE_SECRET_KEY_FILE;
  return env;
}

function uploader(args: string[]) {
  return run(process.execPath, [CLI, ...args], { env: uploaderEnv() });
}

async function pushJson(args: string[], verbose = true): Promise<{ summary: PushSummary; stderr: string }> {
  const r = await uploader(["push", "--json", ...(verbose ? ["--verbose"] : []), "--secret-key-file", keyFile, ...args]);
  if (r.code !== 0) throw new Error(`push failed (${r.code}):\n${r.stderr}`);
  return { summary: JSON.parse(r.stdout) as PushSummary, stderr: r.stderr };
}

describe("multipart pushes with a 6 MiB request limit", () => {
  test("a NAR over the limit goes in parts, and real Nix substitutes it", { timeout: 300_000 }, async () => {
    const path = await randomPath(nix, "nec-multipart-20m", 20 * 1024 * 1024);
    const { summary, stderr } = await pushJson([path]);
    expect(summary).toMatchObject({ uploaded: 1, failed: 0 });
    const narinfo = await expectStoredNar(worker.url, path);
    expect(narinfo.fileSize).toBeGreaterThan(3 * LIMIT);
    // Sent while being compressed, as an upload named at completion: four parts of 6 MiB,
    // the last one smaller; each sent once.
    expect(stderr).toMatch(/sending parts of 6291456 bytes while compressing \(upload \S+, named at completion\)/);
    expect(stderr.match(/sent part \d+ \(\d+ sent\)/g)).toHaveLength(4);
    expect(summary.sentBytes).toBe(narinfo.fileSize);
    await expectSubstitutes(nix, worker.url, publicKey, path);

    // Nothing to send the second time.
    const again = await pushJson([path]);
    expect(again.summary).toMatchObject({ uploaded: 0, alreadyCached: 1, sentBytes: 0 });
  });

  test("a push killed during a multipart upload sends only the missing parts when run again", { timeout: 300_000 }, async () => {
    const path = await randomPath(nix, "nec-multipart-kill", 60 * 1024 * 1024);
    const [info] = await queryClosure([path], { env: nix.env });
    // The file the uploader will produce (compression is deterministic): its key and size.
    const http = new HttpClient({ baseUrl: worker.url, token: worker.token });
    const prepared = await prepareNar(info!, { cache: new RemoteCache(http), compression: "zstd", tmpDir: await nix.tempDir("prep-") });
    const parts = Math.ceil(prepared.fileSize / LIMIT);
    expect(parts).toBeGreaterThanOrEqual(10);

    // Kill the push (SIGKILL: no cleanup at all) once the Worker has confirmed two parts.
    const child = spawn(process.execPath, [CLI, "push", "--verbose", "--secret-key-file", keyFile, path], { env: uploaderEnv(), stdio: ["ignore", "ignore", "pipe"] });
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
    let confirmed = 0;
    let log = "";
    await new Promise<void>((resolve) => {
      child.stderr!.on("data", (d: Buffer) => {
        log += d.toString();
        confirmed = (log.match(/sent part /g) ?? []).length;
        if (confirmed >= 2) resolve();
      });
      void exited.then(() => resolve());
    });
    child.kill("SIGKILL");
    await exited;
    expect(confirmed, log).toBeGreaterThanOrEqual(2);

    // What the Worker holds: the same start a re-run makes (it resumes the upload the push
    // named, changes nothing). Parts whose bytes were already on their way when the push
    // died still arrive, so ask until two answers a second apart agree.
    const name = /\(upload (\S+), named at completion\)/.exec(log)?.[1];
    expect(name, log).toBeDefined();
    const holding = async (): Promise<{ parts: Array<{ partNumber: number; size: number }> }> => {
      const res = await fetch(`${worker.url}/_api/v1/multipart/nar`, {
        method: "POST",
        headers: { Authorization: `Bearer ${worker.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { parts: Array<{ partNumber: number; size: number }> };
    };
    let held = await holding();
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      const now = await holding();
      if (JSON.stringify(now) === JSON.stringify(held)) break;
      held = now;
    }
    const heldBytes = held.parts.reduce((n, p) => n + p.size, 0);
    expect(held.parts.length).toBeGreaterThanOrEqual(2);
    expect(held.parts.length).toBeLessThan(parts);
    expect((await fetch(`${worker.url}/${prepared.key}`, { method: "HEAD" })).status).toBe(404);
    http.close();

    // Without --verbose: a resumed upload says so.
    const { summary, stderr } = await pushJson([path], false);
    expect(summary).toMatchObject({ uploaded: 1, failed: 0 });
    expect(stderr).toContain(`${name}: resuming an earlier upload, ${held.parts.length} parts already in the cache`);
    expect(stderr).toContain(`uploaded ${path} (`);
    expect(stderr).toMatch(/ already in the cache\)\n/);
    // Exactly the missing parts were sent, each once.
    expect(summary.sentBytes).toBe(prepared.fileSize - heldBytes);
    expect(summary.sentBytes).toBeLessThan(prepared.fileSize);
    const narinfo = await expectStoredNar(worker.url, path);
    expect(narinfo.fileSize).toBe(prepared.fileSize);
    expect(normaliseSha256(narinfo.narHash)).toBe(info!.narHash);
    await expectSubstitutes(nix, worker.url, publicKey, path);
  });

  test("a NAR over the limit that compresses within it goes in one PUT, not in parts", { timeout: 120_000 }, async () => {
    const dir = join(await nix.tempDir("text-"), "nec-multipart-text");
    await mkdir(dir);
    await writeFile(join(dir, "data.txt"), `${randomBytes(8).toString("hex")} a line of text that compresses well\n`.repeat(400_000));
    const path = await nix.add(dir);
    const [info] = await queryClosure([path], { env: nix.env });
    expect(info!.narSize).toBeGreaterThan(2 * LIMIT);
    const { summary, stderr } = await pushJson([path]);
    expect(summary).toMatchObject({ uploaded: 1, failed: 0 });
    const narinfo = await expectStoredNar(worker.url, path);
    expect(narinfo.fileSize).toBeLessThan(LIMIT);
    expect(stderr).not.toMatch(/while compressing|sent part/);
    expect(summary.sentBytes).toBe(narinfo.fileSize);
  });

  test("a large path that does not match its store record is not stored, and the parts sent meanwhile are dropped", { timeout: 300_000 }, async () => {
    const path = await randomPath(nix, "nec-multipart-mismatch", 20 * 1024 * 1024);
    const [info] = await queryClosure([path], { env: nix.env });
    const http = new HttpClient({ baseUrl: worker.url, token: worker.token });
    try {
      const cache = new RemoteCache(http);
      const settings = { cache, compression: "zstd" as const, tmpDir: await nix.tempDir("mismatch-") };
      const wouldBe = await prepareNar(info!, settings);
      // The store is read-only, so corrupt the record instead: the disk no longer matches it.
      const narHash = formatSha256(new Uint8Array(32).fill(7));
      const lines: string[] = [];
      const stream = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
      const plan = await planPush([{ ...info!, narHash }], cache, { upstreamKeys: [] });
      const progress = new Progress({ stream: stream as unknown as NodeJS.WriteStream, verbose: true });
      const observe = { detail: (m: string) => progress.detail(m), log: (m: string) => progress.log(m) };
      const { summary } = await executePlan(plan, { ...settings, jobs: 4, progress, observe });
      expect(summary).toMatchObject({ uploaded: 0, failed: 1 });
      // Parts went while compressing (the NAR is found wrong only at its end) ...
      expect(lines.join("")).toMatch(/sent part 1 /);
      expect((await fetch(`${worker.url}/${wouldBe.key}`, { method: "HEAD" })).status).toBe(404);
      expect((await fetch(`${worker.url}/${info!.hashPart}.narinfo`)).status).toBe(404);
      // ... and were dropped: a start under the push's name for those bytes begins afresh.
      const name = `${info!.hashPart}-${narHash}-zstd`;
      expect(lines.join("")).toContain(`(upload ${name}, named at completion)`);
      const res = await fetch(`${worker.url}/_api/v1/multipart/nar`, {
        method: "POST",
        headers: { Authorization: `Bearer ${worker.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
      expect(res.status).toBe(201);
      expect(((await res.json()) as { parts: unknown[] }).parts).toEqual([]);
    } finally {
      http.close();
    }
  });

  test("plain nix copy of a path over the limit fails with a 413 naming the uploader", { timeout: 120_000 }, async () => {
    const path = await randomPath(nix, "nec-multipart-nixcopy", 8 * 1024 * 1024);
    const netrc = join(await nix.tempDir("netrc-"), "netrc");
    await writeFile(netrc, `machine 127.0.0.1 login nix password ${worker.token}\n`, { mode: 0o600 });
    const env = { ...nix.env, XDG_CACHE_HOME: await nix.tempDir("xdg-") };
    const r = await run("nix", ["copy", "--to", `${worker.url}?compression=zstd`, path, "--option", "netrc-file", netrc], { env });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/413/);
    expect(r.stderr).toMatch(/push large paths with the uploader \(npx uploader push\)/);
    // Nothing half-stored: the path is not in the cache.
    const hashPart = path.slice("/nix/store/".length, "/nix/store/".length + 32);
    expect((await fetch(`${worker.url}/${hashPart}.narinfo`)).status).toBe(404);
  });
});

describe("integrity with several writers", () => {
  test("two pipelines pushing the same large path at once both succeed, and the NAR is stored once", { timeout: 300_000 }, async () => {
    const path = await randomPath(nix, "nec-multipart-two-tokens", 20 * 1024 * 1024);
    const push = (token: string) =>
      run(process.execPath, [CLI, "push", "--json", "--verbose", "--secret-key-file", keyFile, path], { env: { ...uploaderEnv(), NIX_CACHE_TOKEN: token } });
    const results = await Promise.all([push(worker.token), push(SECOND_TOKEN)]);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(r.stdout) as PushSummary;
      expect(summary.failed).toBe(0);
      expect(summary.uploaded + summary.alreadyCached).toBe(1);
    }
    const narinfo = await expectStoredNar(worker.url, path);
    expect(narinfo.fileSize).toBeGreaterThan(3 * LIMIT);
    await expectSubstitutes(nix, worker.url, publicKey, path);
  });

  test("a file that does not hash to its name is refused: nothing stored, nothing left to resume", { timeout: 120_000 }, async () => {
    const file = join(await nix.tempDir("forged-"), "nar.zst");
    const bytes = randomBytes(2 * LIMIT + 1000);
    await writeFile(file, bytes);
    // The name of other bytes of the same size.
    const key = `nar/${encodeNix32(new Uint8Array(createHash("sha256").update(randomBytes(bytes.length)).digest()))}.nar.zst`;
    const http = new HttpClient({ baseUrl: worker.url, token: worker.token });
    try {
      const err = await uploadInParts(http, key, file, bytes.length).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(HttpError);
      expect((err as HttpError).status).toBe(400);
      expect((err as HttpError).message).toMatch(/do not hash to the sha256/);
      expect((await fetch(`${worker.url}/${key}`, { method: "HEAD" })).status).toBe(404);
      // A new start finds no upload to resume.
      const res = await fetch(`${worker.url}/_api/v1/multipart/${key}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${worker.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ size: bytes.length }),
      });
      expect(res.status).toBe(201);
      expect(((await res.json()) as { parts: unknown[] }).parts).toEqual([]);
    } finally {
      http.close();
    }
  });
});

test("the uploader aborts an upload the cache refused for good, and keeps one it could not reach", () => {
  const http = (status: number) => new HttpError("PUT", "http://cache/x", status, "");
  for (const status of [400, 404, 409, 411, 422]) expect(refusedForGood(http(status)), String(status)).toBe(true);
  expect(refusedForGood(new TooLargeError("PUT", "http://cache/x", 413, ""))).toBe(true);
  for (const status of [408, 429, 500, 503]) expect(refusedForGood(http(status)), String(status)).toBe(false);
  expect(refusedForGood(new AuthError("PUT", "http://cache/x", 401, ""))).toBe(false);
  expect(refusedForGood(new NetworkError("connection refused"))).toBe(false);
  expect(refusedForGood(new Error("a bug"))).toBe(false);
});
