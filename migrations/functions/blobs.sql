-- Binary files (CONTRACT section 13): content-addressed blobs, the checks a write that
-- references one goes through, and blob garbage collection.
--
-- A blobs row means "storage holds exactly these bytes under blobs/<sha256>": the hub
-- inserts it (register_blob) only after it hashed what storage holds. A write that
-- references a blob locks its row (FOR SHARE, until commit) after checking it; garbage
-- collection locks candidate rows FOR UPDATE SKIP LOCKED, checks again with a fresh
-- snapshot that nothing references them, deletes the objects, then the rows, and
-- commits: a write either locked first (GC skips the row) or waits for GC's commit and
-- then finds no row (the write is refused, nothing dangles).

-- Raises SH400 unless p_blob is {sha256: 64 lowercase hex, size: integer}; SH413 when the
-- size is over the limit.
CREATE OR REPLACE FUNCTION synchub.check_blob_ref(p_blob jsonb, p_path text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF jsonb_typeof(p_blob) IS DISTINCT FROM 'object'
        OR jsonb_typeof(p_blob -> 'sha256') IS DISTINCT FROM 'string'
        OR (p_blob ->> 'sha256') !~ '^[0-9a-f]{64}$'
        OR jsonb_typeof(p_blob -> 'size') IS DISTINCT FROM 'number' THEN
        PERFORM synchub.fail('SH400', 'blob must be {"sha256": 64 lowercase hex digits, "size": bytes}',
            jsonb_build_object('path', p_path));
    END IF;
    PERFORM synchub.check_counter('blob.size', p_blob -> 'size');
    IF (p_blob ->> 'size')::bigint > (SELECT max_blob_bytes FROM synchub.limits) THEN
        PERFORM synchub.fail('SH413', 'binary file is larger than the limit',
            jsonb_build_object('path', p_path, 'limit', (SELECT max_blob_bytes FROM synchub.limits)));
    END IF;
END $$;

-- Locks (FOR SHARE, in sha256 order so writers cannot deadlock) the blobs the upserts
-- reference and checks each is held with exactly the size given; raises SH400 naming the
-- first that is not.
CREATE OR REPLACE FUNCTION synchub.lock_blobs(p_upserts jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_refs jsonb;
    v_bad jsonb;
BEGIN
    SELECT jsonb_agg(e) INTO v_refs FROM jsonb_array_elements(p_upserts) e WHERE e ? 'blob';
    IF v_refs IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM synchub.blobs b
    WHERE b.sha256 IN (SELECT e #>> '{blob,sha256}' FROM jsonb_array_elements(v_refs) e)
    ORDER BY b.sha256 FOR SHARE;
    SELECT e INTO v_bad FROM jsonb_array_elements(v_refs) e
    LEFT JOIN synchub.blobs b ON b.sha256 = e #>> '{blob,sha256}'
    WHERE b.sha256 IS NULL OR b.size <> (e #>> '{blob,size}')::bigint
    LIMIT 1;
    IF v_bad IS NOT NULL THEN
        PERFORM synchub.fail('SH400',
            'the hub holds no blob with this sha256 and size: upload it first (POST /v1/projects/{id}/blobs)',
            jsonb_build_object('path', v_bad ->> 'path', 'sha256', v_bad #>> '{blob,sha256}',
                               'size', (v_bad #>> '{blob,size}')::bigint));
    END IF;
END $$;

-- A version's bytes as a write entry carries them: {content} for text, {blob} for binary.
CREATE OR REPLACE FUNCTION synchub.file_body(f synchub.project_files) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN f.blob_sha256 IS NULL THEN jsonb_build_object('content', f.content)
                ELSE jsonb_build_object('blob', jsonb_build_object('sha256', f.blob_sha256, 'size', f.size)) END
$$;

-- Records that storage holds these bytes (the hub hashed them). Idempotent; a known
-- sha256 with another size is refused (it cannot be the same bytes).
CREATE OR REPLACE FUNCTION synchub.register_blob(p_sha256 text, p_size bigint) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_size bigint;
BEGIN
    PERFORM synchub.check_blob_ref(jsonb_build_object('sha256', p_sha256, 'size', p_size), NULL);
    INSERT INTO synchub.blobs (sha256, size) VALUES (p_sha256, p_size)
    ON CONFLICT (sha256) DO NOTHING;
    SELECT size INTO v_size FROM synchub.blobs WHERE sha256 = p_sha256;
    IF v_size IS DISTINCT FROM p_size THEN
        PERFORM synchub.fail('SH400', 'a blob with this sha256 has another size',
            jsonb_build_object('sha256', p_sha256, 'size', p_size));
    END IF;
END $$;

-- Before an upload or a straight binary write (editor or better): is the blob held?
-- {exists, size}; size is what is held (null when not held).
CREATE OR REPLACE FUNCTION synchub.blob_status(p_project uuid, p_actor text, p_sha256 text, p_size bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_size bigint;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'editor');
    PERFORM synchub.check_blob_ref(jsonb_build_object('sha256', p_sha256, 'size', p_size), NULL);
    SELECT size INTO v_size FROM synchub.blobs WHERE sha256 = p_sha256;
    RETURN jsonb_build_object('exists', v_size IS NOT NULL AND v_size = p_size, 'size', v_size);
END $$;

-- Whether a reader of the project (viewer or better) may fetch a blob: some version of one
-- of its files references it. Returns the size; 404 otherwise.
CREATE OR REPLACE FUNCTION synchub.project_blob(p_project uuid, p_actor text, p_sha256 text)
RETURNS bigint LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_size bigint;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    SELECT f.size INTO v_size FROM synchub.project_files f
    WHERE f.project_id = p_project AND f.blob_sha256 = p_sha256 LIMIT 1;
    IF v_size IS NULL THEN
        PERFORM synchub.fail('SH404', 'blob not found', jsonb_build_object('sha256', p_sha256));
    END IF;
    RETURN v_size;
END $$;

-- Creates or replaces one binary file (the blob must be held): the same write as
-- upsert_project_file, with {blob} instead of content.
CREATE OR REPLACE FUNCTION synchub.upsert_binary_file(project_uuid uuid, p_file_path text,
    p_blob jsonb, p_file_type text, expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, content_hash text, seq bigint)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_entry jsonb := jsonb_build_object('path', p_file_path, 'blob', p_blob,
                                        'file_type', p_file_type, 'expected_version', expected_version);
    v_result jsonb := synchub.apply_change(project_uuid, jsonb_build_array(v_entry), '[]', p_actor, p_op_id,
                                           'file:update', 'upsert', v_entry);
BEGIN
    RETURN QUERY SELECT v_result -> 'files' -> 0 ->> 'path', (v_result -> 'files' -> 0 ->> 'version')::integer,
                        v_result -> 'files' -> 0 ->> 'content_hash', (v_result ->> 'seq')::bigint;
END $$;

-- Garbage collection, first step (inside the collector's transaction): locks up to
-- p_limit blobs older than p_grace that no version references, skipping rows a writer
-- holds, and returns those still unreferenced under the lock (checked again by a second
-- statement, which sees every write committed before the lock was taken).
CREATE OR REPLACE FUNCTION synchub.blob_gc_claim(p_grace interval, p_limit integer)
RETURNS SETOF text LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_locked text[];
BEGIN
    SELECT coalesce(array_agg(c.sha256), '{}') INTO v_locked FROM (
        SELECT b.sha256 FROM synchub.blobs b
        WHERE b.created_at < now() - p_grace
          AND NOT EXISTS (SELECT 1 FROM synchub.project_files f WHERE f.blob_sha256 = b.sha256)
        ORDER BY b.sha256
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED) c;
    RETURN QUERY
    SELECT b.sha256 FROM synchub.blobs b
    WHERE b.sha256 = ANY (v_locked)
      AND NOT EXISTS (SELECT 1 FROM synchub.project_files f WHERE f.blob_sha256 = b.sha256)
    ORDER BY b.sha256;
END $$;

-- Garbage collection, last step (same transaction, after the objects are deleted): the
-- rows go. Returns how many.
CREATE OR REPLACE FUNCTION synchub.blob_gc_forget(p_shas text[]) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM synchub.blobs WHERE sha256 = ANY (p_shas) RETURNING 1)
    SELECT count(*) FROM gone
$$;
