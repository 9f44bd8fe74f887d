-- A path is either a file or a folder, never both: "a" and "a/b" cannot both be current
-- files of one project (a tree could not hold them, a snapshot could not be extracted).
-- apply_change (every write goes through it) now refuses such a change with SHA09
-- (409 already_exists); its body is otherwise unchanged from V2.

-- The folders a path lives in: 'a/b/c' -> {'a', 'a/b'}.
CREATE FUNCTION synchub.parent_paths(p_path text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(array_agg(array_to_string(parts[1:i], '/') ORDER BY i), '{}')
    FROM (SELECT string_to_array(p_path, '/') AS parts) s,
         generate_series(1, cardinality(parts) - 1) AS i
$$;
REVOKE EXECUTE ON FUNCTION synchub.parent_paths(text) FROM PUBLIC;

-- Applies upserts [{path, content, file_type?, expected_version?}] and deletes
-- [{path, expected_version?}] as one change with one seq and one event, or raises and
-- changes nothing. Returns {seq, files:[{path, version, content_hash}], deleted:[{path, version}]}.
-- Upserts whose content and type equal the current version change nothing.
CREATE OR REPLACE FUNCTION synchub.apply_change(p_project uuid, p_upserts jsonb, p_deletes jsonb,
                                     p_actor text, p_op_id uuid, p_event text,
                                     p_max_entries integer DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_prior jsonb := synchub.begin_write(p_project, p_actor, p_op_id);
    v_limits synchub.limits;
    v_project synchub.projects;
    v_entry jsonb;
    v_path text;
    v_content text;
    v_paths text[] := '{}';
    v_cur synchub.project_files;
    v_cur_version integer;
    v_expected integer;
    v_conflicts jsonb := '[]';
    v_missing jsonb := '[]';
    v_seq bigint;
    v_new_id bigint;
    v_ids bigint[] := '{}';
    v_files jsonb := '[]';
    v_deleted jsonb := '[]';
    v_hash text;
    v_type text;
    v_delta_bytes bigint := 0;
    v_delta_files integer := 0;
    v_changed boolean := false;
    v_result jsonb;
    v_usage bigint;
    v_clash text;
BEGIN
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    p_upserts := coalesce(p_upserts, '[]');
    p_deletes := coalesce(p_deletes, '[]');
    IF jsonb_typeof(p_upserts) <> 'array' OR jsonb_typeof(p_deletes) <> 'array' THEN
        PERFORM synchub.fail('SH400', 'upserts and deletes must be arrays');
    END IF;
    SELECT * INTO v_limits FROM synchub.limits;
    IF jsonb_array_length(p_upserts) + jsonb_array_length(p_deletes) = 0 THEN
        PERFORM synchub.fail('SH400', 'nothing to change');
    END IF;
    IF jsonb_array_length(p_upserts) + jsonb_array_length(p_deletes)
        > coalesce(p_max_entries, v_limits.max_bulk_entries) THEN
        PERFORM synchub.fail('SH413', 'too many entries in one change',
            jsonb_build_object('limit', coalesce(p_max_entries, v_limits.max_bulk_entries)));
    END IF;

    -- Validate every entry before touching anything.
    FOR v_entry IN SELECT * FROM jsonb_array_elements(p_upserts || p_deletes) LOOP
        IF jsonb_typeof(v_entry) <> 'object' OR jsonb_typeof(v_entry -> 'path') IS DISTINCT FROM 'string' THEN
            PERFORM synchub.fail('SH400', 'every entry needs a string "path"');
        END IF;
        IF v_entry ? 'expected_version' AND jsonb_typeof(v_entry -> 'expected_version') NOT IN ('number', 'null') THEN
            PERFORM synchub.fail('SH400', 'expected_version must be an integer');
        END IF;
        v_path := v_entry ->> 'path';
        PERFORM synchub.check_path(v_path);
        IF v_path = ANY (v_paths) THEN
            PERFORM synchub.fail('SH400', 'a path appears twice in one change',
                jsonb_build_object('path', v_path));
        END IF;
        v_paths := v_paths || v_path;
    END LOOP;
    FOR v_entry IN SELECT * FROM jsonb_array_elements(p_upserts) LOOP
        IF jsonb_typeof(v_entry -> 'content') IS DISTINCT FROM 'string' THEN
            PERFORM synchub.fail('SH400', 'every upsert needs a string "content"',
                jsonb_build_object('path', v_entry ->> 'path'));
        END IF;
        IF octet_length(v_entry ->> 'content') > v_limits.max_file_bytes THEN
            PERFORM synchub.fail('SH413', 'file is larger than the limit',
                jsonb_build_object('path', v_entry ->> 'path', 'limit', v_limits.max_file_bytes));
        END IF;
    END LOOP;

    -- Optimistic concurrency: collect every conflict, then refuse them all at once.
    FOR v_entry IN SELECT * FROM jsonb_array_elements(p_upserts || p_deletes) LOOP
        SELECT * INTO v_cur FROM synchub.project_files
        WHERE project_id = p_project AND file_path = v_entry ->> 'path' AND is_current_version;
        v_cur_version := CASE WHEN v_cur.id IS NULL OR v_cur.is_deleted THEN 0 ELSE v_cur.version END;
        v_expected := (v_entry ->> 'expected_version')::integer;
        IF v_expected IS NOT NULL AND v_expected <> v_cur_version THEN
            v_conflicts := v_conflicts || jsonb_build_object('path', v_entry ->> 'path',
                'expected_version', v_expected, 'current_version', v_cur_version,
                'current_hash', CASE WHEN v_cur_version = 0 THEN NULL ELSE v_cur.content_hash END);
        ELSIF NOT (v_entry ? 'content') AND v_cur_version = 0 THEN
            v_missing := v_missing || jsonb_build_object('path', v_entry ->> 'path');
        END IF;
    END LOOP;
    IF jsonb_array_length(v_conflicts) > 0 THEN
        PERFORM synchub.fail('SH409', 'version conflict',
            (v_conflicts -> 0) || jsonb_build_object('conflicts', v_conflicts));
    END IF;
    IF jsonb_array_length(v_missing) > 0 THEN
        PERFORM synchub.fail('SH404', 'file not found',
            (v_missing -> 0) || jsonb_build_object('missing', v_missing));
    END IF;

    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project;
    v_seq := v_project.last_seq + 1;

    FOR v_entry IN SELECT * FROM jsonb_array_elements(p_upserts) LOOP
        v_path := v_entry ->> 'path';
        v_content := v_entry ->> 'content';
        v_hash := synchub.content_hash(v_content);
        v_type := coalesce(nullif(v_entry ->> 'file_type', ''), synchub.infer_file_type(v_path));
        SELECT * INTO v_cur FROM synchub.project_files
        WHERE project_id = p_project AND file_path = v_path AND is_current_version;
        IF v_cur.id IS NOT NULL AND NOT v_cur.is_deleted
            AND v_cur.content_hash = v_hash AND v_cur.file_type = v_type THEN
            v_files := v_files || jsonb_build_object('path', v_path, 'version', v_cur.version,
                                                     'content_hash', v_hash);
            CONTINUE;
        END IF;
        IF v_cur.id IS NOT NULL THEN
            UPDATE synchub.project_files SET is_current_version = false WHERE id = v_cur.id;
        END IF;
        INSERT INTO synchub.project_files (project_id, file_path, file_type, content, content_hash,
            size, version, parent_version_id, is_current_version, seq, created_by, last_modified_by)
        VALUES (p_project, v_path, v_type, v_content, v_hash, octet_length(v_content),
            coalesce(v_cur.version, 0) + 1, v_cur.id, true, v_seq,
            CASE WHEN v_cur.id IS NULL OR v_cur.is_deleted THEN p_actor ELSE v_cur.created_by END, p_actor)
        RETURNING id INTO v_new_id;
        v_ids := v_ids || v_new_id;
        v_changed := true;
        v_delta_bytes := v_delta_bytes + octet_length(v_content)
            - CASE WHEN v_cur.is_deleted IS DISTINCT FROM false THEN 0 ELSE v_cur.size END;
        IF v_cur.id IS NULL OR v_cur.is_deleted THEN
            v_delta_files := v_delta_files + 1;
        END IF;
        v_files := v_files || jsonb_build_object('path', v_path, 'version', coalesce(v_cur.version, 0) + 1,
                                                 'content_hash', v_hash);
    END LOOP;

    FOR v_entry IN SELECT * FROM jsonb_array_elements(p_deletes) LOOP
        v_path := v_entry ->> 'path';
        SELECT * INTO v_cur FROM synchub.project_files
        WHERE project_id = p_project AND file_path = v_path AND is_current_version;
        UPDATE synchub.project_files SET is_current_version = false WHERE id = v_cur.id;
        INSERT INTO synchub.project_files (project_id, file_path, file_type, content, content_hash,
            size, version, parent_version_id, is_current_version, is_deleted, seq, created_by, last_modified_by)
        VALUES (p_project, v_path, v_cur.file_type, NULL, NULL, 0, v_cur.version + 1, v_cur.id, true, true,
            v_seq, v_cur.created_by, p_actor)
        RETURNING id INTO v_new_id;
        v_ids := v_ids || v_new_id;
        v_changed := true;
        v_delta_bytes := v_delta_bytes - v_cur.size;
        v_delta_files := v_delta_files - 1;
        v_deleted := v_deleted || jsonb_build_object('path', v_path, 'version', v_cur.version + 1);
    END LOOP;

    -- A path cannot be a file and a folder at once (no file system could hold both, so
    -- no snapshot could be extracted): an upserted file may not sit below another current
    -- file, nor have current files below it. Checked after this change's deletes (moving
    -- "a" to "a/b" is fine) and under the project row lock taken by begin_write, so two
    -- writers cannot race past it. One index probe per upsert (file_path is COLLATE "C":
    -- the files below "p" are exactly those between "p/" and "p0").
    FOR v_path IN SELECT e ->> 'path' FROM jsonb_array_elements(p_upserts) e LOOP
        SELECT f.file_path INTO v_clash FROM synchub.project_files f
        WHERE f.project_id = p_project AND f.is_current_version AND NOT f.is_deleted
          AND (f.file_path = ANY (synchub.parent_paths(v_path))
               OR (f.file_path > v_path || '/' AND f.file_path < v_path || '0'))
        LIMIT 1;
        IF v_clash IS NOT NULL THEN
            PERFORM synchub.fail('SHA09',
                CASE WHEN v_clash < v_path THEN 'a file exists where this path needs a folder'
                     ELSE 'files exist below this path: it is a folder' END,
                jsonb_build_object('path', v_path, 'conflicting_path', v_clash));
        END IF;
    END LOOP;

    IF NOT v_changed THEN
        -- Nothing changed: no seq, no event; report the seq at which this state became true.
        v_result := jsonb_build_object('seq', (SELECT max(seq) FROM synchub.project_files
                                               WHERE project_id = p_project AND is_current_version
                                                 AND file_path = ANY (v_paths)),
                                       'files', v_files, 'deleted', v_deleted);
    ELSE
        IF v_project.file_count + v_delta_files > v_limits.max_files_per_project THEN
            PERFORM synchub.fail('SHQ03', 'file limit of the project reached',
                jsonb_build_object('limit', v_limits.max_files_per_project));
        END IF;
        IF v_delta_bytes <> 0 THEN
            INSERT INTO synchub.user_usage (user_id) VALUES (v_project.owner_id) ON CONFLICT DO NOTHING;
            UPDATE synchub.user_usage SET stored_bytes = stored_bytes + v_delta_bytes
            WHERE user_id = v_project.owner_id RETURNING stored_bytes INTO v_usage;
            IF v_delta_bytes > 0 AND v_usage > v_limits.max_bytes_per_user THEN
                PERFORM synchub.fail('SHQ03', 'storage limit of the project owner reached',
                    jsonb_build_object('limit', v_limits.max_bytes_per_user));
            END IF;
        END IF;
        INSERT INTO synchub.events (project_id, seq, event_type, file_ids, actor, op_id)
        VALUES (p_project, v_seq, p_event, v_ids, p_actor, p_op_id);
        UPDATE synchub.projects
        SET last_seq = v_seq, file_count = file_count + v_delta_files,
            bytes = bytes + v_delta_bytes, updated_at = now()
        WHERE id = p_project;
        v_result := jsonb_build_object('seq', v_seq, 'files', v_files, 'deleted', v_deleted);
    END IF;

    IF p_op_id IS NOT NULL THEN
        INSERT INTO synchub.applied_ops (project_id, op_id, result) VALUES (p_project, p_op_id, v_result);
    END IF;
    RETURN v_result;
END $$;
