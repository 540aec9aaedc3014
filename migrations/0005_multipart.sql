-- Multipart uploads of large NARs in progress (storage/multipart.ts, multipart-index.ts):
-- who owns each, its layout and R2's upload id, and the parts R2 has received. R2 keeps
-- the bytes (the parts, then the assembled NAR at multipart/assembled/<writer>~<slot>);
-- caches from before this table kept these facts as R2 objects under multipart/uploads/
-- and multipart/objects/, which the cron's cleanup aborts and deletes.
--
-- Rows written (the free plan allows 100,000 a day): an upload costs one row when it starts
-- and one per part received (parts are at least 5 MiB, 64 MiB by default: a 1 GiB NAR is
-- 16), and as many again when it ends, since D1 counts deleted rows as written. No
-- secondary index: every query names a writer, whose at most 64 uploads the primary key
-- keeps together, or is the cron's scan of all uploads in progress.

CREATE TABLE multipart_uploads (
  -- The write token's secret name, and its slot: 0 ≤ slot < MAX_UPLOADS_PER_WRITER. The
  -- primary key is what bounds a token's uploads: a slot is claimed by inserting its row.
  writer TEXT NOT NULL,
  slot INTEGER NOT NULL,
  -- The NAR's file name under nar/ when the upload was started for it; NULL for an
  -- upload the client names at completion (then `name` is set instead).
  nar TEXT,
  -- The client's name for an upload whose NAR it names at completion, by which a restarted
  -- push resumes it; NULL when `nar` is set.
  name TEXT,
  -- R2's id of the multipart upload at the slot's assembled key.
  upload_id TEXT NOT NULL,
  -- Every part but the last has part_size bytes. size and part_count: known at start when
  -- `nar` is set, at completion otherwise (NULL until then).
  size INTEGER,
  part_size INTEGER NOT NULL,
  part_count INTEGER,
  -- Start time, ms since the epoch.
  started INTEGER NOT NULL,
  PRIMARY KEY (writer, slot)
) WITHOUT ROWID;

-- One row per part R2 has received (the last one received for each number): what
-- completion hands to R2 and what a resumed upload need not send again.
CREATE TABLE multipart_parts (
  writer TEXT NOT NULL,
  slot INTEGER NOT NULL,
  -- The upload it belongs to: a row is only written while that upload holds the slot.
  upload_id TEXT NOT NULL,
  part_number INTEGER NOT NULL,
  etag TEXT NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (writer, slot, part_number)
) WITHOUT ROWID;
