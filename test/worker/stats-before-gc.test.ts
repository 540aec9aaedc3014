// The landing page's statistics count pushes as they happen, before any garbage collection
// (issue 14): each accepted narinfo is one row of the D1 index (an INSERT, no
// read-modify-write of a shared counter), so concurrent pushes are all counted, and
// GET /_api/v1/stats and the landing page show them without a collection having run.
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { call, push, testPath } from "../helpers/worker.ts";

afterEach(() => reset());

describe("statistics before the first collection", () => {
  it("count concurrent pushes at once, in /_api/v1/stats and on the landing page", async () => {
    const paths = await Promise.all(["stats-early-a", "stats-early-b", "stats-early-c", "stats-early-d"].map((n) => testPath(n)));
    await Promise.all(paths.map((p) => push(p)));
    const stats = (await (await call("/_api/v1/stats")).json()) as { paths: number; fileBytes: number; lastGc: unknown; countedAt: unknown };
    expect(stats.paths).toBe(4);
    expect(stats.fileBytes).toBe(paths.reduce((n, p) => n + p.file.length, 0));
    // No collection has run: what it counts is still absent.
    expect(stats.lastGc).toBeNull();
    expect(stats.countedAt).toBeNull();
    const page = await (await call("/")).text();
    expect(page).not.toContain("Not counted yet");
    expect(page).toContain('<tr><th scope="row">Store paths</th><td>4</td></tr>');
  });
});
