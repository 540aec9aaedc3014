// GET /_api/v1/stats: the cache's statistics as JSON (reads: public, or the read token).
//
//   {"paths": n, "narFiles": n, "narBytes": n, "savedBytes": n, "pathsWithoutSizes": n,
//    "countedAt": ms, "lastGc": {…} | null, "gcRunning": {"id", "startedAt", "phase"} | null}
//
// The numbers are counted by garbage collection (gc/stats.ts), so they are as of the last
// collection (countedAt); all are null before the first one. Two R2 reads per request.

import { Hono } from "hono";
import type { WorkerEnv } from "../env.ts";
import { requireRead } from "../middleware/auth.ts";
import { loadStatsView } from "../gc/stats.ts";

export const stats = new Hono<{ Bindings: WorkerEnv }>();

/** Statistics change once per collection; a minute of caching spares the bucket. */
const STATS_MAX_AGE_SECONDS = 60;

stats.get("/_api/v1/stats", requireRead, async (c) => {
  const view = await loadStatsView(c.env.CACHE);
  const s = view.stats;
  return c.json(
    {
      paths: s?.paths ?? null,
      narFiles: s?.narFiles ?? null,
      narBytes: s?.narBytes ?? null,
      savedBytes: s?.savedBytes ?? null,
      pathsWithoutSizes: s?.pathsWithoutSizes ?? null,
      countedAt: s?.countedAt ?? null,
      lastGc: s?.lastGc ?? null,
      gcRunning: view.running,
    },
    200,
    { "Cache-Control": `private, max-age=${STATS_MAX_AGE_SECONDS}` },
  );
});
