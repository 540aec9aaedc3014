// The store query against real store paths: metadata must agree with what Nix's own
// `nix-store -q` reports (a different code path and output format than the JSON the
// uploader reads), arguments resolve like Nix resolves them, and failures say what is wrong.
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { InvalidStorePathError, NixError } from "../../uploader/errors.ts";
import { parsePathInfoJson, queryClosure, resolveStorePaths } from "../../uploader/store.ts";
import { NixSandbox } from "./helpers.ts";

let nix: NixSandbox;
let closure: { tree: string; dep: string; top: string; drv: string };

beforeAll(async () => {
  nix = await NixSandbox.create();
  closure = await nix.buildClosure();
});
afterAll(async () => nix?.cleanup());

describe("queryClosure", () => {
  test("returns the closure with the metadata nix-store -q reports", async () => {
    const infos = await queryClosure([closure.top], { env: nix.env });
    const requisites = (await nix.nixStore(["-q", "--requisites", closure.top])).trim().split("\n").sort();
    expect(infos.map((i) => i.path).sort()).toEqual(requisites);
    for (const info of infos) {
      expect(info.narHash).toBe((await nix.nixStore(["-q", "--hash", info.path])).trim());
      expect(info.narSize).toBe(Number((await nix.nixStore(["-q", "--size", info.path])).trim()));
      const refs = (await nix.nixStore(["-q", "--references", info.path])).trim().split("\n").filter(Boolean);
      expect([...info.references].sort()).toEqual(refs.sort());
      expect(info.hashPart).toBe(info.path.slice("/nix/store/".length, "/nix/store/".length + 32));
    }
    const top = infos.find((i) => i.path === closure.top)!;
    expect(top.deriver).toBe(closure.drv);
    expect(top.ca).toBeUndefined();
    const tree = infos.find((i) => i.path === closure.tree)!;
    expect(tree.ca).toMatch(/^fixed:r:sha256:[0-9a-df-np-sv-z]{52}$/);
    expect(tree.deriver).toBeUndefined();
  });

  test("includes the signatures the store holds", async () => {
    const path = await nix.addText("signed.txt");
    const keys = await nix.tempDir();
    await nix.nixStore(["--generate-binary-cache-key", "store-test-1", join(keys, "sk"), join(keys, "pk")]);
    await nix.nix(["store", "sign", "--key-file", join(keys, "sk"), path]);
    const [info] = await queryClosure([path], { env: nix.env });
    expect(info!.sigs).toHaveLength(1);
    expect(info!.sigs[0]).toMatch(/^store-test-1:[A-Za-z0-9+/]{86}==$/);
  });

  test("a store path that was never built is reported as not valid", async () => {
    const bogus = "/nix/store/00000000000000000000000000000000-never-built";
    const err = await queryClosure([bogus], { env: nix.env }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidStorePathError);
    expect((err as InvalidStorePathError).path).toBe(bogus);
    expect((err as Error).message).toContain("not valid");
  });

  test("a missing nix program is a NixError that says how to fix it", async () => {
    const err = await queryClosure([closure.top], { env: nix.env, nix: "/nonexistent/bin/nix" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NixError);
    expect((err as NixError).message).toContain("not found");
    expect((err as NixError).hint).toContain("install Nix");
  });
});

describe("resolveStorePaths", () => {
  test("follows ./result-style symlinks and paths inside store paths to the store path", async () => {
    const dir = await nix.tempDir();
    await symlink(closure.top, join(dir, "result"));
    await symlink(join(closure.top, "bin", "show"), join(dir, "show-link"));
    const resolved = await resolveStorePaths(
      [join(dir, "result"), join(dir, "show-link"), `${closure.dep}`, join(closure.top, "bin")],
    );
    expect(resolved).toEqual([closure.top, closure.dep]);
  });

  test("relative arguments resolve against the working directory", async () => {
    const dir = await nix.tempDir();
    await symlink(closure.dep, join(dir, "result"));
    const before = process.cwd();
    process.chdir(dir);
    try {
      expect(await resolveStorePaths(["./result"])).toEqual([closure.dep]);
    } finally {
      process.chdir(before);
    }
  });

  test("files outside the store and missing files are rejected, naming the argument", async () => {
    const dir = await nix.tempDir();
    await mkdir(join(dir, "plain"));
    await writeFile(join(dir, "file"), "x");
    await expect(resolveStorePaths([join(dir, "file")])).rejects.toThrow(/file: not in the Nix store/);
    await expect(resolveStorePaths([join(dir, "missing")])).rejects.toThrow(/missing: no such file or directory/);
    await symlink(join(dir, "file"), join(dir, "link"));
    await expect(resolveStorePaths([join(dir, "link")])).rejects.toBeInstanceOf(InvalidStorePathError);
  });
});

describe("parsePathInfoJson reads every shape Nix has printed", () => {
  test("2.19+ objects keyed by path, base-name paths and structured hashes give the same result", async () => {
    const infos = await queryClosure([closure.top], { env: nix.env });
    const raw = JSON.parse(
      await nix.nix(["path-info", "--json", "--recursive", closure.top]),
    ) as Array<Record<string, unknown> & { path: string; narHash: string; references: string[]; deriver?: string }>;
    const base = (p: string): string => p.slice("/nix/store/".length);

    // Keyed by path (2.19 to 2.32).
    const keyed = Object.fromEntries(raw.map(({ path, ...rest }) => [path, rest]));
    expect(parsePathInfoJson(JSON.stringify(keyed))).toEqual(infos);

    // Newer: base names, hashes as {algorithm, format, hash}, CA as {method, hash}.
    const structured = Object.fromEntries(
      raw.map(({ path, narHash, references, deriver, ca, ...rest }) => {
        const entry: Record<string, unknown> = {
          ...rest,
          narHash: { algorithm: "sha256", format: "base64", hash: narHash.slice("sha256-".length) },
          references: references.map(base),
        };
        if (deriver) entry.deriver = base(deriver);
        if (typeof ca === "string") {
          const nix32 = ca.slice("fixed:r:sha256:".length);
          entry.ca = { method: "nar", hash: { algorithm: "sha256", format: "nix32", hash: nix32 } };
        }
        return [base(path), entry];
      }),
    );
    expect(parsePathInfoJson(JSON.stringify(structured))).toEqual(infos);
  });

  test("an invalid path (null entry, or valid: false) is an InvalidStorePathError", () => {
    const p = "/nix/store/00000000000000000000000000000000-gone";
    expect(() => parsePathInfoJson(JSON.stringify({ [p]: null }))).toThrow(InvalidStorePathError);
    expect(() => parsePathInfoJson(JSON.stringify([{ path: p, valid: false }]))).toThrow(InvalidStorePathError);
  });

  test("malformed output is a NixError naming the field", () => {
    const p = "/nix/store/00000000000000000000000000000000-x";
    expect(() => parsePathInfoJson("not json")).toThrow(NixError);
    expect(() => parsePathInfoJson(JSON.stringify([{ path: p, narHash: "md5-x", narSize: 1, references: [] }]))).toThrow(/narHash/);
    expect(() => parsePathInfoJson(JSON.stringify([{ path: p, narHash: "sha256-x", narSize: 0, references: [] }]))).toThrow(/narSize/);
  });
});
