-- File history (CONTRACT section 14): the versions of a path, one version's text, restore,
-- and the storage primitives the background history task (src/history.rs) uses to
-- compact versions into Fossil deltas and trim them by retention. Storage layout: see
-- migrations/V3__file_history.sql.

-- One base-64 digit of a Fossil delta integer ("0-9A-Z_a-z~"), or -1 for any other byte.
CREATE OR REPLACE FUNCTION synchub.fossil_digit(p_byte integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN p_byte BETWEEN 48 AND 57 THEN p_byte - 48
        WHEN p_byte BETWEEN 65 AND 90 THEN p_byte - 55
        WHEN p_byte = 95 THEN 36
        WHEN p_byte BETWEEN 97 AND 122 THEN p_byte - 60
        WHEN p_byte = 126 THEN 63
        ELSE -1
    END
$$;

-- Applies a Fossil delta (the format of the `fossil-delta` crate the hub writes them with)
-- to p_base. Used where SQL must hand out an old version's full text (event replay,
-- restore); the hub itself rebuilds versions in Rust. The checksum is not verified: the
-- deltas are the hub's own, and every version's content_hash is stored beside it.
CREATE OR REPLACE FUNCTION synchub.fossil_apply(p_base bytea, p_delta bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    v_len integer := length(p_delta);
    v_pos integer := 0;
    v_parts bytea[] := '{}';
    v_count bigint;
    v_offset bigint;
    v_op integer;
    v_digit integer;
    v_first boolean := true;
BEGIN
    WHILE v_pos < v_len LOOP
        v_count := 0;
        LOOP
            EXIT WHEN v_pos >= v_len;
            v_digit := synchub.fossil_digit(get_byte(p_delta, v_pos));
            EXIT WHEN v_digit < 0;
            v_count := v_count * 64 + v_digit;
            v_pos := v_pos + 1;
        END LOOP;
        EXIT WHEN v_pos >= v_len;
        v_op := get_byte(p_delta, v_pos);
        v_pos := v_pos + 1;
        IF v_first THEN
            -- The header: the output size, then a newline.
            IF v_op <> 10 THEN
                RAISE EXCEPTION 'malformed Fossil delta header';
            END IF;
            v_first := false;
        ELSIF v_op = 64 THEN -- '@': copy v_count bytes of the base from offset, then ','
            v_offset := 0;
            LOOP
                EXIT WHEN v_pos >= v_len;
                v_digit := synchub.fossil_digit(get_byte(p_delta, v_pos));
                EXIT WHEN v_digit < 0;
                v_offset := v_offset * 64 + v_digit;
                v_pos := v_pos + 1;
            END LOOP;
            IF v_offset + v_count > length(p_base) THEN
                RAISE EXCEPTION 'Fossil delta copies past the end of its base';
            END IF;
            v_parts := v_parts || substring(p_base FROM (v_offset + 1)::integer FOR v_count::integer);
            v_pos := v_pos + 1;
        ELSIF v_op = 58 THEN -- ':': v_count literal bytes
            v_parts := v_parts || substring(p_delta FROM v_pos + 1 FOR v_count::integer);
            v_pos := v_pos + v_count::integer;
        ELSIF v_op = 59 THEN -- ';': the checksum ends the delta
            EXIT;
        ELSE
            RAISE EXCEPTION 'malformed Fossil delta command %', v_op;
        END IF;
    END LOOP;
    RETURN coalesce((SELECT string_agg(part, ''::bytea ORDER BY n)
                     FROM unnest(v_parts) WITH ORDINALITY AS t(part, n)), ''::bytea);
END $$;

-- The full text of one version row: its content, or its delta chain applied to the
-- nearest full row above it. NULL for a tombstone, a trimmed or a binary version.
CREATE OR REPLACE FUNCTION synchub.version_text(p_project uuid, p_id bigint) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_row record;
    v_id bigint := p_id;
    v_deltas bytea[] := '{}';
    v_text bytea;
BEGIN
    LOOP
        SELECT f.content, f.delta, f.delta_base_id, f.trimmed_at INTO v_row
        FROM synchub.project_files f WHERE f.project_id = p_project AND f.id = v_id;
        IF NOT FOUND OR v_row.trimmed_at IS NOT NULL THEN
            RETURN NULL;
        END IF;
        IF v_row.content IS NOT NULL THEN
            IF cardinality(v_deltas) = 0 THEN
                RETURN v_row.content;
            END IF;
            v_text := convert_to(v_row.content, 'UTF8');
            EXIT;
        END IF;
        IF v_row.delta IS NULL OR cardinality(v_deltas) >= 100000 THEN
            RETURN NULL;
        END IF;
        v_deltas := v_deltas || v_row.delta;
        v_id := v_row.delta_base_id;
    END LOOP;
    FOR i IN REVERSE cardinality(v_deltas)..1 LOOP
        v_text := synchub.fossil_apply(v_text, v_deltas[i]);
    END LOOP;
    RETURN convert_from(v_text, 'UTF8');
END $$;

-- A version number as the API takes it: an integer in 0..2^53-1 (JSON), else 400. Versions
-- above the SQL integer range exist nowhere, so they are simply not found.
CREATE OR REPLACE FUNCTION synchub.version_arg(p_version jsonb) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM synchub.check_counter('version', p_version);
    RETURN least((p_version #>> '{}')::numeric, 2147483647)::integer;
END $$;

-- One version row of a path, or 404 when the path never had that version; a trimmed one
-- answers 410 history_trimmed with the oldest version still kept.
CREATE OR REPLACE FUNCTION synchub.version_row(p_project uuid, p_path text, p_version integer)
RETURNS synchub.project_files LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_row synchub.project_files;
BEGIN
    SELECT * INTO v_row FROM synchub.project_files f
    WHERE f.project_id = p_project AND f.file_path = p_path AND f.version = p_version;
    IF v_row.id IS NULL THEN
        PERFORM synchub.fail('SH404', 'no such version of this file',
            jsonb_build_object('path', p_path, 'version', p_version));
    END IF;
    IF v_row.trimmed_at IS NOT NULL THEN
        PERFORM synchub.fail('SHT10', format('version %s of this file was removed by history retention', p_version),
            jsonb_build_object('path', p_path, 'version', p_version, 'oldest_version',
                (SELECT min(f.version) FROM synchub.project_files f
                 WHERE f.project_id = p_project AND f.file_path = p_path AND f.trimmed_at IS NULL)));
    END IF;
    RETURN v_row;
END $$;

-- The versions of a path, newest first (viewer or better): {versions:[…], next}. `next` is
-- the `before` that continues the listing, null at the end. Trimmed versions are left out.
CREATE OR REPLACE FUNCTION synchub.list_file_versions(p_project uuid, p_actor text, p_path text,
                                                      p_before jsonb, p_limit jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_before integer;
    v_limit integer;
    v_versions jsonb;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    PERFORM synchub.check_path(p_path);
    v_before := CASE WHEN p_before IS NULL THEN NULL ELSE synchub.version_arg(p_before) END;
    v_limit := least(coalesce(synchub.version_arg(p_limit), 100), 1000);
    IF v_limit = 0 THEN
        v_limit := 100;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM synchub.project_files f WHERE f.project_id = p_project AND f.file_path = p_path) THEN
        PERFORM synchub.fail('SH404', 'file not found', jsonb_build_object('path', p_path));
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('version', f.version, 'content_hash', f.content_hash,
               'size', f.size, 'binary', f.blob_sha256 IS NOT NULL,
               'deleted', f.is_deleted, 'actor', f.last_modified_by, 'created_at', synchub.ts(f.created_at))
               ORDER BY f.version DESC), '[]')
    INTO v_versions
    FROM (SELECT * FROM synchub.project_files f
          WHERE f.project_id = p_project AND f.file_path = p_path AND f.trimmed_at IS NULL
            AND (v_before IS NULL OR f.version < v_before)
          ORDER BY f.version DESC LIMIT v_limit + 1) f;
    IF jsonb_array_length(v_versions) > v_limit THEN
        v_versions := v_versions - v_limit;
        RETURN jsonb_build_object('versions', v_versions, 'next', v_versions -> -1 -> 'version');
    END IF;
    RETURN jsonb_build_object('versions', v_versions, 'next', NULL);
END $$;

-- One version of a path for the hub (viewer or better): the first row carries the
-- version's metadata as JSON with its content or delta; when it is a delta, the rows that
-- follow walk its base chain up to a full row. The hub applies the deltas (fast, in Rust).
-- A tombstone version answers 404; a binary one its metadata without text.
CREATE OR REPLACE FUNCTION synchub.file_version_chain(p_project uuid, p_actor text, p_path text,
                                                      p_version jsonb)
RETURNS TABLE (meta jsonb, content text, delta bytea)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_row synchub.project_files;
    v_next record;
    v_id bigint;
    v_hops integer := 0;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    PERFORM synchub.check_path(p_path);
    v_row := synchub.version_row(p_project, p_path, synchub.version_arg(p_version));
    IF v_row.is_deleted THEN
        PERFORM synchub.fail('SH404', format('version %s of this file is its deletion', v_row.version),
            jsonb_build_object('path', p_path, 'version', v_row.version));
    END IF;
    meta := jsonb_build_object('path', v_row.file_path, 'file_type', v_row.file_type,
        'content_hash', v_row.content_hash, 'version', v_row.version, 'size', v_row.size,
        'updated_at', synchub.ts(v_row.created_at),
        'binary', v_row.blob_sha256 IS NOT NULL)
        -- a binary version names its blob (CONTRACT 13); its bytes are in blob storage
        || CASE WHEN v_row.blob_sha256 IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('blob', jsonb_build_object('sha256', v_row.blob_sha256, 'size', v_row.size)) END;
    content := v_row.content;
    delta := v_row.delta;
    RETURN NEXT;
    v_id := v_row.delta_base_id;
    meta := NULL;
    WHILE delta IS NOT NULL AND v_hops < 100000 LOOP
        SELECT f.content, f.delta, f.delta_base_id INTO v_next
        FROM synchub.project_files f WHERE f.project_id = p_project AND f.id = v_id;
        content := v_next.content;
        delta := v_next.delta;
        v_id := v_next.delta_base_id;
        v_hops := v_hops + 1;
        RETURN NEXT;
    END LOOP;
END $$;

-- Makes an earlier version of a path its new current version (editor), as one normal
-- file:update; a deleted file comes back the same way. Same expected_version and op_id
-- rules as upsert_project_file. Returns {path, version, content_hash, seq}.
CREATE OR REPLACE FUNCTION synchub.restore_file_version(p_project uuid, p_path text, p_version jsonb,
                                                        p_expected jsonb, p_actor text, p_op_id uuid)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_args jsonb := jsonb_build_object('path', p_path, 'version', p_version, 'expected_version', p_expected);
    v_prior jsonb := synchub.begin_write(p_project, p_actor, p_op_id, 'restore', v_args);
    v_row synchub.project_files;
    v_text text;
    v_result jsonb;
BEGIN
    IF v_prior IS NULL THEN
        PERFORM synchub.check_path(p_path);
        IF p_expected IS NOT NULL AND jsonb_typeof(p_expected) <> 'null' THEN
            PERFORM synchub.version_arg(p_expected);
        END IF;
        v_row := synchub.version_row(p_project, p_path, synchub.version_arg(p_version));
        IF v_row.is_deleted THEN
            PERFORM synchub.fail('SH400', format('version %s of this file is its deletion: restore a version with content',
                v_row.version), jsonb_build_object('path', p_path, 'version', v_row.version));
        END IF;
        v_text := synchub.version_text(p_project, v_row.id);
        IF v_text IS NULL THEN
            PERFORM synchub.fail('SH400', 'this version has no text to restore',
                jsonb_build_object('path', p_path, 'version', v_row.version));
        END IF;
        v_result := synchub.apply_change(p_project,
            jsonb_build_array(jsonb_build_object('path', p_path, 'content', v_text, 'file_type', v_row.file_type,
                'expected_version', CASE WHEN jsonb_typeof(p_expected) = 'number' THEN
                    to_jsonb(least((p_expected #>> '{}')::numeric, 2147483647)::integer) END)),
            '[]', p_actor, p_op_id, 'file:update', 'restore', v_args);
    ELSE
        v_result := v_prior;
    END IF;
    RETURN jsonb_build_object('path', v_result -> 'files' -> 0 -> 'path', 'version', v_result -> 'files' -> 0 -> 'version',
        'content_hash', v_result -> 'files' -> 0 -> 'content_hash', 'seq', v_result -> 'seq');
END $$;

-- ---------------------------------------------------------------------------------------
-- The background history task's primitives. Each runs inside the task's transaction for
-- one file, after history_lock_file took that file's lock.

-- Files with history work: superseded text rows not compacted yet (when p_compact), and
-- rows due for a retention step (p_keep_all NULL: retention is off).
CREATE OR REPLACE FUNCTION synchub.history_due(p_keep_all interval, p_hourly interval, p_compact boolean,
                                               p_limit integer)
RETURNS TABLE (project_id uuid, file_path text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT d.project_id, d.file_path::text FROM (
        (SELECT f.project_id, f.file_path FROM synchub.project_files f
         WHERE p_compact AND NOT f.is_current_version AND NOT f.compacted AND f.content IS NOT NULL
         LIMIT p_limit)
        UNION ALL
        (SELECT f.project_id, f.file_path FROM synchub.project_files f
         WHERE p_keep_all IS NOT NULL AND NOT f.is_current_version AND f.trimmed_at IS NULL
           AND f.retention_tier < 2
           AND f.created_at < now() - p_keep_all
           AND (f.retention_tier = 0 OR f.created_at < now() - p_hourly)
         LIMIT p_limit)
    ) d
    LIMIT p_limit
$$;

-- Takes the file's history lock for this transaction, or answers false when another hub
-- holds it (that hub is doing this file's work; the caller skips it).
CREATE OR REPLACE FUNCTION synchub.history_lock_file(p_project uuid, p_path text) RETURNS boolean
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- class 0x5349 "SI"
    SELECT pg_try_advisory_xact_lock(21321, hashtext(p_project::text || '/' || p_path))
$$;

-- Every version row of a path, newest first, with what the task needs to decide: whether
-- a GitHub base (same content) or a snapshot (current at its cursor) refers to it.
CREATE OR REPLACE FUNCTION synchub.history_file_rows(p_project uuid, p_path text)
RETURNS TABLE (id bigint, version integer, created_at timestamptz, is_current boolean, is_deleted boolean,
               trimmed boolean, content text, delta bytea, delta_base_id bigint, compacted boolean,
               retention_tier smallint, protected boolean)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT f.id, f.version, f.created_at, f.is_current_version, f.is_deleted, f.trimmed_at IS NOT NULL,
           f.content, f.delta, f.delta_base_id, f.compacted, f.retention_tier,
           EXISTS (SELECT 1 FROM synchub.project_base_files b
                   WHERE b.project_id = f.project_id AND b.file_path = f.file_path
                     AND b.content_hash = f.content_hash)
           OR EXISTS (SELECT 1 FROM synchub.snapshots s
                      WHERE s.project_id = f.project_id AND s.cursor >= f.seq
                        AND (f.next_seq IS NULL OR s.cursor < f.next_seq))
    FROM (SELECT f.*, lead(f.seq) OVER (ORDER BY f.version) AS next_seq
          FROM synchub.project_files f WHERE f.project_id = p_project AND f.file_path = p_path) f
    ORDER BY f.version DESC
$$;

-- Stores a version as a delta against a newer version; answers the stored-bytes change.
CREATE OR REPLACE FUNCTION synchub.history_store_delta(p_project uuid, p_id bigint, p_base bigint, p_delta bytea)
RETURNS bigint LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH old AS (SELECT stored_bytes FROM synchub.project_files WHERE project_id = p_project AND id = p_id),
    upd AS (UPDATE synchub.project_files
            SET content = NULL, delta = p_delta, delta_base_id = p_base, compacted = true,
                stored_bytes = length(p_delta)
            WHERE project_id = p_project AND id = p_id AND trimmed_at IS NULL AND NOT is_current_version
            RETURNING stored_bytes)
    SELECT coalesce((SELECT stored_bytes FROM upd) - (SELECT stored_bytes FROM old), 0)
$$;

-- Stores a version in full (a checkpoint); p_content NULL keeps the content it has.
CREATE OR REPLACE FUNCTION synchub.history_store_full(p_project uuid, p_id bigint, p_content text)
RETURNS bigint LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH old AS (SELECT stored_bytes FROM synchub.project_files WHERE project_id = p_project AND id = p_id),
    upd AS (UPDATE synchub.project_files
            SET content = coalesce(p_content, content), delta = NULL, delta_base_id = NULL, compacted = true,
                stored_bytes = octet_length(coalesce(p_content, content))
            WHERE project_id = p_project AND id = p_id AND trimmed_at IS NULL AND NOT is_current_version
            RETURNING stored_bytes)
    SELECT coalesce((SELECT stored_bytes FROM upd) - (SELECT stored_bytes FROM old), 0)
$$;

-- Removes a version's bytes (retention); the row stays as a trimmed marker. Answers the
-- stored-bytes change (0 when it was trimmed already: nothing is removed twice).
-- The event log loses its tail up to the version's event too: that event could only be
-- replayed without content (retention keeps versions a day, the log a week), so a client
-- resuming from before it is told to resync (410 history_trimmed / resync_required) instead
-- of being handed `content: null`. Later events replay in full.
CREATE OR REPLACE FUNCTION synchub.history_trim(p_project uuid, p_id bigint)
RETURNS bigint LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH old AS (SELECT stored_bytes FROM synchub.project_files
                 WHERE project_id = p_project AND id = p_id AND trimmed_at IS NULL AND NOT is_current_version),
    upd AS (UPDATE synchub.project_files
            SET content = NULL, delta = NULL, delta_base_id = NULL, trimmed_at = now(), compacted = true,
                stored_bytes = 0
            WHERE project_id = p_project AND id = p_id AND trimmed_at IS NULL AND NOT is_current_version
            RETURNING seq),
    gone AS (DELETE FROM synchub.events
             WHERE project_id = p_project AND seq <= (SELECT seq FROM upd)
             RETURNING 1)
    -- (a data-modifying WITH runs to completion whether or not it is read)
    SELECT CASE WHEN EXISTS (SELECT 1 FROM upd) THEN -(SELECT stored_bytes FROM old) ELSE 0 END
$$;

-- Records the retention step the given versions survived.
CREATE OR REPLACE FUNCTION synchub.history_mark_tier(p_project uuid, p_ids bigint[], p_tier smallint)
RETURNS void LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE synchub.project_files SET retention_tier = greatest(retention_tier, p_tier)
    WHERE project_id = p_project AND id = ANY (p_ids)
$$;

-- Applies a stored-bytes change to the project owner's usage (the task calls it once per
-- file, last, so the usage row is locked only for the end of its transaction).
CREATE OR REPLACE FUNCTION synchub.history_account(p_project uuid, p_bytes bigint)
RETURNS void LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE synchub.user_usage u SET stored_bytes = greatest(u.stored_bytes + p_bytes, 0)
    FROM synchub.projects p WHERE p.id = p_project AND u.user_id = p.owner_id
$$;
