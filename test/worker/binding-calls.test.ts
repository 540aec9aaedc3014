// Requests about many paths cost a constant number of binding calls, whatever the number of
// paths or references: each R2 or D1 call costs the Worker CPU in the runtime itself (about
// 0.1 ms), so a request that made one per path could not stay within the free plan's 10 ms.
// Counted through proxies around the real local R2 bucket and D1 database, for a small and
// a large request of each kind; D1's own rows-read and rows-written figures are checked too.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { adoptObjects } from "../../src/path-index/adoption.ts";
import { bearer, callWith, push, putNar, testPath, type TestPath } from "../helpers/worker.ts";
import { CountingBucket } from "../helpers/gc.ts";

afterEach(() => reset());

/** Counts D1 calls (a batch is one) and sums the rows D1 says each read and wrote. */
class CountingDatabase {
  calls = 0;
  rowsRead = 0;
  rowsWritten = 0;
  readonly db: D1Database;
  constructor(inner: D1Database) {
    const counter = this;
    const tally = (result: unknown) => {
      for (const r of Array.isArray(result) ? result : [result]) {
        const meta = (r as { meta?: { rows_read?: number; rows_written?: number } } | null)?.meta;
        counter.rowsRead += meta?.rows_read ?? 0;
        counter.rowsWritten += meta?.rows_written ?? 0;
      }
      return result;
    };
    const wrapStatement = (statement: D1PreparedStatement): D1PreparedStatement =>
      new Proxy(statement, {
        get(target, prop) {
          const value = Reflect.get(target, prop) as unknown;
          if (typeof value !== "function") return value;
          if (prop === "bind") return (...args: unknown[]) => wrapStatement((value as (...a: unknown[]) => D1PreparedStatement).apply(target, args));
          if (prop === "all" || prop === "run" || prop === "first" || prop === "raw") {
            return async (...args: unknown[]) => {
              counter.calls++;
              if (prop !== "all" && prop !== "run") return (value as (...a: unknown[]) => unknown).apply(target, args);
              return tally(await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args));
            };
          }
          return (value as (...a: unknown[]) => unknown).bind(target);
        },
      });
    this.db = new Proxy(inner, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (prop === "prepare") return (sql: string) => wrapStatement(target.prepare(sql));
        if (prop === "batch") {
          return async (statements: D1PreparedStatement[]) => {
            counter.calls++;
            return tally(await target.batch(statements));
          };
        }
        return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }
}

interface Cost {
  r2: number;
  d1: number;
  rowsRead: number;
  rowsWritten: number;
}

async function measure(path: string, init: RequestInit, expected: number): Promise<Cost> {
  const bucket = new CountingBucket(env.CACHE);
  const db = new CountingDatabase(env.DB);
  const res = await callWith({ CACHE: bucket.bucket, DB: db.db } as unknown as Record<string, string>, path, init);
  expect(res.status, await res.clone().text()).toBe(expected);
  await res.arrayBuffer();
  return { r2: bucket.count, d1: db.calls, rowsRead: db.rowsRead, rowsWritten: db.rowsWritten };
}

/** `n` paths pushed through the Worker, and one more path referencing all of them. */
async function closureOf(n: number, tag: string): Promise<{ deps: TestPath[]; top: TestPath }> {
  const deps: TestPath[] = [];
  for (let i = 0; i < n; i++) {
    const p = await testPath(`calls-${tag}-${i}`);
    await push(p);
    deps.push(p);
  }
  const top = await testPath(`calls-${tag}-top`, { references: deps });
  expect((await putNar(top)).status).toBe(201);
  return { deps, top };
}

describe("binding calls per request do not grow with the number of paths", () => {
  it("POST /_api/v1/missing: 10 hashes and 500 hashes cost the same calls", async () => {
    await adoptObjects(env.CACHE, env.DB); // an empty bucket: the index is complete
    const { deps } = await closureOf(5, "m");
    const ask = (hashes: string[]) => measure("/_api/v1/missing", { method: "POST", body: JSON.stringify({ hashes }), headers: bearer() }, 200);
    const absent = (n: number) => Array.from({ length: n }, (_, i) => `${String(i).padStart(6, "0")}${"1".repeat(26)}`);
    const small = await ask([...deps.map((d) => d.hash), ...absent(5)]);
    const large = await ask([...deps.map((d) => d.hash), ...absent(495)]);
    expect(small.r2).toBe(0);
    expect(large).toMatchObject({ r2: small.r2, d1: small.d1 });
    expect(large.rowsWritten).toBe(0);
  });

  it("PUT narinfo: 3 references and 300 references cost the same calls", async () => {
    const few = await closureOf(3, "few");
    const many = await closureOf(300, "many");
    const put = (p: TestPath) => measure(`/${p.hash}.narinfo`, { method: "PUT", body: formatNarInfo(p.info), headers: bearer() }, 201);
    const small = await put(few.top);
    const large = await put(many.top);
    expect(large).toMatchObject({ r2: small.r2, d1: small.d1 });
    // One path row written (and its audit row), whatever the number of references.
    expect(large.rowsWritten).toBe(small.rowsWritten);
  }, 120_000);
});
