// `watch-store` and `post-build-hook` refuse bad command lines before doing anything, with
// a message that says what to do (exit 2), run as users run them: `node uploader/cli.ts`.
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { CLI, run } from "./helpers.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nec-watch-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function uploader(args: string[], env: NodeJS.ProcessEnv = {}) {
  const base: NodeJS.ProcessEnv = { ...process.env, NIX_CACHE_CONFIG: join(dir, "none.json"), NIX_CACHE_SPOOL: join(dir, "spool") };
  for (const k of ["NIX_CACHE_URL", "NIX_CACHE_TOKEN", "NIX_CACHE_SECRET_KEY_FILE", "OUT_PATHS", "DRV_PATH", "NIX_CACHE_IF_NO_WATCHER"]) delete base[k];
  return run(process.execPath, [CLI, ...args], { env: { ...base, ...env } });
}

const CACHE = { NIX_CACHE_URL: "http://127.0.0.1:9", NIX_CACHE_TOKEN: "t" };

test.each([
  [["watch-store", "./result"], CACHE, 'watch-store takes no paths (got "./result")'],
  [["watch-store", "--exclude", "(unclosed"], CACHE, "--exclude is not a regular expression"],
  [["watch-store"], { NIX_CACHE_URL: "http://127.0.0.1:9" }, "no write token given"],
  [["post-build-hook"], {}, "no paths: OUT_PATHS is not set"],
  [["post-build-hook"], { OUT_PATHS: "/nix/store/x y" }, 'OUT_PATHS holds something that is not a store path: "/nix/store/x"'],
  [["post-build-hook"], { NIX_CACHE_IF_NO_WATCHER: "later" }, '--if-no-watcher must be spool or push, got "later"'],
])("uploader %j refuses with a message and exit 2", async (args, env, message) => {
  const r = await uploader(args, env);
  expect(r.stderr).toContain(message);
  expect(r.code).toBe(2);
  // Nothing was queued.
  expect(await readdir(join(dir, "spool")).catch(() => [])).toEqual([]);
});

test("the command list names both commands", async () => {
  const list = await uploader(["--help"]);
  expect(list.stdout).toMatch(/^ {2}watch-store +push every new store path/m);
  expect(list.stdout).toMatch(/^ {2}post-build-hook +Nix's post-build-hook/m);
});
