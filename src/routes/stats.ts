// GET /_api/v1/stats: the cache's statistics as JSON (reads: public, or the read token).
//
//   {"paths": n, "fileBytes": n, "savedBytes": n, "pathsWithoutSizes": 0,
//    "indexCountedAt": ms, "indexComplete": bool,
//    "narFiles": n, "narBytes": n, "countedAt": ms, "lastGc": {…} | null,
//    "gcRunning": {"id", "startedAt", "phase"} | null}
//
// paths, fileBytes (Σ FileSize) and savedBytes (Σ NarSize − Σ FileSize: what compression
// saves) come from the D1 index, so they are current from the first request on: counted at
// indexCountedAt, which is recent (a count is reused for a while so that public statistics
// cost few D1 rows read, gc/stats.ts STATS_ROWS_PER_DAY). Every indexed path has its sizes,
// so pathsWithoutSizes is 0 (kept for clients that read it). indexComplete is false while
// narinfos stored before the index existed are still being adopted (paths counts only the
// indexed ones). narFiles and narBytes (the NAR files in the bucket and their bytes: what
// R2 stores) and lastGc are counted by garbage collection, as of countedAt; null before the
// first collection. The index's fields are null only when it cannot be read. One D1
// query per request, and now and then three more (the count and keeping it).

import { Hono } from "hono";
import type { WorkerEnv } from "../env.ts";
import { requireRead } from "../middleware/auth.ts";
import { loadStatsView } from "../gc/stats.ts";

export const stats = new Hono<{ Bindings: WorkerEnv }>();

/** Statistics change slowly; a minute of caching spares the database. */
const STATS_MAX_AGE_SECONDS = 60;

stats.get("/_api/v1/stats", requireRead, async (c) => {
  const view = await loadStatsView(c.env.DB);
  const s = view.stats;
  const index = view.index;
  return c.json(
    {
      paths: index?.paths ?? null,
      fileBytes: index?.fileBytes ?? null,
      savedBytes: index === null ? null : Math.max(0, index.narBytes - index.fileBytes),
      pathsWithoutSizes: index === null ? null : 0,
      indexCountedAt: index?.countedAt ?? null,
      indexComplete: index?.complete ?? null,
      narFiles: s?.narFiles ?? null,
      narBytes: s?.narBytes ?? null,
      countedAt: s?.countedAt ?? null,
      lastGc: s?.lastGc ?? null,
      gcRunning: view.running,
    },
    200,
    { "Cache-Control": `private, max-age=${STATS_MAX_AGE_SECONDS}` },
  );
});
