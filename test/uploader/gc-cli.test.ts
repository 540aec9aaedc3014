// `uploader gc`, `pin`, `unpin` and `pins` as users run them: ages and dates, usage errors
// (exit 2, nothing sent), the help, and the report of a collection that could not read
// documents (against a stand-in answering as the Worker does). Runs against real caches
// are in test/e2e/gc.test.ts.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, test } from "vitest";
import { parseAge, parseDate } from "../../uploader/commands/gc.ts";
import { UsageError } from "../../uploader/errors.ts";
import { CLI, run } from "./helpers.ts";

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ["NIX_CACHE_URL", "NIX_CACHE_TOKEN", "NIX_CACHE_ADMIN_TOKEN", "NIX_CACHE_SECRET_KEY_FILE"]) delete env[k];
  // Not the user's own `uploader login` file.
  env.NIX_CACHE_CONFIG = "/nonexistent/nix-edge-cache.json";
  return env;
}

const uploader = (args: string[]) => run(process.execPath, [CLI, ...args], { env: cleanEnv() });

describe("ages and dates", () => {
  test.each([
    ["90s", 90],
    ["15m", 900],
    ["12h", 43200],
    ["14d", 14 * 86400],
    ["2w", 14 * 86400],
    ["0.5d", 43200],
    ["0s", 0],
  ])("--older-than %s is %d seconds", (text, seconds) => {
    expect(parseAge(text)).toBe(seconds);
  });

  test.each(["14", "d", "-1d", "1y", "1 day", ""])("--older-than %j is refused", (text) => {
    expect(() => parseAge(text)).toThrow(UsageError);
  });

  test("--before takes ISO 8601 or ms since the epoch", () => {
    expect(parseDate("2026-01-02T03:04:05Z")).toBe(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(parseDate("1700000000000")).toBe(1700000000000);
    expect(() => parseDate("yesterday")).toThrow(UsageError);
  });
});

describe("usage errors exit with 2 and say what to do", () => {
  test.each([
    [["gc"], /no cache given/],
    [["gc", "--cache", "http://127.0.0.1:9"], /no admin token given.*NIX_CACHE_ADMIN_TOKEN/],
    [["gc", "--cache", "http://127.0.0.1:9", "--admin-token", "t", "--older-than", "soon"], /--older-than/],
    [["gc", "--cache", "http://127.0.0.1:9", "--admin-token", "t", "--older-than", "1d", "--before", "0"], /not both/],
    [["gc", "stray"], /unexpected argument/],
    [["pin", "--cache", "http://127.0.0.1:9", "--admin-token", "t", "only-a-name"], /give a pin name and a store path/],
    [["pin", "--cache", "http://127.0.0.1:9", "--admin-token", "t", "bad/name", "/nix/store/00000000000000000000000000000000-x"], /pin name/],
    [["pin", "--cache", "http://127.0.0.1:9", "release", "/nix/store/00000000000000000000000000000000-x"], /no admin token/],
    [["unpin", "--cache", "http://127.0.0.1:9", "--admin-token", "t"], /give the name of one pin/],
    [["pins", "--cache", "http://127.0.0.1:9"], /no token given/],
  ])("%j", async (args, message) => {
    const r = await uploader(args as string[]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  test("the help of each command names its options and environment variables", async () => {
    const gc = await uploader(["gc", "--help"]);
    expect(gc.code).toBe(0);
    for (const flag of ["--cache", "--admin-token", "--dry-run", "--older-than", "--before", "--restart", "--json", "NIX_CACHE_ADMIN_TOKEN"]) expect(gc.stdout).toContain(flag);
    for (const command of ["pin", "unpin", "pins"]) {
      const r = await uploader([command, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: uploader ${command}`);
    }
    const top = await uploader(["--help"]);
    for (const command of ["gc", "pin", "unpin", "pins"]) expect(top.stdout).toMatch(new RegExp(`\\n  ${command}\\s`));
  });
});

describe("a collection blocked by documents it cannot read", () => {
  let server: Server | null = null;
  afterEach(async () => {
    await new Promise((done) => server?.close(done) ?? done(undefined));
    server = null;
  });

  /** A stand-in for the Worker whose collection ends at once, blocked by two documents. */
  async function blockedCache(): Promise<string> {
    const unreadable = [
      { key: "0123456789abcdfghijklmnpqrsvwxyz.narinfo", path: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-big", reason: "it is 2000000 bytes, more than the 1048576 a narinfo may have" },
      { key: "_gc/pins.json", path: null, reason: "the pins document is damaged: it is not JSON" },
    ];
    const run = { id: "abc-def", dryRun: false, trigger: "manual", startedAt: 1, cutoff: 1, phase: "finish", pass: 1 };
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => {
        const dryRun = (JSON.parse(body) as { dryRun: boolean }).dryRun;
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            status: "done",
            run: { ...run, dryRun },
            waitMs: 0,
            batch: { operations: 10, entries: 10 },
            totals: { unreadable: 3 },
            found: { paths: [], files: [] },
            result: { runId: run.id, deletedPaths: 0, deletedNars: 0, freedBytes: 0, finishedAt: 2, unreadableCount: 3, unreadable },
            ...(dryRun ? {} : { stats: { paths: 5, narFiles: 5, narBytes: 500, savedBytes: 0 } }),
          }),
        );
      });
    });
    await new Promise<void>((done) => server!.listen(0, "127.0.0.1", done));
    return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  }

  test.each([[[]], [["--dry-run"]]])("names them, says what to do and exits with 1 (%j)", async (extra) => {
    const cache = await blockedCache();
    const r = await uploader(["gc", "--cache", cache, "--admin-token", "t", ...extra]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("3 documents the cache keeps cannot be read");
    expect(r.stderr).toContain("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-big (0123456789abcdfghijklmnpqrsvwxyz.narinfo): it is 2000000 bytes");
    expect(r.stderr).toContain("_gc/pins.json: the pins document is damaged");
    expect(r.stderr).toContain("… and 1 more");
    expect(r.stderr).toMatch(/error: the collection (would delete|deleted) no path and no NAR/);
    expect(r.stderr).toMatch(/hint: delete each listed narinfo .*wrangler r2 object delete.* push its path again/);
  });

  test("--json puts them in the machine output too", async () => {
    const cache = await blockedCache();
    const r = await uploader(["gc", "--cache", cache, "--admin-token", "t", "--json", "--dry-run"]);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { unreadableCount: number; unreadable: Array<{ key: string }> };
    expect(out.unreadableCount).toBe(3);
    expect(out.unreadable.map((d) => d.key)).toEqual(["0123456789abcdfghijklmnpqrsvwxyz.narinfo", "_gc/pins.json"]);
  });
});
