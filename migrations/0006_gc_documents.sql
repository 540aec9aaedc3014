-- The collector's small documents: the collection in progress (its phase, cursors, lease
-- and counters), the same for dry runs, the last collection's statistics and the index's
-- last count (src/storage/gc-documents.ts). Each is one row rewritten as a whole; a write
-- that must not lose a race names the version it read (optimistic concurrency, as the R2
-- documents `_gc/state.json`… did with etags before). Caches from before this table have
-- their state and statistics moved here by the first collection batch that runs.
-- A run's working objects (mark sets, candidate lists) and the fence stay in R2: they are
-- the large, write-once bytes of a run.

CREATE TABLE gc_documents (
  -- state | dry-run | stats | index-stats
  name TEXT PRIMARY KEY NOT NULL,
  body TEXT NOT NULL,
  -- 1 when written first, +1 on every write.
  version INTEGER NOT NULL
) WITHOUT ROWID;
