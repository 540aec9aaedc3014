// `uploader import` end to end, with real parts only: caches written by the real Nix
// (`nix copy --to file://…`, xz and zstd), the same directory served by Debian's nginx (as
// an S3/MinIO bucket with anonymous download), an S3 API (s3rver, checking SigV4) holding
// a bucket with the layout `nix copy --to s3://` writes, and a `nix-store --export`
// stream. After each import the real Nix substitutes the closure from the Worker into an
// empty store, trusting only the source cache's key (or, for the export stream, the
// import's key), and `nix-store --dump` of every path matches the source store.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import type { PushSummary } from "../../uploader/progress.ts";
import { CLI, NixSandbox, run, runOk, type Closure, type RunResult } from "../uploader/helpers.ts";
import { startWorker, type TestWorker } from "../uploader/worker.ts";
import { Nginx, S3Server, S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY } from "./import-servers.ts";

let nix: NixSandbox;
let worker: TestWorker;
/** The source cache's key pair, as `nix-store --generate-binary-cache-key` writes it. */
let sourceSecret: string;
let sourcePublic: string;

beforeAll(async () => {
  nix = await NixSandbox.create();
  worker = await startWorker();
  const keys = await nix.tempDir("keys-");
  sourceSecret = join(keys, "source.sec");
  await nix.nixStore(["--generate-binary-cache-key", "old-cache-1", sourceSecret, join(keys, "source.pub")]);
  sourcePublic = (await readFile(join(keys, "source.pub"), "utf8")).trim();
});
afterAll(async () => {
  await worker?.dispose();
  await nix?.cleanup();
});

function uploader(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token, ...extraEnv };
  for (const k of ["NIX_CACHE_SECRET_KEY_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]) if (!(k in extraEnv)) delete env[k];
  return run(process.execPath, [CLI, ...args], { env });
}

async function importJson(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<PushSummary> {
  const r = await uploader(["import", "--json", ...args], extraEnv);
  if (r.code !== 0) throw new Error(`import failed (${r.code}):\n${r.stderr}`);
  return JSON.parse(r.stdout) as PushSummary;
}

/** A binary cache directory written by the real Nix, signed with the source key. */
async function nixCopyToDirectory(compression: string, ...paths: string[]): Promise<string> {
  const dir = await nix.tempDir(`cache-${compression}-`);
  await nix.nix(["copy", "--to", `file://${dir}?compression=${compression}&secret-key=${sourceSecret}`, ...paths]);
  return dir;
}

function all(c: Closure): string[] {
  return [c.tree, c.dep, c.top];
}

async function workerNarInfo(path: string): Promise<NarInfo> {
  const res = await fetch(`${worker.url}/${path.slice(11, 43)}.narinfo`);
  expect(res.status, path).toBe(200);
  return parseNarInfo(await res.text());
}

async function sourceNarInfo(dir: string, path: string): Promise<NarInfo> {
  return parseNarInfo(await readFile(join(dir, `${path.slice(11, 43)}.narinfo`), "utf8"));
}

/** sha256 of `nix-store --dump` of a file-system path. */
async function dumpHash(path: string): Promise<string> {
  return (await runOk("sh", ["-c", 'nix-store --dump "$1" | sha256sum', "sh", path], { env: nix.env })).split(" ")[0]!;
}

/**
 * The real Nix substitutes the closure of `c.top` from the Worker into an empty store,
 * trusting only `publicKey`, and every path's NAR equals the source store's.
 */
async function substituteAndCompare(c: Closure, publicKey: string): Promise<void> {
  const store = await nix.tempDir("store-");
  const env = { ...nix.env, XDG_CACHE_HOME: await nix.tempDir("xdg-") };
  await runOk("nix-store", ["--store", store, "-r", c.top, "--option", "substituters", worker.url, "--option", "trusted-public-keys", publicKey], { env });
  for (const p of all(c)) expect(await dumpHash(join(store, p)), p).toBe(await dumpHash(p));
}

describe("uploader import from a cache Nix wrote", () => {
  let xzDir: string;
  let viaFile: Closure;
  let viaHttp: Closure;

  beforeAll(async () => {
    viaFile = await nix.buildClosure();
    viaHttp = await nix.buildClosure();
    // One directory with two closures: one is read as file://, the other through nginx.
    xzDir = await nixCopyToDirectory("xz", viaFile.top, viaHttp.top);
  });

  test("file:// with Nix's default xz: NARs and signatures kept, substituted by Nix trusting only the old key", async () => {
    const summary = await importJson([`file://${xzDir}`, viaFile.top, "--trusted-key", sourcePublic]);
    expect(summary).toMatchObject({ uploaded: 3, failed: 0, blocked: 0 });
    for (const p of all(viaFile)) {
      const [got, had] = await Promise.all([workerNarInfo(p), sourceNarInfo(xzDir, p)]);
      expect(got.compression).toBe("xz");
      expect(got.fileHash).toBe(had.fileHash);
      expect(got.narHash).toBe(had.narHash);
      expect(got.sigs).toEqual(had.sigs);
    }
    await substituteAndCompare(viaFile, sourcePublic);
    // Everything is there now: a second import uploads nothing.
    expect(await importJson([`file://${xzDir}`, viaFile.top])).toMatchObject({ uploaded: 0, alreadyCached: 3 });
  });

  test("the same directory over HTTP (nginx), recompressed xz → zstd with NarHash checked", async () => {
    const nginx = await Nginx.start(xzDir);
    try {
      const summary = await importJson([nginx.url, viaHttp.top, "--recompress", "--compression", "zstd", "--trusted-key", sourcePublic]);
      expect(summary).toMatchObject({ uploaded: 3, failed: 0 });
    } finally {
      await nginx.stop();
    }
    for (const p of all(viaHttp)) {
      const [got, had] = await Promise.all([workerNarInfo(p), sourceNarInfo(xzDir, p)]);
      expect(got.compression).toBe("zstd");
      expect(got.url).toMatch(/^nar\/[0-9a-z]{52}\.nar\.zst$/);
      expect(got.fileHash).not.toBe(had.fileHash);
      expect(got.narHash).toBe(had.narHash);
      expect(got.sigs).toEqual(had.sigs);
    }
    await substituteAndCompare(viaHttp, sourcePublic);
  });

  test("file:// with zstd, every path of the directory (--all)", async () => {
    const c = await nix.buildClosure();
    const dir = await nixCopyToDirectory("zstd", c.top);
    const summary = await importJson([`file://${dir}`, "--all"]);
    expect(summary).toMatchObject({ uploaded: 3, failed: 0 });
    expect(summary.paths.map((p) => p.path).sort()).toEqual(all(c).sort());
    for (const p of all(c)) expect((await workerNarInfo(p)).compression).toBe("zstd");
    await substituteAndCompare(c, sourcePublic);
  });
});

describe("uploader import from S3", () => {
  let s3: S3Server;
  let closure: Closure;
  let home: string;

  beforeAll(async () => {
    s3 = await S3Server.start("nix-cache");
    closure = await nix.buildClosure();
    await s3.uploadCacheDirectory(await nixCopyToDirectory("xz", closure.top));
    // Credentials as the AWS tools keep them, in a profile named in the URL.
    home = await nix.tempDir("home-");
    await mkdir(join(home, ".aws"));
    await writeFile(join(home, ".aws", "credentials"), `[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n[cache-migration]\naws_access_key_id = ${S3_ACCESS_KEY_ID}\naws_secret_access_key = ${S3_SECRET_ACCESS_KEY}\n`);
  });
  afterAll(async () => {
    await s3?.stop();
  });

  const url = (): string => `s3://nix-cache?profile=cache-migration&endpoint=${s3.endpoint}&region=${S3_REGION}`;

  test("credentials the S3 server refuses stop the import with the server's reason and a hint", async () => {
    const r = await uploader(["import", url(), "--all"], { HOME: home, AWS_ACCESS_KEY_ID: S3_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: "wrong" });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("SignatureDoesNotMatch");
    expect(r.stderr).toMatch(/hint: .*credentials from the environment/);
  });

  test("s3://bucket?profile=…&endpoint=…&region=…, listed with --all, signed with the profile's keys", async () => {
    const summary = await importJson([url(), "--all", "--trusted-key", sourcePublic], { HOME: home });
    expect(summary).toMatchObject({ uploaded: 3, failed: 0 });
    await substituteAndCompare(closure, sourcePublic);
  });
});

describe("uploader import from nix-store --export", () => {
  test("a stream on standard input, signed with the import's key", async () => {
    const c = await nix.buildClosure();
    const work = await nix.tempDir("export-");
    const stream = join(work, "closure.export");
    const closurePaths = (await nix.nixStore(["-qR", c.top])).trim().split("\n");
    await runOk("sh", ["-c", 'f="$1"; shift; nix-store --export "$@" > "$f"', "sh", stream, ...closurePaths], { env: nix.env });
    const secret = join(work, "import.sec");
    const publicKey = (await uploader(["keygen", "--name", "imported-1", "--secret-key-file", secret])).stdout.trim();
    const env = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token };
    const r = await run("sh", ["-c", 'exec "$1" "$2" import --json --secret-key-file "$3" - < "$4"', "sh", process.execPath, CLI, secret, stream], { env });
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as PushSummary;
    expect(summary).toMatchObject({ uploaded: 3, failed: 0 });
    for (const p of all(c)) expect((await workerNarInfo(p)).sigs.map((s) => s.split(":")[0])).toEqual(["imported-1"]);
    await substituteAndCompare(c, publicKey);
  });
});
