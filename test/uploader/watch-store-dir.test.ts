// Noticing new store paths (uploader/watch-store-dir.ts): on a real directory with real
// inotify events, a store path is reported when its lock file is removed, as Nix does
// once the path is valid; a lock still held, a derivation's lock and other files are not.
// (The end-to-end tests in test/e2e/watch-store.test.ts watch the real store under real
// builds.)
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, test } from "vitest";
import { lockedPathName, watchStoreDir } from "../../uploader/watch-store-dir.ts";

const BASE = "0sqzwl9vcq5wawzjxfx5cfd5dklfwvkv-hello-2.12";

test.each([
  [`${BASE}.lock`, BASE],
  [`${BASE}.drv.lock`, null],
  [BASE, null],
  ["0sqzwl9vcq5wawzjxfx5cfd5dklfwvke-bad-hash.lock", null],
  ["big-lock", null],
  [".lock", null],
])("the lock file %s stands for %s", (name, expected) => {
  expect(lockedPathName(name)).toBe(expected);
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "nec-store-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Waits until `cond()` holds, polling; fails after `ms`. */
async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a path is reported when its lock file goes, not while it is held; derivations and other files never", async () => {
  const seen: string[] = [];
  const errors: unknown[] = [];
  const watcher = watchStoreDir(dir, (p) => seen.push(p), (e) => errors.push(e));
  try {
    const other = "1w2f5pzrvd52ckkfzr8l374l25nyddrn-wexp";
    await writeFile(join(dir, `${BASE}.lock`), "");
    await writeFile(join(dir, `${other}.drv.lock`), "");
    await writeFile(join(dir, "some-temp-file"), "");
    // Events for the held lock arrive and must report nothing.
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toEqual([]);
    await rm(join(dir, `${other}.drv.lock`));
    await rm(join(dir, "some-temp-file"));
    await rm(join(dir, `${BASE}.lock`));
    await until(() => seen.length > 0);
    // Let any further events arrive before checking nothing else was reported.
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toEqual([join(dir, BASE)]);
    expect(errors).toEqual([]);
  } finally {
    watcher.close();
  }
});

test("a missing store directory is an error that names it", () => {
  expect(() => watchStoreDir(join(dir, "nope"), () => {}, () => {})).toThrow(`cannot watch ${join(dir, "nope")}: no such directory`);
});
