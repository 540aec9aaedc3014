// `uploader import`'s parts and refusals: Nix's S3 URL and credential rules, the export
// stream reader against real `nix-store --export` output, and what a damaged or untrusted
// source leads to against the real Worker: the path and everything depending on it are
// reported and never reach the cache, the rest goes up.
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { normaliseSha256 } from "../../src/nix/hash.ts";
import type { PushSummary } from "../../uploader/progress.ts";
import { resolveAwsCredentials } from "../../uploader/sources/aws-credentials.ts";
import { SourceError } from "../../uploader/sources/cache-source.ts";
import { readExportNar, scanExport } from "../../uploader/sources/export-stream.ts";
import { parseS3Url } from "../../uploader/sources/s3-source.ts";
import { CLI, NixSandbox, run, runOk, type Closure } from "./helpers.ts";
import { startWorker, type TestWorker } from "./worker.ts";

describe("s3:// URLs mean what they mean to Nix", () => {
  test.each([
    ["s3://nix-cache", "https://nix-cache.s3.us-east-1.amazonaws.com/", "us-east-1"],
    ["s3://nix-cache?region=eu-west-2", "https://nix-cache.s3.eu-west-2.amazonaws.com/", "eu-west-2"],
    ["s3://my.cache?region=eu-west-2", "https://s3.eu-west-2.amazonaws.com/my.cache/", "eu-west-2"],
    ["s3://nix-cache?addressing-style=path", "https://s3.us-east-1.amazonaws.com/nix-cache/", "us-east-1"],
    ["s3://nix-cache?profile=up&endpoint=https://minio.example.com", "https://minio.example.com/nix-cache/", "us-east-1"],
    ["s3://nix-cache?endpoint=http://localhost:9000&compression=zstd&secret-key=/k", "http://localhost:9000/nix-cache/", "us-east-1"],
    ["s3://nix-cache?endpoint=minio.example.com:9000&scheme=http", "http://minio.example.com:9000/nix-cache/", "us-east-1"],
    ["s3://nix-cache?endpoint=https://r2.example.com&addressing-style=virtual", "https://nix-cache.r2.example.com/", "us-east-1"],
  ])("%s", (url, root, region) => {
    const loc = parseS3Url(url);
    expect(String(loc.root)).toBe(root);
    expect(loc.region).toBe(region);
  });

  test("the profile, and what is refused", () => {
    expect(parseS3Url("s3://b?profile=cache-upload").profile).toBe("cache-upload");
    expect(() => parseS3Url("s3://b?endpiont=x")).toThrow(/unknown parameter "endpiont"/);
    expect(() => parseS3Url("s3://b/prefix")).toThrow(/without a path/);
    expect(() => parseS3Url("s3://my.bucket?addressing-style=virtual")).toThrow(/contains a dot/);
  });
});

describe("AWS credentials are looked up as Nix does", () => {
  let home: string;
  let nix: NixSandbox;
  beforeAll(async () => {
    nix = await NixSandbox.create();
    home = await nix.tempDir("home-");
    await mkdir(join(home, ".aws"));
    await writeFile(join(home, ".aws", "credentials"), "# keys\n[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = defaultsecret\n\n[upload]\nAWS_ACCESS_KEY_ID=UPLOADKEY\naws_secret_access_key=uploadsecret\naws_session_token = tok\n");
    await writeFile(join(home, ".aws", "config"), "[profile other]\nregion = eu-west-1\naws_access_key_id = OTHERKEY\naws_secret_access_key = othersecret\n");
  });
  afterAll(async () => {
    await nix?.cleanup();
  });

  test("the environment first, then the URL's profile, AWS_PROFILE, default; config profiles too", async () => {
    const env = { AWS_ACCESS_KEY_ID: "ENVKEY", AWS_SECRET_ACCESS_KEY: "envsecret" };
    expect(await resolveAwsCredentials({ profile: "upload", env, home })).toMatchObject({ accessKeyId: "ENVKEY", secretAccessKey: "envsecret" });
    expect(await resolveAwsCredentials({ profile: "upload", env: {}, home })).toMatchObject({ accessKeyId: "UPLOADKEY", secretAccessKey: "uploadsecret", sessionToken: "tok" });
    expect(await resolveAwsCredentials({ env: { AWS_PROFILE: "other" }, home })).toMatchObject({ accessKeyId: "OTHERKEY" });
    expect(await resolveAwsCredentials({ env: {}, home })).toMatchObject({ accessKeyId: "DEFAULTKEY" });
  });

  test("no credentials anywhere: anonymous; a named profile that exists nowhere: an error", async () => {
    const empty = await nix.tempDir("empty-home-");
    expect(await resolveAwsCredentials({ env: {}, home: empty })).toBeNull();
    await expect(resolveAwsCredentials({ profile: "missing", env: {}, home })).rejects.toThrow(/no credentials for the AWS profile "missing"/);
  });
});

describe("the export stream reader against nix-store --export", () => {
  let nix: NixSandbox;
  let closure: Closure;
  let stream: string;
  let paths: string[];

  beforeAll(async () => {
    nix = await NixSandbox.create();
    closure = await nix.buildClosure();
    paths = (await nix.nixStore(["-qR", closure.top])).trim().split("\n");
    stream = join(await nix.tempDir("export-"), "closure.export");
    await runOk("sh", ["-c", 'f="$1"; shift; nix-store --export "$@" > "$f"', "sh", stream, ...paths], { env: nix.env });
  });
  afterAll(async () => {
    await nix?.cleanup();
  });

  test("paths references first, with the store's NarHash, NarSize, references and deriver, and NARs byte for byte", async () => {
    const entries = await scanExport(Readable.from([await readFile(stream)]));
    expect(entries.map((e) => e.path).sort()).toEqual([...paths].sort());
    expect(entries.at(-1)!.path).toBe(closure.top);
    const json = JSON.parse(await nix.nix(["path-info", "--json", ...paths])) as Array<{ path: string; narHash: string; narSize: number; references: string[]; deriver?: string }>;
    for (const e of entries) {
      const info = json.find((j) => j.path === e.path)!;
      expect(e.narHash).toBe(normaliseSha256(info.narHash));
      expect(e.narSize).toBe(info.narSize);
      expect([...e.references].sort()).toEqual([...info.references].sort());
      expect(e.deriver).toBe(info.deriver);
      const fromStream = createHash("sha256");
      for await (const chunk of readExportNar(stream, e)) fromStream.update(chunk as Buffer);
      const dumped = (await runOk("sh", ["-c", 'nix-store --dump "$1" | sha256sum', "sh", e.path], { env: nix.env })).split(" ")[0];
      expect(fromStream.digest("hex")).toBe(dumped);
    }
  });

  test("one byte at a time reads the same", async () => {
    const bytes = await readFile(stream);
    const slow = await scanExport((async function* () {
      for (let i = 0; i < bytes.length; i++) yield bytes.subarray(i, i + 1);
    })());
    const fast = await scanExport(Readable.from([bytes]));
    expect(slow).toEqual(fast);
  });

  test("a truncated stream, a damaged NAR and something else are refused, naming the byte", async () => {
    const bytes = await readFile(stream);
    await expect(scanExport(Readable.from([bytes.subarray(0, bytes.length - 8)]))).rejects.toThrow(/unexpected end of the stream/);
    const damaged = Buffer.from(bytes);
    // The first NAR's magic, "nix-archive-1", starts after the u64 1 and the string's length.
    damaged[16] = "m".charCodeAt(0);
    await expect(scanExport(Readable.from([damaged]))).rejects.toThrow(/export stream, byte \d+: the NAR starting at byte 8 is not valid/);
    await expect(scanExport(Readable.from([Buffer.from("StorePath: /nix/store/whatever\n")]))).rejects.toBeInstanceOf(SourceError);
  });
});

describe("a damaged or untrusted source against the Worker", () => {
  let nix: NixSandbox;
  let worker: TestWorker;
  let secret: string;
  let sourcePublic: string;

  beforeAll(async () => {
    nix = await NixSandbox.create();
    worker = await startWorker();
    const keys = await nix.tempDir("keys-");
    secret = join(keys, "source.sec");
    await nix.nixStore(["--generate-binary-cache-key", "old-cache-1", secret, join(keys, "source.pub")]);
    sourcePublic = (await readFile(join(keys, "source.pub"), "utf8")).trim();
  });
  afterAll(async () => {
    await worker?.dispose();
    await nix?.cleanup();
  });

  function uploader(args: string[]) {
    const env: NodeJS.ProcessEnv = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token };
    delete env.NIX_CACHE_SECRET_KEY_FILE;
    return run(process.execPath, [CLI, ...args], { env });
  }

  async function cacheDirectory(c: Closure): Promise<string> {
    const dir = await nix.tempDir("cache-");
    await nix.nix(["copy", "--to", `file://${dir}?compression=xz&secret-key=${secret}`, c.top]);
    return dir;
  }

  async function inWorker(path: string): Promise<boolean> {
    const res = await fetch(`${worker.url}/${path.slice(11, 43)}.narinfo`);
    await res.arrayBuffer();
    return res.status === 200;
  }

  const outcome = (s: PushSummary, path: string) => s.paths.find((p) => p.path === path);

  test("a NAR file that does not match its narinfo: that path fails, its dependents are blocked, the rest goes up", async () => {
    const c = await nix.buildClosure();
    const dir = await cacheDirectory(c);
    const narinfo = parseNarInfo(await readFile(join(dir, `${c.dep.slice(11, 43)}.narinfo`), "utf8"));
    const file = join(dir, narinfo.url);
    const bytes = await readFile(file);
    const middle = bytes.length >> 1;
    bytes[middle] = bytes[middle]! ^ 0xff;
    await writeFile(file, bytes);
    const r = await uploader(["import", "--json", `file://${dir}`, c.top]);
    expect(r.code, r.stderr).toBe(1);
    const summary = JSON.parse(r.stdout) as PushSummary;
    expect(outcome(summary, c.dep)).toMatchObject({ outcome: "failed" });
    expect(outcome(summary, c.dep)!.error).toMatch(/does not match its narinfo \(FileHash/);
    expect(outcome(summary, c.top)).toMatchObject({ outcome: "blocked" });
    expect(outcome(summary, c.tree)).toMatchObject({ outcome: "uploaded" });
    expect(await inWorker(c.dep)).toBe(false);
    expect(await inWorker(c.top)).toBe(false);
    expect(await inWorker(c.tree)).toBe(true);
  });

  test("--trusted-key: a narinfo without a valid signature by it is refused before anything is sent, with what depends on it", async () => {
    const c = await nix.buildClosure();
    const dir = await cacheDirectory(c);
    // dep's signature no longer verifies (one character of it changed).
    const depNarInfo = join(dir, `${c.dep.slice(11, 43)}.narinfo`);
    const text = await readFile(depNarInfo, "utf8");
    await writeFile(depNarInfo, text.replace(/^(Sig: old-cache-1:)(.)/m, (_, prefix: string, first: string) => prefix + (first === "A" ? "B" : "A")));
    const dry = await uploader(["import", "--dry-run", `file://${dir}`, c.top, "--trusted-key", sourcePublic]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stderr).toMatch(/1 to upload .*2 refused/);
    expect(dry.stderr).toContain(`refused  ${c.dep}: no valid signature by a trusted key (old-cache-1)`);
    expect(dry.stderr).toContain(`refused  ${c.top}: dependency ${c.dep} cannot be imported`);
    const r = await uploader(["import", "--json", `file://${dir}`, c.top, "--trusted-key", sourcePublic]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ uploaded: 1, failed: 1, blocked: 1 });
    expect(await inWorker(c.tree)).toBe(true);
    for (const p of [c.dep, c.top]) expect(await inWorker(p)).toBe(false);
    // A key the source never signed with: nothing is imported.
    const other = (await uploader(["keygen", "--name", "someone-else-1", "--secret-key-file", join(await nix.tempDir("k-"), "sk")])).stdout.trim();
    const none = await uploader(["import", "--json", `file://${dir}`, c.top, "--trusted-key", other]);
    expect(none.code).toBe(1);
    expect(JSON.parse(none.stdout)).toMatchObject({ uploaded: 0, failed: 1 });
    expect(await inWorker(c.top)).toBe(false);
  });

  test("a reference the source lacks blocks its referrers until the cache has it", async () => {
    const c = await nix.buildClosure();
    const dir = await cacheDirectory(c);
    await rm(join(dir, `${c.tree.slice(11, 43)}.narinfo`));
    const r = await uploader(["import", "--json", `file://${dir}`, c.top]);
    expect(r.code).toBe(1);
    const summary = JSON.parse(r.stdout) as PushSummary;
    expect(outcome(summary, c.tree)!.error).toMatch(/not in the source .*the cache does not have it either/);
    expect(outcome(summary, c.top)).toMatchObject({ outcome: "blocked" });
    expect(outcome(summary, c.dep)).toMatchObject({ outcome: "uploaded" });
    expect(await inWorker(c.top)).toBe(false);
    // Once the cache has the missing path (pushed from the local store), the import completes.
    expect((await uploader(["push", c.tree])).code).toBe(0);
    const again = await uploader(["import", "--json", `file://${dir}`, c.top]);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ uploaded: 1, alreadyCached: 1 });
    expect(await inWorker(c.top)).toBe(true);
  });

  test("usage mistakes say what to do", async () => {
    const noPaths = await uploader(["import", "file:///nonexistent-dir"]);
    expect(noPaths.code).toBe(2);
    expect(noPaths.stderr).toMatch(/no paths given[\s\S]*--all/);
    const missing = await uploader(["import", "file:///nonexistent-dir", "--all"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain("no such directory");
    const notCache = await uploader(["import", `file://${await nix.tempDir("empty-")}`, "--all"]);
    expect(notCache.code).toBe(3);
    expect(notCache.stderr).toContain("no nix-cache-info");
  });
});
