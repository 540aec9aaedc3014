-- Usage counters per UTC day: what the Worker did on its own initiative and must bound.
-- counter "write-through": bytes and objects that copies started by anonymous reads
-- stored (AGGREGATE_WRITE_THROUGH_DAILY_BYTES / _OBJECTS, storage/write-through-budget.ts).
-- A reservation adds to today's row in one statement, only while the sum stays within the
-- limits, so concurrent reservations can never add up to more. Earlier days stay as a
-- record (a few rows a year).

CREATE TABLE usage (
  counter TEXT NOT NULL,
  -- YYYY-MM-DD, UTC.
  day TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  objects INTEGER NOT NULL,
  PRIMARY KEY (counter, day)
) WITHOUT ROWID;
