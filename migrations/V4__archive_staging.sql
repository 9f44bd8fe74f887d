-- Archive imports (CONTRACT section 13) reach PostgreSQL in bounded pieces: the hub stages
-- the checked entries here (synchub.stage_archive_entries, a few hundred at a time) inside
-- the import's one transaction, then one call (synchub.import_project_archive) applies them
-- as one change and deletes them before that transaction commits. So no other transaction
-- ever sees a staged row, and a failed import rolls its rows back with everything else.
-- UNLOGGED: a staged row never needs to outlive its transaction, so it skips the WAL.
CREATE UNLOGGED TABLE synchub.archive_staging (
    project_id uuid NOT NULL,
    -- One import (a random id the hub draws per request).
    import_id uuid NOT NULL,
    -- The entry's place in the archive: the change applies the entries in this order.
    ord integer NOT NULL,
    -- entry ->> 'path', read once when staged (replace mode joins on it).
    path text COLLATE "C",
    -- A write entry as apply_change takes it: {path, content | blob, file_type?}.
    entry jsonb NOT NULL,
    PRIMARY KEY (project_id, import_id, ord)
);
-- Stored out of line without compression: each row is written once and read back once, in
-- the same transaction; compressing ~100 MB would cost more than it saves.
ALTER TABLE synchub.archive_staging ALTER COLUMN entry SET STORAGE EXTERNAL;
