// Helpers for the multipart tests: large random store paths, and checks of a pushed path
// from outside the uploader (the cache's narinfo and NAR over HTTP, a real Nix substituting
// it into an empty store).
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "vitest";
import { formatSha256, normaliseSha256 } from "../../src/nix/hash.ts";
import { parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { runOk, type NixSandbox } from "./helpers.ts";

/**
 * A fresh store path: a directory with `bytes` random (incompressible) bytes in data.bin,
 * an executable script and a symlink, so that the NAR has some structure.
 */
export async function randomPath(sandbox: NixSandbox, name: string, bytes: number): Promise<string> {
  const dir = join(await sandbox.tempDir("big-"), name);
  await mkdir(join(dir, "bin"), { recursive: true });
  const fh = await open(join(dir, "data.bin"), "w");
  const chunk = 4 << 20;
  for (let written = 0; written < bytes; written += chunk) await fh.write(randomBytes(Math.min(chunk, bytes - written)));
  await fh.close();
  await writeFile(join(dir, "bin", "run"), "#!/bin/sh\necho big\n");
  await chmod(join(dir, "bin", "run"), 0o755);
  await runOk("ln", ["-s", "../data.bin", join(dir, "bin", "data")]);
  return sandbox.add(dir);
}

/** sha256 (Nix's `sha256:<nix32>`) and length of a response body, streamed. */
async function hashBody(res: Response): Promise<{ hash: string; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    h.update(chunk);
    size += chunk.length;
  }
  return { hash: formatSha256(new Uint8Array(h.digest())), size };
}

/** The narinfo and the NAR as the cache serves them; the NAR's bytes must hash to FileHash. */
export async function expectStoredNar(url: string, storePath: string): Promise<NarInfo> {
  const hashPart = storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
  const res = await fetch(`${url}/${hashPart}.narinfo`);
  expect(res.status).toBe(200);
  const narinfo = parseNarInfo(await res.text());
  const nar = await hashBody(await fetch(`${url}/${narinfo.url}`));
  expect(nar.size).toBe(narinfo.fileSize);
  expect(nar.hash).toBe(normaliseSha256(narinfo.fileHash!));
  return narinfo;
}

/** Substitutes `storePath` with a real Nix into an empty store; its dump must equal the original's. */
export async function expectSubstitutes(sandbox: NixSandbox, url: string, key: string, storePath: string): Promise<void> {
  const store = await sandbox.tempDir("store-");
  const env = { ...sandbox.env, XDG_CACHE_HOME: await sandbox.tempDir("xdg-") };
  await runOk("nix-store", ["--store", store, "-r", storePath, "--option", "substituters", url, "--option", "trusted-public-keys", key], { env });
  const dump = async (p: string) => (await runOk("sh", ["-c", `nix-store --dump '${p}' | sha256sum`], { env })).split(" ")[0];
  expect(await dump(`${store}${storePath}`)).toBe(await dump(storePath));
}

