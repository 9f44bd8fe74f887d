-- The snapshot catalogue: archives live in object storage; rows say what they contain.

-- The newest snapshot of a project, if any.
CREATE OR REPLACE FUNCTION synchub.latest_snapshot(p_project uuid)
RETURNS jsonb LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('snapshot_id', id, 'cursor', cursor, 'storage_key', storage_key, 'sha256', sha256,
                              'bytes', bytes, 'file_count', file_count, 'created_at', synchub.ts(created_at))
    FROM synchub.snapshots WHERE project_id = p_project
    ORDER BY cursor DESC, created_at DESC LIMIT 1
$$;

-- Snapshot ids are derived from (project, cursor) and the row keeps the manifest's
-- created_at, so a rebuild of the same cursor (after its object went missing from storage)
-- produces the same manifest and a byte-identical archive. Recording it again refreshes
-- the row instead of failing on the primary key.
CREATE OR REPLACE FUNCTION synchub.record_snapshot(p_project uuid, p_id uuid, p_cursor bigint,
                                                   p_key text, p_sha256 text, p_bytes bigint,
                                                   p_file_count integer, p_created_at timestamptz)
RETURNS void LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO synchub.snapshots (id, project_id, cursor, storage_key, sha256, bytes, file_count, created_at)
    VALUES (p_id, p_project, p_cursor, p_key, p_sha256, p_bytes, p_file_count, p_created_at)
    ON CONFLICT (project_id, id) DO UPDATE
        SET storage_key = EXCLUDED.storage_key, sha256 = EXCLUDED.sha256, bytes = EXCLUDED.bytes,
            file_count = EXCLUDED.file_count
$$;
