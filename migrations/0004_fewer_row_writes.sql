-- D1 counts every row an index or a sequence makes it write (the free plan allows 100,000
-- rows written a day), so a new path cost 4: its row, an entry of paths_by_nar, an audit
-- row, and the audit table's AUTOINCREMENT counter in sqlite_sequence. No query looks
-- paths up by NAR file, and audit ids need not survive the deletion of the newest row, so
-- both go: a new path now costs 2 rows written.

DROP INDEX paths_by_nar;

-- Writes and deletions, newest last: who published, signed, pinned or removed what, and when.
CREATE TABLE audit_new (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  -- The token's secret name, "gc" for retention, "upstream" for write-through copies,
  -- "admin" for pin changes.
  actor TEXT NOT NULL,
  -- publish | sign | delete | pin | unpin
  action TEXT NOT NULL,
  -- The store path or object key concerned.
  subject TEXT NOT NULL
);
INSERT INTO audit_new (id, at, actor, action, subject) SELECT id, at, actor, action, subject FROM audit;
DROP TABLE audit;
ALTER TABLE audit_new RENAME TO audit;
