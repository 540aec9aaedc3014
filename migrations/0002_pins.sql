-- Named pins: roots that garbage collection keeps with their whole closure, however old
-- (src/routes/pins.ts). Setting and removing one is audited (audit.action pin | unpin).
-- Caches from before this table kept them in the R2 object `_gc/pins.json`; the Worker
-- moves that document's pins here the first time it needs them (storage/pins.ts).

CREATE TABLE pins (
  name TEXT PRIMARY KEY NOT NULL,
  -- The full store path, and its hash part (what the collector marks).
  path TEXT NOT NULL,
  hash TEXT NOT NULL,
  -- When it was set (ms since the epoch).
  pinned_at INTEGER NOT NULL
) WITHOUT ROWID;
