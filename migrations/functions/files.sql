-- Files: the checks on what a write may contain, the one core write (apply_change) with
-- the named write functions as thin wrappers over it, and the reads.

-- The same path rules as the hub's normalizer (CONTRACT section 7), for direct callers.
CREATE OR REPLACE FUNCTION synchub.check_path(p_path text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_segments text[];
BEGIN
    IF p_path IS NULL OR p_path = '' THEN
        PERFORM synchub.fail('SHP00', 'path is empty', jsonb_build_object('path', p_path));
    END IF;
    v_segments := string_to_array(p_path, '/');
    IF octet_length(p_path) > 1024
        OR left(p_path, 1) = '/'
        OR strpos(p_path, E'\\') > 0
        OR p_path ~ E'[\\x01-\\x1f\\x7f-\\x9f]'
        OR cardinality(v_segments) > 64
        OR '' = ANY (v_segments) OR '.' = ANY (v_segments) OR '..' = ANY (v_segments)
        OR v_segments[1] IN ('.synchub', '.git')
    THEN
        PERFORM synchub.fail('SHP00', 'invalid path', jsonb_build_object('path', p_path));
    END IF;
END $$;

-- The folders a path lives in: 'a/b/c' -> {'a', 'a/b'}.
CREATE OR REPLACE FUNCTION synchub.parent_paths(p_path text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(array_agg(array_to_string(parts[1:i], '/') ORDER BY i), '{}')
    FROM (SELECT string_to_array(p_path, '/') AS parts) s,
         generate_series(1, cardinality(parts) - 1) AS i
$$;

-- file_type from the extension when the client gives none.
CREATE OR REPLACE FUNCTION synchub.infer_file_type(p_path text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(substring(p_path FROM '\.([^./]+)$'))
        WHEN 'ts' THEN 'typescript' WHEN 'tsx' THEN 'typescript'
        WHEN 'mts' THEN 'typescript' WHEN 'cts' THEN 'typescript'
        WHEN 'js' THEN 'javascript' WHEN 'jsx' THEN 'javascript'
        WHEN 'mjs' THEN 'javascript' WHEN 'cjs' THEN 'javascript'
        WHEN 'json' THEN 'json' WHEN 'md' THEN 'markdown' WHEN 'mdx' THEN 'markdown'
        WHEN 'sql' THEN 'sql' WHEN 'css' THEN 'css' WHEN 'scss' THEN 'scss'
        WHEN 'html' THEN 'html' WHEN 'htm' THEN 'html' WHEN 'vue' THEN 'vue'
        WHEN 'svelte' THEN 'svelte' WHEN 'py' THEN 'python' WHEN 'rs' THEN 'rust'
        WHEN 'go' THEN 'go' WHEN 'yaml' THEN 'yaml' WHEN 'yml' THEN 'yaml'
        WHEN 'toml' THEN 'toml' WHEN 'sh' THEN 'shell' WHEN 'svg' THEN 'svg'
        WHEN 'xml' THEN 'xml'
        ELSE 'text'
    END
$$;

-- Raises SH400 unless p_file_type (JSON; null, absent or "" mean "infer from the path") is
-- a string of at most 64 bytes of [A-Za-z0-9._+-].
CREATE OR REPLACE FUNCTION synchub.check_file_type(p_file_type jsonb) RETURNS void
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

-- What an op_id was used for, as one hash: the actor and the write's arguments (the
-- project and the kind are compared as columns).
CREATE OR REPLACE FUNCTION synchub.op_args_hash(p_actor text, p_op_args jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(jsonb_build_object('actor', p_actor, 'args', p_op_args)::text, 'UTF8')),
                  'hex')
$$;

-- Locks the project row (which serializes seq allocation), checks the writer's role and
-- returns the stored result of an earlier write with the same op_id, if any; an op_id
-- already used for another write (kind, arguments, project or actor) is refused with SHO09.
CREATE OR REPLACE FUNCTION synchub.begin_write(p_project uuid, p_actor text, p_op_id uuid,
                                               p_op_kind text, p_op_args jsonb)
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
    IF v_op.project_id <> p_project OR v_op.op_kind <> p_op_kind
        OR v_op.args_hash <> synchub.op_args_hash(p_actor, p_op_args) THEN
        PERFORM synchub.fail('SHO09',
            'op_id was already used for a different operation or different arguments; nothing was changed',
            jsonb_build_object('op_id', p_op_id));
    END IF;
    RETURN v_op.result;
END $$;

-- Applies upserts [{path, content, file_type?, expected_version?}] and deletes
-- [{path, expected_version?}] as one change with one seq and one event, or raises and
-- changes nothing. Returns {seq, files:[{path, version, content_hash}], deleted:[{path, version}]}.
-- Upserts whose content and type equal the current version change nothing. p_op_kind and
-- p_op_args say which write this is, so a reused op_id can be recognised.
-- Linear in the number of entries (archive imports bring 10,000 of 10 KB and more): the
-- loops take entry i of one in-memory array (v_all -> i: no set-returning function, which
-- would copy every entry into a tuplestore, on disk past work_mem, on each pass); the
-- answer's lists are jsonb[] (array_append on a PL/pgSQL variable extends it in place,
-- jsonb || copies the whole value each time); repeated paths are found by one sort; the
-- file/folder check is two index probes per upsert.
CREATE OR REPLACE FUNCTION synchub.apply_change(p_project uuid, p_upserts jsonb, p_deletes jsonb,
                                                p_actor text, p_op_id uuid, p_event text,
                                                p_op_kind text, p_op_args jsonb,
                                                p_max_entries integer DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_prior jsonb := synchub.begin_write(p_project, p_actor, p_op_id, p_op_kind, p_op_args);
    v_limits synchub.limits;
    v_project synchub.projects;
    v_entry jsonb;
    -- The upserts, then the deletes: entries 0 .. v_upsert_count - 1 are upserts.
    v_all jsonb;
    v_upsert_count integer;
    -- The ordinal (0-based) of the first entry whose path an earlier entry has (NULL: none).
    v_first_repeat bigint;
    v_blob_upserts jsonb[] := '{}';
    v_path text;
    v_content text;
    v_blob text;  -- binary files (blobs.sql): the blob's sha256, NULL for text
    v_size bigint;
    v_paths text[] := '{}';
    v_cur synchub.project_files;
    v_cur_version integer;
    v_expected bigint;
    v_conflicts jsonb[] := '{}';
    v_missing jsonb[] := '{}';
    v_seq bigint;
    v_new_id bigint;
    v_ids bigint[] := '{}';
    v_files jsonb[] := '{}';
    v_deleted jsonb[] := '{}';
    v_hash text;
    v_type text;
    v_delta_bytes bigint := 0;
    -- Bytes the new version rows store (history counts in the quota, CONTRACT 14);
    -- v_delta_bytes is the change in current content (projects.bytes).
    v_stored_bytes bigint := 0;
    v_delta_files integer := 0;
    v_changed boolean := false;
    v_result jsonb;
    v_usage bigint;
    v_clash text;
    v_parent text;
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

    -- One flat copy in memory (an argument may arrive compressed: each -> would then
    -- decompress all of it).
    v_all := p_upserts || p_deletes;
    v_upsert_count := jsonb_array_length(p_upserts);

    -- Validate every entry before touching anything, in order: the first bad entry is the
    -- one reported.
    FOR v_i IN 0 .. jsonb_array_length(v_all) - 1 LOOP
        v_paths := v_paths || (v_all -> v_i ->> 'path');
    END LOOP;
    SELECT min(r.n) - 1 INTO v_first_repeat
    FROM (SELECT a.n, row_number() OVER (PARTITION BY a.p ORDER BY a.n) AS k
          FROM unnest(v_paths) WITH ORDINALITY a(p, n)) r
    WHERE r.k > 1;
    v_paths := '{}';
    FOR v_i IN 0 .. jsonb_array_length(v_all) - 1 LOOP
        v_entry := v_all -> v_i;
        IF jsonb_typeof(v_entry) <> 'object' OR jsonb_typeof(v_entry -> 'path') IS DISTINCT FROM 'string' THEN
            PERFORM synchub.fail('SH400', 'every entry needs a string "path"');
        END IF;
        PERFORM synchub.check_counter('expected_version', v_entry -> 'expected_version');
        v_path := v_entry ->> 'path';
        PERFORM synchub.check_path(v_path);
        IF v_i = v_first_repeat THEN
            PERFORM synchub.fail('SH400', 'a path appears twice in one change',
                jsonb_build_object('path', v_path));
        END IF;
        v_paths := v_paths || v_path;
    END LOOP;
    FOR v_i IN 0 .. v_upsert_count - 1 LOOP
        v_entry := v_all -> v_i;
        -- Binary files: {blob: {sha256, size}} instead of content (blobs.sql).
        IF v_entry ? 'blob' THEN
            IF v_entry ? 'content' THEN
                PERFORM synchub.fail('SH400', 'an upsert has "content" or "blob", not both',
                    jsonb_build_object('path', v_entry ->> 'path'));
            END IF;
            PERFORM synchub.check_blob_ref(v_entry -> 'blob', v_entry ->> 'path');
            v_blob_upserts := v_blob_upserts || v_entry;
        ELSIF jsonb_typeof(v_entry -> 'content') IS DISTINCT FROM 'string' THEN
            PERFORM synchub.fail('SH400', 'every upsert needs a string "content" (or a "blob")',
                jsonb_build_object('path', v_entry ->> 'path'));
        END IF;
        PERFORM synchub.check_file_type(v_entry -> 'file_type');
        IF octet_length(v_entry ->> 'content') > v_limits.max_file_bytes THEN
            PERFORM synchub.fail('SH413', 'file is larger than the limit',
                jsonb_build_object('path', v_entry ->> 'path', 'limit', v_limits.max_file_bytes));
        END IF;
    END LOOP;

    -- Referenced blobs must be held; their rows stay locked until commit (blob GC).
    PERFORM synchub.lock_blobs(to_jsonb(v_blob_upserts));

    -- Optimistic concurrency: collect every conflict, then refuse them all at once.
    FOR v_i IN 0 .. jsonb_array_length(v_all) - 1 LOOP
        v_entry := v_all -> v_i;
        SELECT * INTO v_cur FROM synchub.project_files
        WHERE project_id = p_project AND file_path = v_entry ->> 'path' AND is_current_version;
        v_cur_version := CASE WHEN v_cur.id IS NULL OR v_cur.is_deleted THEN 0 ELSE v_cur.version END;
        v_expected := (v_entry ->> 'expected_version')::bigint;
        IF v_expected IS NOT NULL AND v_expected <> v_cur_version THEN
            v_conflicts := v_conflicts || jsonb_build_object('path', v_entry ->> 'path',
                'expected_version', v_expected, 'current_version', v_cur_version,
                'current_hash', CASE WHEN v_cur_version = 0 THEN NULL ELSE v_cur.content_hash END);
        ELSIF NOT (v_entry ? 'content' OR v_entry ? 'blob') AND v_cur_version = 0 THEN
            v_missing := v_missing || jsonb_build_object('path', v_entry ->> 'path');
        END IF;
    END LOOP;
    IF cardinality(v_conflicts) > 0 THEN
        PERFORM synchub.fail('SH409', 'version conflict',
            v_conflicts[1] || jsonb_build_object('conflicts', to_jsonb(v_conflicts)));
    END IF;
    IF cardinality(v_missing) > 0 THEN
        PERFORM synchub.fail('SH404', 'file not found',
            v_missing[1] || jsonb_build_object('missing', to_jsonb(v_missing)));
    END IF;

    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project;
    v_seq := v_project.last_seq + 1;

    FOR v_i IN 0 .. v_upsert_count - 1 LOOP
        v_entry := v_all -> v_i;
        v_path := v_entry ->> 'path';
        v_content := v_entry ->> 'content';
        -- A binary version's content_hash is its blob's sha256 (the hash of its bytes).
        v_blob := v_entry #>> '{blob,sha256}';
        v_hash := coalesce(v_blob, synchub.content_hash(v_content));
        v_size := coalesce((v_entry #>> '{blob,size}')::bigint, octet_length(v_content));
        v_type := coalesce(nullif(v_entry ->> 'file_type', ''),
                           CASE WHEN v_blob IS NOT NULL THEN 'binary' ELSE synchub.infer_file_type(v_path) END);
        SELECT * INTO v_cur FROM synchub.project_files
        WHERE project_id = p_project AND file_path = v_path AND is_current_version;
        IF v_cur.id IS NOT NULL AND NOT v_cur.is_deleted
            AND v_cur.content_hash = v_hash AND v_cur.file_type = v_type
            AND v_cur.blob_sha256 IS NOT DISTINCT FROM v_blob THEN
            v_files := v_files || jsonb_build_object('path', v_path, 'version', v_cur.version,
                                                     'content_hash', v_hash);
            CONTINUE;
        END IF;
        IF v_cur.id IS NOT NULL THEN
            UPDATE synchub.project_files SET is_current_version = false
            WHERE project_id = p_project AND id = v_cur.id;
        END IF;
        INSERT INTO synchub.project_files (project_id, file_path, file_type, content, content_hash,
            size, stored_bytes, version, parent_version_id, is_current_version, seq, created_by,
            last_modified_by, blob_sha256)
        VALUES (p_project, v_path, v_type, v_content, v_hash, v_size, v_size,
            coalesce(v_cur.version, 0) + 1, v_cur.id, true, v_seq,
            CASE WHEN v_cur.id IS NULL OR v_cur.is_deleted THEN p_actor ELSE v_cur.created_by END, p_actor,
            v_blob)
        RETURNING id INTO v_new_id;
        v_ids := v_ids || v_new_id;
        v_changed := true;
        -- History counts (V3): this row's bytes stay stored after later writes supersede it.
        v_stored_bytes := v_stored_bytes + v_size;
        v_delta_bytes := v_delta_bytes + v_size
            - CASE WHEN v_cur.is_deleted IS DISTINCT FROM false THEN 0 ELSE v_cur.size END;
        IF v_cur.id IS NULL OR v_cur.is_deleted THEN
            v_delta_files := v_delta_files + 1;
        END IF;
        v_files := v_files || jsonb_build_object('path', v_path, 'version', coalesce(v_cur.version, 0) + 1,
                                                 'content_hash', v_hash);
    END LOOP;

    FOR v_i IN v_upsert_count .. jsonb_array_length(v_all) - 1 LOOP
        v_entry := v_all -> v_i;
        v_path := v_entry ->> 'path';
        SELECT * INTO v_cur FROM synchub.project_files
        WHERE project_id = p_project AND file_path = v_path AND is_current_version;
        UPDATE synchub.project_files SET is_current_version = false
            WHERE project_id = p_project AND id = v_cur.id;
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
    -- writers cannot race past it. Two index probes per upsert (one query with both
    -- conditions ORed scanned every current file of the project: n² for an archive), the
    -- folders first (file_path is COLLATE "C": the files below "p" are exactly those between
    -- "p/" and "p0").
    -- The range probe is ordered by the path, which only the (project_id, file_path)
    -- indexes give: so it is an index range probe whatever the statistics say. Planned from
    -- statistics taken while the table was (nearly) empty, as on a new hub until
    -- autovacuum's first ANALYZE, the unordered probe became a scan of every row of the
    -- project on every write (4 ms per write at 0 files, 18 ms at 2,400; n² for an
    -- archive). The parents are probed one by one by equality on the whole key: as one
    -- `file_path = ANY (parents)` probe, the planner without statistics kept the array out
    -- of the index condition and filtered every row of the project (test
    -- sql_functions::a_write_reads_a_few_index_entries_however_many_files_the_project_has).
    -- The statistics are still refreshed when this change alone inserted more rows than
    -- they count, for the statements after this one (then only: ANALYZE samples the whole
    -- table).
    IF cardinality(v_ids) >= 1000 AND cardinality(v_ids) >
        (SELECT c.reltuples FROM pg_catalog.pg_class c WHERE c.oid = 'synchub.project_files'::regclass) THEN
        ANALYZE synchub.project_files;
    END IF;
    FOR v_i IN 0 .. v_upsert_count - 1 LOOP
        v_path := v_all -> v_i ->> 'path';
        v_clash := NULL;
        FOREACH v_parent IN ARRAY synchub.parent_paths(v_path) LOOP
            SELECT f.file_path INTO v_clash FROM synchub.project_files f
            WHERE f.project_id = p_project AND f.file_path = v_parent AND f.is_current_version
              AND NOT f.is_deleted;
            EXIT WHEN v_clash IS NOT NULL;
        END LOOP;
        IF v_clash IS NULL THEN
            SELECT f.file_path INTO v_clash FROM synchub.project_files f
            WHERE f.project_id = p_project AND f.is_current_version AND NOT f.is_deleted
              AND f.file_path > v_path || '/' AND f.file_path < v_path || '0'
            ORDER BY f.file_path LIMIT 1;
        END IF;
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
                                       'files', to_jsonb(v_files), 'deleted', to_jsonb(v_deleted));
    ELSE
        IF v_project.file_count + v_delta_files > v_limits.max_files_per_project THEN
            PERFORM synchub.fail('SHQ03', 'file limit of the project reached',
                jsonb_build_object('limit', v_limits.max_files_per_project));
        END IF;
        -- Older versions stay stored (until the history task compacts or trims them and
        -- gives their bytes back): the quota grows by what this change stores.
        IF v_stored_bytes <> 0 THEN
            INSERT INTO synchub.user_usage (user_id) VALUES (v_project.owner_id) ON CONFLICT DO NOTHING;
            UPDATE synchub.user_usage SET stored_bytes = stored_bytes + v_stored_bytes
            WHERE user_id = v_project.owner_id RETURNING stored_bytes INTO v_usage;
            IF v_usage > v_limits.max_bytes_per_user THEN
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
        v_result := jsonb_build_object('seq', v_seq, 'files', to_jsonb(v_files), 'deleted', to_jsonb(v_deleted));
    END IF;

    IF p_op_id IS NOT NULL THEN
        INSERT INTO synchub.applied_ops (project_id, op_id, result, op_kind, args_hash)
        VALUES (p_project, p_op_id, v_result, p_op_kind, synchub.op_args_hash(p_actor, p_op_args));
    END IF;
    RETURN v_result;
END $$;

-- Creates or replaces one file. expected_version: NULL unconditional, 0 must not exist,
-- N must be the current version.
CREATE OR REPLACE FUNCTION synchub.upsert_project_file(project_uuid uuid, p_file_path text,
    p_content text, p_file_type text, expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, content_hash text, seq bigint)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_entry jsonb := jsonb_build_object('path', p_file_path, 'content', p_content,
                                        'file_type', p_file_type, 'expected_version', expected_version);
    v_result jsonb := synchub.apply_change(project_uuid, jsonb_build_array(v_entry), '[]', p_actor, p_op_id,
                                           'file:update', 'upsert', v_entry);
BEGIN
    RETURN QUERY SELECT v_result -> 'files' -> 0 ->> 'path', (v_result -> 'files' -> 0 ->> 'version')::integer,
                        v_result -> 'files' -> 0 ->> 'content_hash', (v_result ->> 'seq')::bigint;
END $$;

-- Deletes one file (a tombstone version); 404 when it does not exist.
CREATE OR REPLACE FUNCTION synchub.delete_project_file(project_uuid uuid, p_file_path text,
    expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, seq bigint)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_entry jsonb := jsonb_build_object('path', p_file_path, 'expected_version', expected_version);
    v_result jsonb := synchub.apply_change(project_uuid, '[]', jsonb_build_array(v_entry), p_actor, p_op_id,
                                           'file:delete', 'delete', v_entry);
BEGIN
    RETURN QUERY SELECT v_result -> 'deleted' -> 0 ->> 'path', (v_result -> 'deleted' -> 0 ->> 'version')::integer,
                        (v_result ->> 'seq')::bigint;
END $$;

-- Upserts and deletes, all or nothing, as one change.
CREATE OR REPLACE FUNCTION synchub.bulk_upsert_project_files(project_uuid uuid, files jsonb,
    deletes jsonb, p_actor text, p_op_id uuid)
RETURNS TABLE (seq bigint, result jsonb)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_result jsonb := synchub.apply_change(project_uuid, files, deletes, p_actor, p_op_id, 'bulk:apply', 'bulk',
                                           jsonb_build_object('files', files, 'deletes', deletes));
BEGIN
    RETURN QUERY SELECT (v_result ->> 'seq')::bigint, v_result;
END $$;

-- Stages archive entries [{path, content | blob, file_type?}] for the import p_import,
-- numbered from p_first in the order given (editor or better). The hub sends an archive's
-- checked entries in bounded pieces this way, inside the import's transaction, so neither
-- it nor one statement ever holds the whole archive; import_project_archive applies and
-- removes them in the same transaction. Nothing is checked here but the shape: the one
-- write path (apply_change) checks every entry when they are applied.
CREATE OR REPLACE FUNCTION synchub.stage_archive_entries(p_project uuid, p_actor text, p_import uuid,
                                                         p_first integer, p_entries jsonb)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'editor');
    IF jsonb_typeof(p_entries) IS DISTINCT FROM 'array' OR p_import IS NULL OR p_first IS NULL THEN
        PERFORM synchub.fail('SH400', 'entries must be an array, with an import id and a first ordinal');
    END IF;
    INSERT INTO synchub.archive_staging (project_id, import_id, ord, path, entry)
    SELECT p_project, p_import, p_first + e.n::integer - 1, e.v ->> 'path', e.v
    FROM jsonb_array_elements(p_entries) WITH ORDINALITY e(v, n);
    RETURN jsonb_array_length(p_entries);
END $$;

-- Imports the archive entries staged for p_import (stage_archive_entries, same transaction)
-- as one change, one bulk:apply (CONTRACT section 13): with p_replace the project's files
-- become exactly the staged ones (the others are deleted), else they are upserted and the
-- others kept. The staged rows are removed here (with any this project's earlier callers
-- left committed), so none outlives the transaction, whatever it ends with. The one write
-- path, apply_change, with its entry cap raised to what a project may hold plus what it may
-- delete (the bulk cap of 2,000 is for request bodies; archives hold up to 10,000 files),
-- as set_project_base does. The deletes are read under the project row lock.
CREATE OR REPLACE FUNCTION synchub.import_project_archive(p_project uuid, p_import uuid, p_replace boolean,
                                                          p_actor text, p_op_id uuid)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_files jsonb;
    v_deletes jsonb := '[]';
BEGIN
    IF p_import IS NULL OR p_replace IS NULL THEN
        PERFORM synchub.fail('SH400', 'an import id and replace (a boolean) are required');
    END IF;
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'editor');
    SELECT coalesce(jsonb_agg(s.entry ORDER BY s.ord), '[]') INTO v_files
    FROM synchub.archive_staging s WHERE s.project_id = p_project AND s.import_id = p_import;
    IF p_replace THEN
        -- One anti-join (hashed), not a scan of the archive per current file.
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', c.file_path) ORDER BY c.file_path), '[]')
        INTO v_deletes
        FROM synchub.project_files_current c
        WHERE c.project_id = p_project
          AND NOT EXISTS (SELECT 1 FROM synchub.archive_staging s
                          WHERE s.project_id = p_project AND s.import_id = p_import
                            AND s.path = c.file_path);
    END IF;
    DELETE FROM synchub.archive_staging WHERE project_id = p_project;
    IF jsonb_array_length(v_files) + jsonb_array_length(v_deletes) = 0 THEN
        -- An empty archive over an empty project: nothing to change, no event.
        RETURN jsonb_build_object('seq', (SELECT last_seq FROM synchub.projects WHERE id = p_project),
                                  'files', '[]'::jsonb, 'deleted', '[]'::jsonb);
    END IF;
    RETURN synchub.apply_change(p_project, v_files, v_deletes, p_actor, p_op_id, 'bulk:apply', 'archive',
        -- Only an op_id needs its arguments (a copy of every file, hashed).
        CASE WHEN p_op_id IS NOT NULL THEN jsonb_build_object('replace', p_replace, 'files', v_files) END,
        (SELECT max_files_per_project * 2 FROM synchub.limits));
END $$;

-- Moves a file: one change (the new path created, the old one deleted), one bulk:apply.
CREATE OR REPLACE FUNCTION synchub.move_project_file(project_uuid uuid, p_from text, p_to text,
    expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (seq bigint, version integer)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
            jsonb_build_array(jsonb_build_object('path', p_to, 'file_type', v_src.file_type,
                                                 'expected_version', 0) || synchub.file_body(v_src)),
            jsonb_build_array(jsonb_build_object('path', p_from, 'expected_version', expected_version)),
            p_actor, p_op_id, 'bulk:apply', 'move', v_args);
    ELSE
        v_result := v_prior;
    END IF;
    RETURN QUERY SELECT (v_result ->> 'seq')::bigint, (v_result -> 'files' -> 0 ->> 'version')::integer;
END $$;

-- Current files of a project, in path (byte) order. For operators and importers.
CREATE OR REPLACE FUNCTION synchub.list_current_files(project_uuid uuid)
RETURNS TABLE (file_path text, file_type text, content text, content_hash text, version integer,
               updated_at timestamptz, blob_sha256 text, size integer)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT f.file_path, f.file_type, f.content, f.content_hash, f.version, f.updated_at,
           f.blob_sha256, f.size  -- binary files: their blob (content is NULL)
    FROM synchub.project_files_current f WHERE f.project_id = project_uuid ORDER BY f.file_path
$$;

-- The caller's view of the current files plus the cursor (last_seq), from one snapshot:
-- a STABLE function reads everything with its calling statement's snapshot. A project
-- with no files answers one row with a NULL path, so the cursor is always returned.
CREATE OR REPLACE FUNCTION synchub.list_files(p_project uuid, p_actor text,
                                              p_include_content boolean)
RETURNS TABLE (cursor bigint, file_path text, file_type text, content text, content_hash text,
               version integer, size integer, updated_at text, blob_sha256 text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN QUERY
    SELECT p.last_seq, f.file_path::text, f.file_type, CASE WHEN p_include_content THEN f.content END,
           f.content_hash, f.version, f.size, synchub.ts(f.updated_at), f.blob_sha256
    FROM synchub.projects p
    LEFT JOIN synchub.project_files_current f ON f.project_id = p.id
    WHERE p.id = p_project
    ORDER BY f.file_path;
END $$;

-- One current file with its content (viewer or better).
CREATE OR REPLACE FUNCTION synchub.get_file(p_project uuid, p_actor text, p_path text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_file jsonb;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    PERFORM synchub.check_path(p_path);
    -- A binary file answers {binary, blob} instead of content (the hub adds its url).
    SELECT jsonb_build_object('path', f.file_path, 'file_type', f.file_type,
                              'content_hash', f.content_hash, 'version', f.version, 'size', f.size,
                              'updated_at', synchub.ts(f.updated_at))
           || CASE WHEN f.blob_sha256 IS NULL THEN jsonb_build_object('content', f.content)
                   ELSE jsonb_build_object('binary', true, 'blob',
                        jsonb_build_object('sha256', f.blob_sha256, 'size', f.size)) END
    INTO v_file
    FROM synchub.project_files_current f WHERE f.project_id = p_project AND f.file_path = p_path;
    IF v_file IS NULL THEN
        PERFORM synchub.fail('SH404', 'file not found', jsonb_build_object('path', p_path));
    END IF;
    RETURN v_file;
END $$;
