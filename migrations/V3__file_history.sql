-- File history (CONTRACT section 14): older versions are stored compactly and trimmed by
-- retention, and the bytes history keeps are counted in the owner's quota.
--
-- A version row holds its text in one of three ways:
--   full      content is the text (the current version always; checkpoints; not yet compacted)
--   delta     content NULL, delta = a Fossil delta that rebuilds the text from the text of
--             the row delta_base_id (a newer kept version of the same path)
--   trimmed   retention removed it: no bytes, trimmed_at set; the row stays, because
--             events.file_ids and parent_version_id refer to it (reads answer 410)
-- Tombstones (is_deleted) and binary versions (no content, a blob reference) have no text.
-- The background history task (src/history.rs) turns full rows into deltas and trims;
-- the write path only inserts full rows, as before.

ALTER TABLE synchub.project_files
    ADD COLUMN delta bytea,
    ADD COLUMN delta_base_id bigint,
    ADD COLUMN trimmed_at timestamptz,
    -- Bytes this row stores (its content, or its delta), as counted in user_usage.
    ADD COLUMN stored_bytes integer NOT NULL DEFAULT 0,
    -- The history task has decided this row's storage (delta or checkpoint): nothing left
    -- to compact. Only non-current rows are ever compacted.
    ADD COLUMN compacted boolean NOT NULL DEFAULT false,
    -- Retention steps this row has survived: 0 none, 1 the hourly step (older than the
    -- keep-everything window), 2 the daily step (final).
    ADD COLUMN retention_tier smallint NOT NULL DEFAULT 0,
    ADD FOREIGN KEY (project_id, delta_base_id) REFERENCES synchub.project_files (project_id, id);

-- The baseline said "a row has content exactly when it is not a tombstone". Delta rows,
-- trimmed rows (and binary rows, V2) have no content either: drop that check, whatever it
-- is named now (V2 may have replaced it), and state what still holds.
DO $$
DECLARE
    v_name name;
BEGIN
    FOR v_name IN
        SELECT c.conname FROM pg_constraint c
        WHERE c.conrelid = 'synchub.project_files'::regclass AND c.contype = 'c'
          AND pg_get_constraintdef(c.oid) LIKE '%is_deleted%'
    LOOP
        EXECUTE format('ALTER TABLE synchub.project_files DROP CONSTRAINT %I', v_name);
    END LOOP;
END $$;
ALTER TABLE synchub.project_files
    ADD CONSTRAINT project_files_tombstone_has_no_text
        CHECK (NOT is_deleted OR (content IS NULL AND delta IS NULL)),
    ADD CONSTRAINT project_files_delta_has_base
        CHECK (delta IS NULL OR (content IS NULL AND delta_base_id IS NOT NULL)),
    ADD CONSTRAINT project_files_trimmed_has_no_text
        CHECK (trimmed_at IS NULL OR (content IS NULL AND delta IS NULL));
-- And a version that is not a deletion still holds something: its text, a delta, a trimmed
-- marker, or (V2) a blob reference.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE synchub.project_files ADD CONSTRAINT project_files_version_has_data CHECK ('
        'is_deleted OR content IS NOT NULL OR delta IS NOT NULL OR trimmed_at IS NOT NULL%s)',
        CASE WHEN EXISTS (SELECT 1 FROM information_schema.columns
                          WHERE table_schema = 'synchub' AND table_name = 'project_files'
                            AND column_name = 'blob_sha256')
             THEN ' OR blob_sha256 IS NOT NULL' ELSE '' END);
END $$;

UPDATE synchub.project_files SET stored_bytes = coalesce(octet_length(content), 0) WHERE content IS NOT NULL;
-- Binary versions (V2) store their blob's size (counted per version, like text).
UPDATE synchub.project_files SET stored_bytes = size WHERE blob_sha256 IS NOT NULL;

-- Stored bytes now include history: every version's stored bytes of the projects a user owns.
UPDATE synchub.user_usage u SET stored_bytes = coalesce((
    SELECT sum(f.stored_bytes) FROM synchub.project_files f
    JOIN synchub.projects p ON p.id = f.project_id
    WHERE p.owner_id = u.user_id), 0);

-- What the history task looks for: superseded text rows not compacted yet, and rows due
-- for a retention step. Partial: current rows (every write's new row) are in neither.
CREATE INDEX project_files_to_compact ON synchub.project_files (project_id, file_path)
    WHERE NOT is_current_version AND NOT compacted AND content IS NOT NULL;
CREATE INDEX project_files_to_retain ON synchub.project_files (created_at)
    WHERE NOT is_current_version AND trimmed_at IS NULL AND retention_tier < 2;
-- Rows rebuilt from a base: finding a base's dependents when it is trimmed or compacted.
CREATE INDEX project_files_delta_base ON synchub.project_files (project_id, delta_base_id)
    WHERE delta_base_id IS NOT NULL;
