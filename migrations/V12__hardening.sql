-- Hardening (issue #11):
-- * An op_id names one write. Reused for another kind of write or other arguments (path,
--   content, file_type, expected_version, project, actor) it is refused with SHO09
--   (409 op_id_reused) and nothing changes; the same write again still returns the first
--   result. applied_ops records what each op_id was used for, and the lookup is by op_id
--   alone, so one op_id cannot be spent in two projects either.
-- * file_type is at most 64 bytes of [A-Za-z0-9._+-] (CONTRACT section 7); stored values
--   outside that (which bypassed the size limit and bloated snapshot manifests) are
--   replaced by the type inferred from the path.
-- * expected_version and since are integers from 0 to 2^53-1, else SH400 (no overflow, no
--   cast error).
-- * PUT base refuses a tree that names one path twice (SH400, not a unique violation).
-- * Deleting a project ends its sessions for good: restoring the project does not bring
--   them back.
--
-- New SQLSTATE: SHO09 op_id_reused.

ALTER TABLE synchub.applied_ops ADD COLUMN op_kind text, ADD COLUMN args_hash text;
CREATE INDEX applied_ops_op_id ON synchub.applied_ops (op_id);

-- Raises SH400 unless p_value (a JSON number, or null/absent) is an integer in 0..2^53-1,
-- so JavaScript clients hold it exactly and no bigint arithmetic can overflow.
CREATE FUNCTION synchub.check_counter(p_name text, p_value jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(p_value) <> 'number' OR p_value::text::numeric <> trunc(p_value::text::numeric)
        OR p_value::text::numeric < 0 OR p_value::text::numeric > 9007199254740991 THEN
        PERFORM synchub.fail('SH400', format('%s must be an integer from 0 to 9007199254740991', p_name));
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION synchub.check_counter(text, jsonb) FROM PUBLIC;

-- Raises SH400 unless p_file_type (JSON; null, absent or "" mean "infer from the path") is
-- a string of at most 64 bytes of [A-Za-z0-9._+-].
CREATE FUNCTION synchub.check_file_type(p_file_type jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_file_type IS NULL OR jsonb_typeof(p_file_type) = 'null' OR p_file_type = '""' THEN
        RETURN;
    END IF;
    -- The length test first: the pattern never runs over a huge string.
    IF jsonb_typeof(p_file_type) <> 'string' OR octet_length(p_file_type #>> '{}') > 64
        OR (p_file_type #>> '{}') !~ '^[A-Za-z0-9._+-]+$' THEN
        PERFORM synchub.fail('SH400', 'file_type must be at most 64 bytes of A-Z, a-z, 0-9, ".", "_", "+" and "-"');
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION synchub.check_file_type(jsonb) FROM PUBLIC;

UPDATE synchub.project_files SET file_type = synchub.infer_file_type(file_path)
WHERE octet_length(file_type) > 64 OR file_type !~ '^[A-Za-z0-9._+-]+$';

-- What an op_id was used for, as one hash: the actor and the write's arguments (the
-- project and the kind are compared as columns).
CREATE FUNCTION synchub.op_args_hash(p_actor text, p_op_args jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(jsonb_build_object('actor', p_actor, 'args', p_op_args)::text, 'UTF8')), 'hex')
$$;
REVOKE EXECUTE ON FUNCTION synchub.op_args_hash(text, jsonb) FROM PUBLIC;

-- Locks the project row (which serializes seq allocation), checks the writer's role and
-- returns the stored result of an earlier write with the same op_id, if any; an op_id
-- already used for another write (kind, arguments, project or actor) is refused with SHO09.
DROP FUNCTION synchub.begin_write(uuid, text, uuid);
CREATE FUNCTION synchub.begin_write(p_project uuid, p_actor text, p_op_id uuid, p_op_kind text, p_op_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_op synchub.applied_ops;
BEGIN
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'editor');
    IF p_op_id IS NULL THEN
        RETURN NULL;
    END IF;
    -- Writes to different projects hold different row locks: this lock (class 0x5348 "SH",
    -- keyed by the op_id) keeps two of them from both spending one op_id.
    PERFORM pg_advisory_xact_lock(21320, hashtext(p_op_id::text));
    SELECT * INTO v_op FROM synchub.applied_ops WHERE op_id = p_op_id ORDER BY created_at LIMIT 1;
    IF v_op.op_id IS NULL THEN
        RETURN NULL;
    END IF;
    -- Rows written before V12 carry no kind: only their project can be compared.
    IF v_op.project_id <> p_project
        OR (v_op.op_kind IS NOT NULL AND (v_op.op_kind <> p_op_kind
                                          OR v_op.args_hash <> synchub.op_args_hash(p_actor, p_op_args))) THEN
        PERFORM synchub.fail('SHO09',
            'op_id was already used for a different operation or different arguments; nothing was changed',
            jsonb_build_object('op_id', p_op_id));
    END IF;
    RETURN v_op.result;
END $$;
REVOKE EXECUTE ON FUNCTION synchub.begin_write(uuid, text, uuid, text, jsonb) FROM PUBLIC;

-- The core write of V8, now told what the op is (kind and arguments, for op_id reuse),
-- checking file_type and reading expected_version as an integer of 0..2^53-1.
DROP FUNCTION synchub.apply_change(uuid, jsonb, jsonb, text, uuid, text, integer);
CREATE FUNCTION synchub.apply_change(p_project uuid, p_upserts jsonb, p_deletes jsonb,
                                     p_actor text, p_op_id uuid, p_event text,
                                     p_op_kind text, p_op_args jsonb,
                                     p_max_entries integer DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_prior jsonb := synchub.begin_write(p_project, p_actor, p_op_id, p_op_kind, p_op_args);
    v_limits synchub.limits;
    v_project synchub.projects;
    v_entry jsonb;
    v_path text;
    v_content text;
    v_paths text[] := '{}';
    v_cur synchub.project_files;
    v_cur_version integer;
    v_expected bigint;
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
        PERFORM synchub.check_counter('expected_version', v_entry -> 'expected_version');
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
        PERFORM synchub.check_file_type(v_entry -> 'file_type');
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
        v_expected := (v_entry ->> 'expected_version')::bigint;
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
        INSERT INTO synchub.applied_ops (project_id, op_id, result, op_kind, args_hash)
        VALUES (p_project, p_op_id, v_result, p_op_kind, synchub.op_args_hash(p_actor, p_op_args));
    END IF;
    RETURN v_result;
END $$;
REVOKE EXECUTE ON FUNCTION synchub.apply_change(uuid, jsonb, jsonb, text, uuid, text, text, jsonb, integer) FROM PUBLIC;

-- The named write functions: same signatures and results as V2; each tells apply_change
-- which write it is, so a reused op_id can be recognised.
CREATE OR REPLACE FUNCTION synchub.upsert_project_file(project_uuid uuid, p_file_path text, p_content text,
    p_file_type text, expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, content_hash text, seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_entry jsonb := jsonb_build_object('path', p_file_path, 'content', p_content,
                                        'file_type', p_file_type, 'expected_version', expected_version);
    v_result jsonb := synchub.apply_change(project_uuid, jsonb_build_array(v_entry), '[]', p_actor, p_op_id,
                                           'file:update', 'upsert', v_entry);
BEGIN
    RETURN QUERY SELECT v_result -> 'files' -> 0 ->> 'path', (v_result -> 'files' -> 0 ->> 'version')::integer,
                        v_result -> 'files' -> 0 ->> 'content_hash', (v_result ->> 'seq')::bigint;
END $$;

CREATE OR REPLACE FUNCTION synchub.delete_project_file(project_uuid uuid, p_file_path text,
    expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_entry jsonb := jsonb_build_object('path', p_file_path, 'expected_version', expected_version);
    v_result jsonb := synchub.apply_change(project_uuid, '[]', jsonb_build_array(v_entry), p_actor, p_op_id,
                                           'file:delete', 'delete', v_entry);
BEGIN
    RETURN QUERY SELECT v_result -> 'deleted' -> 0 ->> 'path', (v_result -> 'deleted' -> 0 ->> 'version')::integer,
                        (v_result ->> 'seq')::bigint;
END $$;

CREATE OR REPLACE FUNCTION synchub.bulk_upsert_project_files(project_uuid uuid, files jsonb, deletes jsonb,
    p_actor text, p_op_id uuid)
RETURNS TABLE (seq bigint, result jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := synchub.apply_change(project_uuid, files, deletes, p_actor, p_op_id, 'bulk:apply', 'bulk',
                                           jsonb_build_object('files', files, 'deletes', deletes));
BEGIN
    RETURN QUERY SELECT (v_result ->> 'seq')::bigint, v_result;
END $$;

CREATE OR REPLACE FUNCTION synchub.move_project_file(project_uuid uuid, p_from text, p_to text,
    expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (seq bigint, version integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb := jsonb_build_object('from', p_from, 'to', p_to, 'expected_version', expected_version);
    v_prior jsonb := synchub.begin_write(project_uuid, p_actor, p_op_id, 'move', v_args);
    v_src synchub.project_files;
    v_result jsonb;
BEGIN
    IF v_prior IS NULL THEN
        PERFORM synchub.check_path(p_from);
        PERFORM synchub.check_path(p_to);
        IF p_from = p_to THEN
            PERFORM synchub.fail('SH400', '"from" and "to" are the same path');
        END IF;
        SELECT * INTO v_src FROM synchub.project_files
        WHERE project_id = project_uuid AND file_path = p_from AND is_current_version AND NOT is_deleted;
        IF v_src.id IS NULL THEN
            PERFORM synchub.fail('SH404', 'file not found', jsonb_build_object('path', p_from));
        END IF;
        IF EXISTS (SELECT 1 FROM synchub.project_files_current
                   WHERE project_id = project_uuid AND file_path = p_to) THEN
            PERFORM synchub.fail('SHA09', 'a file already exists at the target path',
                jsonb_build_object('path', p_to));
        END IF;
        v_result := synchub.apply_change(project_uuid,
            jsonb_build_array(jsonb_build_object('path', p_to, 'content', v_src.content,
                                                 'file_type', v_src.file_type, 'expected_version', 0)),
            jsonb_build_array(jsonb_build_object('path', p_from, 'expected_version', expected_version)),
            p_actor, p_op_id, 'bulk:apply', 'move', v_args);
    ELSE
        v_result := v_prior;
    END IF;
    RETURN QUERY SELECT (v_result ->> 'seq')::bigint, (v_result -> 'files' -> 0 ->> 'version')::integer;
END $$;

-- set_project_base of V2, refusing a tree that names a path twice (apply or not) before
-- anything is written; the base table's key would otherwise fail with a raw unique violation.
CREATE OR REPLACE FUNCTION synchub.set_project_base(p_project uuid, p_actor text, p_commit text, p_files jsonb,
                                                    p_apply boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_project synchub.projects;
    v_upserts jsonb;
    v_deletes jsonb;
    v_result jsonb;
    v_twice text;
BEGIN
    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'owner');
    IF v_project.source_kind <> 'github' THEN
        PERFORM synchub.fail('SH400', 'the project is not linked to a GitHub repository');
    END IF;
    IF p_commit IS NULL OR p_commit !~ '^[0-9a-fA-F]{7,64}$' THEN
        PERFORM synchub.fail('SH400', 'commit must be a hex commit sha');
    END IF;
    IF jsonb_typeof(p_files) IS DISTINCT FROM 'array' THEN
        PERFORM synchub.fail('SH400', 'files must be an array');
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_files) n
               WHERE jsonb_typeof(n.value) <> 'object'
                  OR jsonb_typeof(n.value -> 'path') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(n.value -> 'content') IS DISTINCT FROM 'string') THEN
        PERFORM synchub.fail('SH400', 'every file needs a string "path" and a string "content"');
    END IF;
    SELECT n.value ->> 'path' INTO v_twice FROM jsonb_array_elements(p_files) n
    GROUP BY n.value ->> 'path' HAVING count(*) > 1 LIMIT 1;
    IF v_twice IS NOT NULL THEN
        PERFORM synchub.fail('SH400', 'a path appears twice in the tree', jsonb_build_object('path', v_twice));
    END IF;
    IF p_apply THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', n.value ->> 'path', 'content', n.value -> 'content')), '[]')
        INTO v_upserts
        FROM jsonb_array_elements(p_files) n
        LEFT JOIN synchub.project_files_current c ON c.project_id = p_project AND c.file_path = n.value ->> 'path'
        WHERE c.content_hash IS DISTINCT FROM synchub.content_hash(n.value ->> 'content');
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', c.file_path)), '[]') INTO v_deletes
        FROM synchub.project_files_current c
        WHERE c.project_id = p_project
          AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_files) n WHERE n.value ->> 'path' = c.file_path);
        IF jsonb_array_length(v_upserts) + jsonb_array_length(v_deletes) > 0 THEN
            v_result := synchub.apply_change(p_project, v_upserts, v_deletes, p_actor, NULL, 'bulk:apply', 'base',
                NULL, (SELECT max_files_per_project * 2 FROM synchub.limits));
        END IF;
    ELSE
        -- Validate the tree even when it is only recorded.
        PERFORM synchub.check_path(n.value ->> 'path') FROM jsonb_array_elements(p_files) n;
    END IF;
    DELETE FROM synchub.project_base_files WHERE project_id = p_project;
    INSERT INTO synchub.project_base_files (project_id, file_path, content_hash)
    SELECT p_project, n.value ->> 'path', synchub.content_hash(n.value ->> 'content')
    FROM jsonb_array_elements(p_files) n;
    UPDATE synchub.projects SET base_commit = p_commit, revision = revision + 1, updated_at = now()
    WHERE id = p_project;
    RETURN jsonb_build_object('base_commit', p_commit, 'file_count', jsonb_array_length(p_files),
                              'applied', v_result IS NOT NULL, 'seq', v_result -> 'seq');
END $$;

-- events_for of V4, with since and limit in 0..2^53-1 (since = 2^63-1 overflowed) and the
-- retention test written so it cannot overflow.
CREATE OR REPLACE FUNCTION synchub.events_for(p_project uuid, p_actor text, p_since bigint, p_limit integer)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_oldest bigint;
    v_events jsonb;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer', true);
    IF p_since IS NULL THEN
        PERFORM synchub.fail('SH400', 'since is required');
    END IF;
    PERFORM synchub.check_counter('since', to_jsonb(p_since));
    PERFORM synchub.check_counter('limit', to_jsonb(p_limit));
    v_oldest := synchub.oldest_seq(p_project);
    IF p_since < v_oldest - 1 THEN
        PERFORM synchub.fail('SH410', format('history before seq %s was trimmed', v_oldest),
            jsonb_build_object('oldest_seq', v_oldest));
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('type', 'event', 'channel', 'realtime:project:' || p_project,
                                                 'seq', r.seq, 'event', r.event, 'payload', r.payload)
                              ORDER BY r.seq), '[]')
    INTO v_events
    FROM synchub.read_events(p_project, p_since, p_limit) r;
    RETURN jsonb_build_object('events', v_events,
        'next', coalesce((v_events -> -1 ->> 'seq')::bigint, p_since),
        'oldest_seq', v_oldest);
END $$;

-- delete_project of V2, also ending the project's sessions for good (revoked in the same
-- transaction), so restoring the project does not revive its container tokens.
CREATE OR REPLACE FUNCTION synchub.delete_project(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_project synchub.projects;
BEGIN
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'owner');
    UPDATE synchub.projects
    SET deleted_at = now(), revision = revision + 1, updated_at = now(), last_seq = last_seq + 1
    WHERE id = p_project RETURNING * INTO v_project;
    INSERT INTO synchub.events (project_id, seq, event_type, actor)
    VALUES (p_project, v_project.last_seq, 'project:deleted', p_actor);
    UPDATE synchub.sessions SET revoked_at = now() WHERE project_id = p_project AND revoked_at IS NULL;
    RETURN synchub.project_json(v_project, 'owner');
END $$;

-- Sessions of projects that are tombstoned now end for good as well.
UPDATE synchub.sessions s SET revoked_at = now()
FROM synchub.projects p WHERE p.id = s.project_id AND p.deleted_at IS NOT NULL AND s.revoked_at IS NULL;

-- CREATE OR REPLACE resets SECURITY DEFINER and search_path: expose them again.
SELECT synchub.expose('synchub.upsert_project_file(uuid, text, text, text, integer, text, uuid)');
SELECT synchub.expose('synchub.delete_project_file(uuid, text, integer, text, uuid)');
SELECT synchub.expose('synchub.bulk_upsert_project_files(uuid, jsonb, jsonb, text, uuid)');
SELECT synchub.expose('synchub.move_project_file(uuid, text, text, integer, text, uuid)');
SELECT synchub.expose('synchub.set_project_base(uuid, text, text, jsonb, boolean)');
SELECT synchub.expose('synchub.events_for(uuid, text, bigint, integer)');
SELECT synchub.expose('synchub.delete_project(uuid, text)');
