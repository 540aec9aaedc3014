// The spool protocol (uploader/spool.ts) on a real directory and a real Unix socket: jobs
// written atomically and read back, malformed jobs named by line, the watcher's socket as
// the "is a watcher running" answer (also when a dead watcher left its socket behind),
// and where the spool is by default.
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  FAILED_DIR,
  SpoolError,
  WatcherRunningError,
  closeSpoolSocket,
  formatJob,
  listJobs,
  listenOnSpool,
  moveToFailed,
  newJobName,
  parseJob,
  pingWatcher,
  readJob,
  socketPath,
  spoolDir,
  writeJob,
} from "../../uploader/spool.ts";

const A = "/nix/store/0sqzwl9vcq5wawzjxfx5cfd5dklfwvkv-wexp-dep";
const B = "/nix/store/b6f0f1cf04mbfajdb3vaj7xzy2caar2c-wexp-top";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "nec-spool-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("jobs", () => {
  test("a job written is listed and read back with its paths in order, duplicates once", async () => {
    const name = await writeJob(dir, [B, A, B]);
    expect(await listJobs(dir)).toEqual([name]);
    expect(await readJob(dir, name)).toEqual([B, A]);
    // Nothing else is left behind: the temp file was renamed, not copied.
    expect(await readdir(dir)).toEqual([name]);
  });

  test("jobs list oldest first, and temp files of unfinished writes are not jobs", async () => {
    const first = await writeJob(dir, [A], newJobName("hook"));
    await new Promise((r) => setTimeout(r, 5));
    const second = await writeJob(dir, [B], newJobName("store"));
    await writeFile(join(dir, `.${newJobName("hook")}.tmp`), `${A}\n`);
    await writeFile(join(dir, "notes.txt"), "not a job");
    expect(await listJobs(dir)).toEqual([first, second]);
  });

  test("blank lines, comments and surrounding blanks are allowed; the text round-trips", () => {
    expect(parseJob(`# queued by a CI step\n\n  ${A}  \n${B}`)).toEqual([A, B]);
    expect(parseJob(formatJob([A, B]))).toEqual([A, B]);
    expect(parseJob("")).toEqual([]);
  });

  test.each([
    ["a relative path", "nix/store/0sqzwl9vcq5wawzjxfx5cfd5dklfwvkv-wexp-dep", 1],
    ["a hash that is not nix32", "/nix/store/0sqzwl9vcq5wawzjxfx5cfd5dklfwvke-wexp-dep", 2],
    ["a file inside a store path", `${A}/bin/hello`, 2],
    ["two paths on one line", `${A} ${B}`, 1],
  ])("a job with %s is refused, naming the line", (_what, line, lineNo) => {
    const text = lineNo === 1 ? `${line}\n` : `${A}\n${line}\n`;
    expect(() => parseJob(text)).toThrow(SpoolError);
    expect(() => parseJob(text)).toThrow(`line ${lineNo} is not a store path`);
  });

  test("a job that went away reads as null; a malformed one moves to failed/", async () => {
    expect(await readJob(dir, newJobName("gone"))).toBeNull();
    const name = newJobName("bad");
    await writeFile(join(dir, name), "hello\n");
    await expect(readJob(dir, name)).rejects.toThrow(SpoolError);
    const moved = await moveToFailed(dir, name);
    expect(moved).toBe(join(dir, FAILED_DIR, name));
    expect(await listJobs(dir)).toEqual([]);
  });
});

describe("the watcher's socket", () => {
  test("no socket: no watcher", async () => {
    expect(await pingWatcher(dir)).toBeNull();
  });

  test("a listening watcher answers with its pid and is woken by each ping; a second one is refused", async () => {
    let wakes = 0;
    const server = await listenOnSpool(dir, () => wakes++);
    try {
      expect(await pingWatcher(dir)).toBe(process.pid);
      expect(await pingWatcher(dir)).toBe(process.pid);
      expect(wakes).toBe(2);
      await expect(listenOnSpool(dir, () => {})).rejects.toThrow(WatcherRunningError);
    } finally {
      await closeSpoolSocket(server, dir);
    }
    expect(await pingWatcher(dir)).toBeNull();
    expect(await readdir(dir)).toEqual([]);
  });

  test("a socket left by a dead watcher means no watcher, and a new watcher replaces it", async () => {
    // A file where the socket should be, as a watcher killed with SIGKILL leaves it.
    await writeFile(socketPath(dir), "");
    expect(await pingWatcher(dir)).toBeNull();
    const server = await listenOnSpool(dir, () => {});
    try {
      expect(await pingWatcher(dir)).toBe(process.pid);
    } finally {
      await closeSpoolSocket(server, dir);
    }
  });

  test("something else listening on the socket is not taken for a watcher", async () => {
    const other = createServer((s) => s.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await new Promise<void>((r) => other.listen(socketPath(dir), r));
    try {
      expect(await pingWatcher(dir)).toBeNull();
    } finally {
      await new Promise((r) => other.close(r));
    }
  });
});

test("the spool is --spool, else NIX_CACHE_SPOOL, else under XDG_STATE_HOME, else ~/.local/state", () => {
  const env = { HOME: "/home/u", XDG_STATE_HOME: "/state", NIX_CACHE_SPOOL: "/var/spool/nec" };
  expect(spoolDir("/flag", env)).toBe("/flag");
  expect(spoolDir(undefined, env)).toBe("/var/spool/nec");
  expect(spoolDir(undefined, { ...env, NIX_CACHE_SPOOL: "" })).toBe("/state/nix-edge-cache/spool");
  expect(spoolDir(undefined, { HOME: "/home/u" })).toBe("/home/u/.local/state/nix-edge-cache/spool");
  // A relative XDG_STATE_HOME is invalid by the XDG spec and ignored.
  expect(spoolDir(undefined, { HOME: "/home/u", XDG_STATE_HOME: "state" })).toBe("/home/u/.local/state/nix-edge-cache/spool");
});
