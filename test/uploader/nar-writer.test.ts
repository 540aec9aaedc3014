// The NAR writer against the reference: `nix-store --dump` of the same tree must give the
// same bytes. The tree holds everything PROTOCOL.md §1.3 warns about: executables and the
// owner-execute-only rule, symlinks of every kind, empty files and directories, names that
// sort differently as bytes than as UTF-16, non-UTF-8 names, hard links, deep nesting and
// a file over 100 MB (compared by streamed sha256, never held in memory). Then NarHash and
// NarSize of real store paths against what Nix recorded when it added them.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmod, link, mkdir, open, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { formatSha256 } from "../../src/nix/hash.ts";
import { NarError } from "../../src/nix/errors.ts";
import { UnsupportedFileError } from "../../uploader/errors.ts";
import { dumpPath, stripCaseHack } from "../../uploader/nar-writer.ts";
import { queryClosure } from "../../uploader/store.ts";
import { NixSandbox, runOk } from "./helpers.ts";

let nix: NixSandbox;
beforeAll(async () => {
  nix = await NixSandbox.create();
});
afterAll(async () => nix?.cleanup());

/** sha256 and length of a byte stream, consumed as it arrives. */
async function digest(chunks: AsyncIterable<Uint8Array>): Promise<{ hash: string; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  for await (const c of chunks) {
    h.update(c);
    size += c.length;
  }
  return { hash: formatSha256(new Uint8Array(h.digest())), size };
}

/** `nix-store --dump <path>`, streamed. */
function nixDump(path: string | Buffer): AsyncIterable<Uint8Array> {
  const child = spawn("nix-store", ["--dump", path as string], { env: nix.env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve, reject) =>
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`nix-store --dump failed (${code}): ${stderr}`)))),
  );
  return (async function* () {
    yield* child.stdout;
    await exited;
  })();
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}

async function expectSameAsNix(path: string | Buffer): Promise<Buffer> {
  const ours = await collect(dumpPath(path));
  const theirs = await collect(nixDump(path));
  expect(ours.length).toBe(theirs.length);
  // Buffer.equals first: a failing toEqual on megabytes is unreadable.
  expect(ours.equals(theirs)).toBe(true);
  return ours;
}

describe("byte-identical to nix-store --dump", () => {
  test("a tree with every tricky case", async () => {
    const root = join(await nix.tempDir(), "tree");
    await mkdir(root);
    const file = async (rel: string, contents: string | Buffer, mode = 0o644): Promise<void> => {
      await writeFile(join(root, rel), contents);
      await chmod(join(root, rel), mode);
    };
    // Permissions: only the owner-execute bit counts.
    await file("exec-0755", "#!/bin/sh\necho hi\n", 0o755);
    await file("exec-0700", "x", 0o700);
    await file("group-exec-0610", "not executable for Nix", 0o610);
    await file("readonly-0444", "plain", 0o444);
    await file("exec-0100-only", "owner x only", 0o100 | 0o400);
    // Empty things.
    await file("empty", "");
    await mkdir(join(root, "empty-dir"));
    await mkdir(join(root, "nested-empty", "inner"), { recursive: true });
    // Sizes around the 8-byte padding boundary.
    for (const n of [1, 7, 8, 9, 15, 16, 17]) await file(`pad-${n}`, "p".repeat(n));
    // Symlinks: relative, absolute, dangling, to a directory, a chain, and a long target.
    await symlink("exec-0755", join(root, "link-relative"));
    await symlink("/nonexistent/absolute/target", join(root, "link-absolute"));
    await symlink("does-not-exist", join(root, "link-dangling"));
    await symlink("empty-dir", join(root, "link-to-dir"));
    await symlink("link-relative", join(root, "link-chain"));
    await symlink(`${"../".repeat(300)}far`, join(root, "link-long"));
    // Byte order vs UTF-16 order, and other names (PROTOCOL.md §1.3 rule 1).
    for (const name of ["\uFF61", "\u{1F600}", "é", "日本語", "1", "A", "B", "Z", "_", "a", "a-b", "a.b", "aa", "z", "~", "with space", "tab\there", ".hidden", "-dash"]) {
      await file(`name-${name}`, name);
    }
    await mkdir(join(root, "\u{1F600}-dir"));
    await file("\u{1F600}-dir/\uFF61", "inner");
    // A name that is not valid UTF-8: only survives if names stay bytes end to end.
    const latin1 = Buffer.concat([Buffer.from(root), Buffer.from("/caf"), Buffer.from([0xe9])]);
    await writeFile(latin1, "latin-1 name");
    // Hard links: written in full at each occurrence.
    await file("hard-a", "shared contents");
    await link(join(root, "hard-a"), join(root, "hard-b"));
    // Deep nesting: 40 levels below the root.
    let deep = join(root, "deep");
    for (let i = 0; i < 40; i++) deep = join(deep, `d${i}`);
    await mkdir(deep, { recursive: true });
    await writeFile(join(deep, "bottom"), "40 levels down");
    // A medium file that spans several read chunks, with an odd size.
    await file("medium", randomBytes(3 * (1 << 20) + 5));

    const nar = await expectSameAsNix(root);
    // Sanity: the emoji entry's bytes really come after U+FF61's, as in Nix.
    expect(nar.indexOf(Buffer.from("name-\uFF61"))).toBeLessThan(nar.indexOf(Buffer.from("name-\u{1F600}")));
  });

  test("roots that are a file, an executable, a symlink, an empty directory", async () => {
    const dir = await nix.tempDir();
    await writeFile(join(dir, "file"), "hi\n");
    await writeFile(join(dir, "exe"), "#!/bin/sh\n");
    await chmod(join(dir, "exe"), 0o755);
    await symlink("/non-existent-48cujwe8ndf4as0bne", join(dir, "link"));
    await mkdir(join(dir, "empty"));
    for (const name of ["file", "exe", "link", "empty"]) await expectSameAsNix(join(dir, name));
    // PROTOCOL.md §8.2 vectors, for an anchor independent of the local Nix.
    expect((await digest(dumpPath(join(dir, "file")))).hash).toBe("sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h");
    expect((await digest(dumpPath(join(dir, "link")))).hash).toBe("sha256:1bl5ry3x1fcbwgr5c2x50bn572iixh4j1p6ax5isxly2ddgn8pbp");
  });

  test("a directory with a file over 100 MB, compared by streamed sha256", { timeout: 300_000 }, async () => {
    const root = join(await nix.tempDir(), "big");
    await mkdir(root);
    const handle = await open(join(root, "random.bin"), "w");
    const MiB = 1 << 20;
    for (let i = 0; i < 101; i++) await handle.write(randomBytes(MiB));
    await handle.write(randomBytes(12_345));
    await handle.close();
    await writeFile(join(root, "small"), "next to a big one");
    const [ours, theirs] = await Promise.all([digest(dumpPath(root)), digest(nixDump(root))]);
    expect(ours.size).toBeGreaterThan(100 * 1_000_000);
    expect(ours).toEqual(theirs);
  });
});

describe("NarHash and NarSize of real store paths match the store database", () => {
  test("paths from nix-store --add and nix-build", async () => {
    const closure = await nix.buildClosure();
    const dir = join(await nix.tempDir(), "added");
    await mkdir(join(dir, "sub"), { recursive: true });
    await writeFile(join(dir, "sub", "x"), randomBytes(100_000));
    await symlink("sub/x", join(dir, "y"));
    const added = await nix.add(dir);
    const flat = await nix.addText("flat.txt", "a single file ");
    const infos = await queryClosure([closure.top, added, flat], { env: nix.env });
    expect(infos.length).toBe(5);
    for (const info of infos) {
      expect(await digest(dumpPath(info.path))).toEqual({ hash: info.narHash, size: info.narSize });
    }
  });
});

describe("what cannot go in a NAR", () => {
  test("a FIFO and a socket are UnsupportedFileErrors naming the file", async () => {
    const dir = await nix.tempDir();
    await mkdir(join(dir, "with-fifo"));
    await runOk("mkfifo", [join(dir, "with-fifo", "pipe")]);
    await expect(collect(dumpPath(join(dir, "with-fifo")))).rejects.toThrow(UnsupportedFileError);
    await expect(collect(dumpPath(join(dir, "with-fifo")))).rejects.toThrow(/pipe: a FIFO/);
    await mkdir(join(dir, "with-socket"));
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir, "with-socket", "sock"), resolve));
    try {
      await expect(collect(dumpPath(join(dir, "with-socket")))).rejects.toThrow(/sock: a socket/);
    } finally {
      server.close();
    }
  });

  test("64 levels of nesting are refused (newer Nix cannot read them); 63 are fine", async () => {
    const make = async (levels: number): Promise<string> => {
      const root = join(await nix.tempDir(), "nest");
      let p = root;
      for (let i = 0; i < levels; i++) p = join(p, "d");
      await mkdir(p, { recursive: true });
      return root;
    };
    await expectSameAsNix(await make(63));
    await expect(collect(dumpPath(await make(64)))).rejects.toThrow(NarError);
  });

  test("a file that changes size while it is read fails the NAR", async () => {
    const dir = await nix.tempDir();
    await mkdir(join(dir, "t"));
    // "a" is big enough to be yielded before "f" is reached: the directory has been listed
    // (sizes taken) by the first chunk, then "f" shrinks before it is read.
    await writeFile(join(dir, "t", "a"), randomBytes(1 << 20));
    await writeFile(join(dir, "t", "f"), "0123456789");
    const gen = dumpPath(join(dir, "t"));
    const first = await gen.next();
    expect(first.done).toBe(false);
    await writeFile(join(dir, "t", "f"), "01");
    await expect(collect(gen)).rejects.toThrow(NarError);
  });
});

describe("macOS case hack", () => {
  test("the ~nix~case~hack~N suffix is stripped when enabled, as Nix does on macOS", async () => {
    expect(stripCaseHack(Buffer.from("Makefile~nix~case~hack~1")).toString()).toBe("Makefile");
    expect(stripCaseHack(Buffer.from("plain")).toString()).toBe("plain");
    const hacked = join(await nix.tempDir(), "hacked");
    const plain = join(await nix.tempDir(), "plain");
    for (const [root, second] of [
      [hacked, "readme~nix~case~hack~1"],
      [plain, "readme"],
    ] as const) {
      await mkdir(root);
      await writeFile(join(root, "README"), "upper");
      await writeFile(join(root, second), "lower");
    }
    const ours = await collect(dumpPath(hacked, { caseHack: true }));
    expect(ours.equals(await collect(nixDump(plain)))).toBe(true);
    // Off by default on Linux: the name is kept as is.
    const literal = await collect(dumpPath(hacked));
    expect(literal.includes(Buffer.from("~nix~case~hack~1"))).toBe(true);
  });
});
