-- The index of published paths: the facts about each stored narinfo that requests about
-- many paths at once need (the missing query, reference checks, retention, statistics),
-- so that they cost one query instead of one R2 call per path. R2 keeps the bytes; a row
-- is written only after its narinfo object (so there is never a row without its object),
-- and deleted before the object is.

CREATE TABLE paths (
  -- The store path's hash part (32 nix32 characters) and name: /nix/store/<hash>-<name>.
  hash TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  -- The NAR's file name under nar/ (the narinfo's URL without "nar/"), FileSize, NarSize.
  nar_file TEXT NOT NULL,
  file_size INTEGER NOT NULL,
  nar_size INTEGER NOT NULL,
  -- Hash parts of the references, the path's own excluded, as a JSON array.
  refs TEXT NOT NULL,
  -- The write token (name of its secret) that published the path; NULL when the Worker
  -- copied it from an upstream or adopted an object it found in the bucket.
  token TEXT,
  -- When it was first indexed and last pushed (ms since the epoch).
  created_at INTEGER NOT NULL,
  pushed_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX paths_by_nar ON paths (nar_file);

-- Writes and deletions, newest last: who published, signed or removed what, and when.
CREATE TABLE audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  -- The token's secret name, "gc" for retention, "upstream" for write-through copies.
  actor TEXT NOT NULL,
  -- publish | sign | delete
  action TEXT NOT NULL,
  -- The store path or object key concerned.
  subject TEXT NOT NULL
);

-- Small facts about the index itself, e.g. whether every narinfo in the bucket is indexed.
CREATE TABLE index_state (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) WITHOUT ROWID;
