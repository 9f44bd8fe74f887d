-- Binary files (CONTRACT section 13): a file version is text (content) or binary (a
-- reference to a content-addressed blob in the snapshot storage, by sha256), never both;
-- a tombstone has neither.

-- The blobs the hub holds: a row exists only once the object's bytes are in storage and
-- the hub has hashed them (the sha256 and size are what storage really holds). Blobs are
-- shared by every project, like a reference table; blob garbage collection deletes rows
-- no file version references (after a grace period from created_at), under the row lock
-- a referencing write also takes (migrations/functions/blobs.sql).
CREATE TABLE synchub.blobs (
    sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size bigint NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The largest binary file, set from the hub's configuration like the other limits.
ALTER TABLE synchub.limits ADD COLUMN max_blob_bytes bigint NOT NULL DEFAULT 52428800;

ALTER TABLE synchub.project_files ADD COLUMN blob_sha256 text REFERENCES synchub.blobs (sha256);
-- The V1 check "is_deleted = (content IS NULL)" becomes: a live version has exactly one of
-- content and blob_sha256, a tombstone neither.
ALTER TABLE synchub.project_files DROP CONSTRAINT project_files_check;
ALTER TABLE synchub.project_files ADD CONSTRAINT project_files_bytes
    CHECK (is_deleted = (content IS NULL AND blob_sha256 IS NULL)
           AND (content IS NULL OR blob_sha256 IS NULL));
-- Garbage collection asks "does any version reference this blob?".
CREATE INDEX project_files_blob ON synchub.project_files (blob_sha256) WHERE blob_sha256 IS NOT NULL;

-- Readers of the current files see the blob reference too (a new column at the end).
CREATE OR REPLACE VIEW synchub.project_files_current AS
SELECT id, project_id, file_path, file_type, content, content_hash, size, version,
       parent_version_id, seq, created_by, last_modified_by, created_at, updated_at, blob_sha256
FROM synchub.project_files
WHERE is_current_version AND NOT is_deleted;
