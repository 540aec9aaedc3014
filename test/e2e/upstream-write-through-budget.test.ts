// The daily write-through budget end to end: the Worker (as `npm start` runs it, local R2)
// aggregates a real upstream server on loopback with write-through on and a budget of 4
// objects a day. Anonymous reads of upstream narinfos copy two paths (a NAR and a narinfo
// each); after that every read is still served through the upstream, but nothing more is
// stored, however often it is asked. (Counters, new days and races: test/worker/
// upstream-write-through-budget.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSecretKey } from "../../src/nix/signature.ts";
import { LocalCache } from "./harness.ts";
import { fakeCachePath, UpstreamServer, type FakeCachePath } from "./upstream-server.ts";
import { eventually, r2Snapshot, serverErrors } from "./upstream-helpers.ts";

const FIXTURES = new URL("../fixtures/keys/", import.meta.url).pathname;
const DAILY_OBJECTS = 4;

let root: string;
let upstream: UpstreamServer;
let cache: LocalCache;
let paths: FakeCachePath[];

beforeAll(async () => {
  const key = parseSecretKey((await readFile(join(FIXTURES, "test-cache-1.secret"), "utf8")).trim());
  paths = await Promise.all(["one", "two", "three", "four"].map((n) => fakeCachePath(`budget-${n}`, key)));
  root = await mkdtemp(join(tmpdir(), "nec-budget-upstream-"));
  await mkdir(join(root, "nar"));
  await writeFile(join(root, "nix-cache-info"), "StoreDir: /nix/store\n");
  for (const p of paths) {
    await writeFile(join(root, `${p.hash}.narinfo`), p.narinfo);
    await writeFile(join(root, "nar", p.fileName), p.file);
  }
  upstream = await UpstreamServer.start({ kind: "serve", root });
  cache = await LocalCache.start({
    AGGREGATE_UPSTREAMS: upstream.url,
    AGGREGATE_WRITE_THROUGH_KEYS: (await readFile(join(FIXTURES, "test-cache-1.public"), "utf8")).trim(),
    AGGREGATE_WRITE_THROUGH_DAILY_OBJECTS: String(DAILY_OBJECTS),
  });
});

afterAll(async () => {
  await cache?.stop();
  await upstream?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

/** True when the bucket serves the path's narinfo itself (write-through copied it). */
async function inBucket(p: FakeCachePath): Promise<boolean> {
  const res = await fetch(`${cache.url}/${p.hash}.narinfo`, { method: "HEAD" });
  return res.status === 200 && res.headers.get("X-Upstream-Cache") === null;
}

describe("write-through with a daily budget of 4 objects", () => {
  it("copies the first two paths read, then serves the others without storing anything", async () => {
    const [one, two, three, four] = paths as [FakeCachePath, FakeCachePath, FakeCachePath, FakeCachePath];
    for (const p of [one, two]) {
      expect((await fetch(`${cache.url}/${p.hash}.narinfo`)).status).toBe(200);
      expect(await eventually(() => inBucket(p), 20_000)).toBe(true);
    }
    // Two narinfos, two NARs and the day's counters.
    const spent = await r2Snapshot(cache);
    expect(spent).toHaveLength(5);

    for (let i = 0; i < 3; i++) {
      for (const p of [three, four]) {
        const res = await fetch(`${cache.url}/${p.hash}.narinfo`);
        expect(res.status).toBe(200);
        expect(res.headers.get("X-Upstream-Cache")).toBe(upstream.url);
        expect(await res.text()).toContain(`StorePath: ${p.storePath}\n`);
        const nar = await fetch(`${cache.url}/upstream/127.0.0.1:${upstream.port}/nar/${p.fileName}`);
        expect(nar.status).toBe(200);
        expect(new Uint8Array(await nar.arrayBuffer())).toEqual(p.file);
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
    expect(await r2Snapshot(cache)).toEqual(spent);
    expect(await inBucket(three)).toBe(false);
    expect(await inBucket(four)).toBe(false);
    // Their NARs were fetched for the three client reads only: no copy even started.
    expect(upstream.seen(`/nar/${three.fileName}`)).toHaveLength(3);
    expect(upstream.seen(`/nar/${four.fileName}`)).toHaveLength(3);
    expect(cache.logs).toMatch(/write-through budget is spent/);
    expect(serverErrors(cache)).toEqual([]);
  });
});
