-- The SQL surface: every operation the hub performs is one of these functions, each one
-- transaction, so direct callers (operators, importers) get the same rules and errors.
--
-- Errors are raised with synchub's own SQLSTATEs; the hub maps each one once to the
-- contract's error codes, and DETAIL carries the error details as JSON:
--   SH400 invalid_request   SHP00 invalid_path      SH403 forbidden
--   SH404 not_found         SH409 version_conflict  SHR09 revision_conflict
--   SHA09 already_exists    SH410 history_trimmed   SH413 payload_too_large
--   SHQ03 quota_exceeded    SH415 unsupported_content

-- Raises one of the codes above; DETAIL is the JSON details object (or empty).
CREATE FUNCTION synchub.fail(p_code text, p_message text, p_detail jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message,
        DETAIL = coalesce(p_detail::text, '');
END $$;

-- Timestamps in the contract's shape: 2026-11-22T10:00:00.000Z.
CREATE FUNCTION synchub.ts(p timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- The same path rules as the hub's normalizer (CONTRACT section 7), for direct callers.
CREATE FUNCTION synchub.check_path(p_path text) RETURNS void
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

-- file_type from the extension when the client gives none.
CREATE FUNCTION synchub.infer_file_type(p_path text) RETURNS text
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

CREATE FUNCTION synchub.content_hash(p_content text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(p_content, 'UTF8')), 'hex')
$$;

CREATE FUNCTION synchub.role_rank(p_role text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_role WHEN 'owner' THEN 3 WHEN 'editor' THEN 2 WHEN 'viewer' THEN 1 ELSE 0 END
$$;

-- The caller's role in a project, or NULL. The hub marks orchestrator (service token)
-- transactions with `SET LOCAL synchub.service = 'on'`; they act as owner.
CREATE FUNCTION synchub.role_of(p_project uuid, p_actor text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_setting('synchub.service', true) = 'on'
                THEN (SELECT 'owner' FROM synchub.projects WHERE id = p_project)
                ELSE (SELECT role FROM synchub.project_members
                      WHERE project_id = p_project AND user_id = p_actor)
           END
$$;

-- Refuses callers below p_min_role: 404 when they may not even read the project (so its
-- existence does not leak), 403 when they can see it but their role is too low.
CREATE FUNCTION synchub.authorize(p_project uuid, p_actor text, p_min_role text,
                                  p_allow_deleted boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_role text := synchub.role_of(p_project, p_actor);
    v_deleted timestamptz;
BEGIN
    SELECT deleted_at INTO v_deleted FROM synchub.projects WHERE id = p_project;
    IF v_role IS NULL OR (v_deleted IS NOT NULL AND NOT p_allow_deleted) THEN
        PERFORM synchub.fail('SH404', 'project not found');
    END IF;
    IF synchub.role_rank(v_role) < synchub.role_rank(p_min_role) THEN
        PERFORM synchub.fail('SH403', format('this needs the %s role', p_min_role));
    END IF;
    RETURN v_role;
END $$;

-- A project as the API shows it.
CREATE FUNCTION synchub.project_json(p synchub.projects, p_role text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', p.id, 'name', p.name, 'role', p_role, 'owner', p.owner_id,
        'source', CASE p.source_kind
            WHEN 'github' THEN jsonb_build_object('kind', 'github', 'repo', p.source_repo,
                                                  'ref', p.source_ref, 'base_commit', p.base_commit)
            ELSE jsonb_build_object('kind', 'cloud') END,
        'revision', p.revision, 'file_count', p.file_count, 'bytes', p.bytes,
        'last_seq', p.last_seq, 'created_at', synchub.ts(p.created_at),
        'updated_at', synchub.ts(p.updated_at), 'deleted_at', synchub.ts(p.deleted_at))
$$;

---------------------------------------------------------------------------------------
-- Projects
---------------------------------------------------------------------------------------

-- Creates a project owned by p_owner; the per-user project limit is checked under the
-- owner's usage row lock so two parallel creates cannot overshoot it.
CREATE FUNCTION synchub.create_project(p_id uuid, p_name text, p_owner text, p_source jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_kind text := coalesce(p_source ->> 'kind', 'cloud');
    v_count integer;
    v_project synchub.projects;
BEGIN
    IF p_name IS NULL OR length(btrim(p_name)) = 0 OR length(p_name) > 200 THEN
        PERFORM synchub.fail('SH400', 'name must be 1 to 200 characters');
    END IF;
    IF v_kind NOT IN ('cloud', 'github') THEN
        PERFORM synchub.fail('SH400', 'source.kind must be "cloud" or "github"');
    END IF;
    IF v_kind = 'github' AND coalesce(p_source ->> 'repo', '') !~ '^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$' THEN
        PERFORM synchub.fail('SH400', 'source.repo must look like "owner/name"');
    END IF;
    INSERT INTO synchub.user_usage (user_id) VALUES (p_owner) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM synchub.user_usage WHERE user_id = p_owner FOR UPDATE;
    SELECT count(*) INTO v_count FROM synchub.projects
    WHERE owner_id = p_owner AND deleted_at IS NULL;
    IF v_count >= (SELECT max_projects_per_user FROM synchub.limits) THEN
        PERFORM synchub.fail('SHQ03', 'project limit reached',
            jsonb_build_object('limit', (SELECT max_projects_per_user FROM synchub.limits)));
    END IF;
    INSERT INTO synchub.projects (id, name, owner_id, source_kind, source_repo, source_ref, base_commit)
    VALUES (coalesce(p_id, gen_random_uuid()), p_name, p_owner, v_kind,
            p_source ->> 'repo', coalesce(p_source ->> 'ref', CASE WHEN v_kind = 'github' THEN 'main' END),
            p_source ->> 'base_commit')
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO v_project;
    IF NOT FOUND THEN
        PERFORM synchub.fail('SHA09', 'a project with this id already exists');
    END IF;
    INSERT INTO synchub.project_members (project_id, user_id, role)
    VALUES (v_project.id, p_owner, 'owner');
    RETURN synchub.project_json(v_project, 'owner');
END $$;

-- The caller's projects, newest updated_at first.
CREATE FUNCTION synchub.list_projects(p_actor text, p_include_deleted boolean)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', p.id, 'name', p.name, 'role', m.role, 'revision', p.revision,
               'updated_at', synchub.ts(p.updated_at), 'deleted_at', synchub.ts(p.deleted_at))
           ORDER BY p.updated_at DESC, p.id), '[]'::jsonb)
    FROM synchub.project_members m JOIN synchub.projects p ON p.id = m.project_id
    WHERE m.user_id = p_actor AND (p_include_deleted OR p.deleted_at IS NULL)
$$;

-- One project; a tombstoned project is still shown to its members (so they can restore it).
CREATE FUNCTION synchub.get_project(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_role text := synchub.authorize(p_project, p_actor, 'viewer', true);
BEGIN
    RETURN (SELECT synchub.project_json(p, v_role) FROM synchub.projects p WHERE id = p_project);
END $$;

-- Renames a project if the caller saw its latest revision; else 409 with the server copy.
CREATE FUNCTION synchub.rename_project(p_project uuid, p_actor text, p_name text, p_base_revision bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_project synchub.projects;
BEGIN
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    v_role := synchub.authorize(p_project, p_actor, 'editor');
    IF p_name IS NULL OR length(btrim(p_name)) = 0 OR length(p_name) > 200 THEN
        PERFORM synchub.fail('SH400', 'name must be 1 to 200 characters');
    END IF;
    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project;
    IF p_base_revision IS DISTINCT FROM v_project.revision THEN
        PERFORM synchub.fail('SHR09', 'the project changed since base_revision',
            jsonb_build_object('server', synchub.project_json(v_project, v_role)));
    END IF;
    UPDATE synchub.projects SET name = p_name, revision = revision + 1, updated_at = now()
    WHERE id = p_project RETURNING * INTO v_project;
    RETURN synchub.project_json(v_project, v_role);
END $$;

-- Tombstones a project (owner); its channel members get `project:deleted` via the log.
CREATE FUNCTION synchub.delete_project(p_project uuid, p_actor text)
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
    RETURN synchub.project_json(v_project, 'owner');
END $$;

CREATE FUNCTION synchub.restore_project(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_project synchub.projects;
BEGIN
    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'owner', true);
    IF v_project.deleted_at IS NULL THEN
        RETURN synchub.project_json(v_project, 'owner');
    END IF;
    PERFORM 1 FROM synchub.user_usage WHERE user_id = v_project.owner_id FOR UPDATE;
    IF (SELECT count(*) FROM synchub.projects WHERE owner_id = v_project.owner_id AND deleted_at IS NULL)
        >= (SELECT max_projects_per_user FROM synchub.limits) THEN
        PERFORM synchub.fail('SHQ03', 'project limit reached');
    END IF;
    UPDATE synchub.projects SET deleted_at = NULL, revision = revision + 1, updated_at = now()
    WHERE id = p_project RETURNING * INTO v_project;
    RETURN synchub.project_json(v_project, 'owner');
END $$;

---------------------------------------------------------------------------------------
-- Members
---------------------------------------------------------------------------------------

CREATE FUNCTION synchub.list_members(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'role', role,
                                                          'created_at', synchub.ts(created_at))
                                      ORDER BY user_id), '[]'::jsonb)
            FROM synchub.project_members WHERE project_id = p_project);
END $$;

-- Adds or changes a member (owner only); at least one owner always remains.
CREATE FUNCTION synchub.set_member(p_project uuid, p_actor text, p_user text, p_role text)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'owner');
    IF p_role IS NULL OR p_role NOT IN ('owner', 'editor', 'viewer') THEN
        PERFORM synchub.fail('SH400', 'role must be owner, editor or viewer');
    END IF;
    IF p_user IS NULL OR length(p_user) = 0 OR length(p_user) > 256 THEN
        PERFORM synchub.fail('SH400', 'user_id must be 1 to 256 characters');
    END IF;
    INSERT INTO synchub.project_members (project_id, user_id, role) VALUES (p_project, p_user, p_role)
    ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role;
    IF NOT EXISTS (SELECT 1 FROM synchub.project_members WHERE project_id = p_project AND role = 'owner') THEN
        PERFORM synchub.fail('SH400', 'a project keeps at least one owner');
    END IF;
    RETURN jsonb_build_object('user_id', p_user, 'role', p_role);
END $$;

CREATE FUNCTION synchub.remove_member(p_project uuid, p_actor text, p_user text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'owner');
    DELETE FROM synchub.project_members WHERE project_id = p_project AND user_id = p_user;
    IF NOT FOUND THEN
        PERFORM synchub.fail('SH404', 'no such member');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM synchub.project_members WHERE project_id = p_project AND role = 'owner') THEN
        PERFORM synchub.fail('SH400', 'a project keeps at least one owner');
    END IF;
END $$;

---------------------------------------------------------------------------------------
-- Files: one core write function; the named functions are thin wrappers over it.
---------------------------------------------------------------------------------------

-- Locks the project row (which serializes seq allocation), checks the writer's role and
-- returns the stored result of an earlier write with the same op_id, if any.
CREATE FUNCTION synchub.begin_write(p_project uuid, p_actor text, p_op_id uuid)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'editor');
    IF p_op_id IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT result FROM synchub.applied_ops WHERE project_id = p_project AND op_id = p_op_id);
END $$;

-- Applies upserts [{path, content, file_type?, expected_version?}] and deletes
-- [{path, expected_version?}] as one change with one seq and one event, or raises and
-- changes nothing. Returns {seq, files:[{path, version, content_hash}], deleted:[{path, version}]}.
-- Upserts whose content and type equal the current version change nothing.
CREATE FUNCTION synchub.apply_change(p_project uuid, p_upserts jsonb, p_deletes jsonb,
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

-- Creates or replaces one file. expected_version: NULL unconditional, 0 must not exist,
-- N must be the current version.
CREATE FUNCTION synchub.upsert_project_file(project_uuid uuid, p_file_path text, p_content text,
    p_file_type text, expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, content_hash text, seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := synchub.apply_change(project_uuid,
        jsonb_build_array(jsonb_build_object('path', p_file_path, 'content', p_content,
                                             'file_type', p_file_type, 'expected_version', expected_version)),
        '[]', p_actor, p_op_id, 'file:update');
BEGIN
    RETURN QUERY SELECT v_result -> 'files' -> 0 ->> 'path', (v_result -> 'files' -> 0 ->> 'version')::integer,
                        v_result -> 'files' -> 0 ->> 'content_hash', (v_result ->> 'seq')::bigint;
END $$;

-- Deletes one file (a tombstone version); 404 when it does not exist.
CREATE FUNCTION synchub.delete_project_file(project_uuid uuid, p_file_path text,
    expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (file_path text, version integer, seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := synchub.apply_change(project_uuid, '[]',
        jsonb_build_array(jsonb_build_object('path', p_file_path, 'expected_version', expected_version)),
        p_actor, p_op_id, 'file:delete');
BEGIN
    RETURN QUERY SELECT v_result -> 'deleted' -> 0 ->> 'path', (v_result -> 'deleted' -> 0 ->> 'version')::integer,
                        (v_result ->> 'seq')::bigint;
END $$;

-- Upserts and deletes, all or nothing, as one change.
CREATE FUNCTION synchub.bulk_upsert_project_files(project_uuid uuid, files jsonb, deletes jsonb,
    p_actor text, p_op_id uuid)
RETURNS TABLE (seq bigint, result jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_result jsonb := synchub.apply_change(project_uuid, files, deletes, p_actor, p_op_id, 'bulk:apply');
BEGIN
    RETURN QUERY SELECT (v_result ->> 'seq')::bigint, v_result;
END $$;

-- Moves a file: one change (the new path created, the old one deleted), one bulk:apply.
CREATE FUNCTION synchub.move_project_file(project_uuid uuid, p_from text, p_to text,
    expected_version integer, p_actor text, p_op_id uuid)
RETURNS TABLE (seq bigint, version integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_prior jsonb := synchub.begin_write(project_uuid, p_actor, p_op_id);
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
            p_actor, p_op_id, 'bulk:apply');
    ELSE
        v_result := v_prior;
    END IF;
    RETURN QUERY SELECT (v_result ->> 'seq')::bigint, (v_result -> 'files' -> 0 ->> 'version')::integer;
END $$;

-- Current files of a project, in path (byte) order. For operators and importers.
CREATE FUNCTION synchub.list_current_files(project_uuid uuid)
RETURNS TABLE (file_path text, file_type text, content text, content_hash text, version integer,
               updated_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.file_path, f.file_type, f.content, f.content_hash, f.version, f.updated_at
    FROM synchub.project_files_current f WHERE f.project_id = project_uuid ORDER BY f.file_path
$$;

-- The caller's view of the current files plus the cursor (last_seq), from one snapshot:
-- a STABLE function reads everything with its calling statement's snapshot. A project
-- with no files answers one row with a NULL path, so the cursor is always returned.
CREATE FUNCTION synchub.list_files(p_project uuid, p_actor text, p_include_content boolean)
RETURNS TABLE (cursor bigint, file_path text, file_type text, content text, content_hash text,
               version integer, size integer, updated_at text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN QUERY
    SELECT p.last_seq, f.file_path::text, f.file_type, CASE WHEN p_include_content THEN f.content END,
           f.content_hash, f.version, f.size, synchub.ts(f.updated_at)
    FROM synchub.projects p
    LEFT JOIN synchub.project_files_current f ON f.project_id = p.id
    WHERE p.id = p_project
    ORDER BY f.file_path;
END $$;

CREATE FUNCTION synchub.get_file(p_project uuid, p_actor text, p_path text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_file jsonb;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    PERFORM synchub.check_path(p_path);
    SELECT jsonb_build_object('path', f.file_path, 'file_type', f.file_type, 'content', f.content,
                              'content_hash', f.content_hash, 'version', f.version, 'size', f.size,
                              'updated_at', synchub.ts(f.updated_at))
    INTO v_file
    FROM synchub.project_files_current f WHERE f.project_id = p_project AND f.file_path = p_path;
    IF v_file IS NULL THEN
        PERFORM synchub.fail('SH404', 'file not found', jsonb_build_object('path', p_path));
    END IF;
    RETURN v_file;
END $$;

---------------------------------------------------------------------------------------
-- Events
---------------------------------------------------------------------------------------

-- An event's payload as the contract spells it, built from the file rows it produced.
CREATE FUNCTION synchub.event_payload(e synchub.events) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE e.event_type
        WHEN 'project:deleted' THEN jsonb_build_object('timestamp', synchub.ts(e.created_at))
        WHEN 'file:update' THEN (
            SELECT jsonb_build_object('file_path', f.file_path, 'file_type', f.file_type,
                'content', f.content, 'content_hash', f.content_hash, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            FROM synchub.project_files f WHERE f.id = e.file_ids[1])
        WHEN 'file:delete' THEN (
            SELECT jsonb_build_object('file_path', f.file_path, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            FROM synchub.project_files f WHERE f.id = e.file_ids[1])
        ELSE (
            SELECT jsonb_build_object(
                'files', coalesce(jsonb_agg(jsonb_build_object('file_path', f.file_path,
                    'file_type', f.file_type, 'content', f.content, 'content_hash', f.content_hash,
                    'version', f.version) ORDER BY f.file_path) FILTER (WHERE NOT f.is_deleted), '[]'),
                'deletes', coalesce(jsonb_agg(jsonb_build_object('file_path', f.file_path,
                    'version', f.version) ORDER BY f.file_path) FILTER (WHERE f.is_deleted), '[]'),
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            FROM synchub.project_files f WHERE f.id = ANY (e.file_ids))
    END
$$;

-- Events with seq > p_since, oldest first, as (seq, event, payload, committed_at).
-- No role check: callers are the hub's fan-out (after it authorized the subscriber) and
-- events_for (below).
CREATE FUNCTION synchub.read_events(p_project uuid, p_since bigint, p_limit integer)
RETURNS TABLE (seq bigint, event text, payload jsonb, created_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT e.seq, e.event_type, synchub.event_payload(e), e.created_at
    FROM synchub.events e
    WHERE e.project_id = p_project AND e.seq > p_since
    ORDER BY e.seq
    LIMIT p_limit
$$;

-- The oldest seq still in the log (last_seq + 1 when the log is empty).
CREATE FUNCTION synchub.oldest_seq(p_project uuid) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT min(seq) FROM synchub.events WHERE project_id = p_project),
                    (SELECT last_seq + 1 FROM synchub.projects WHERE id = p_project))
$$;

---------------------------------------------------------------------------------------
-- Editor state (per user, per project)
---------------------------------------------------------------------------------------

CREATE FUNCTION synchub.get_editor_state(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN coalesce(
        (SELECT jsonb_build_object('state', state, 'revision', revision, 'updated_at', synchub.ts(updated_at))
         FROM synchub.editor_state WHERE project_id = p_project AND user_id = p_actor),
        jsonb_build_object('state', NULL, 'revision', 0, 'updated_at', NULL));
END $$;

-- Saves the caller's editor state if base_revision is the stored one; else 409 with the
-- server copy (the server wins).
CREATE FUNCTION synchub.put_editor_state(p_project uuid, p_actor text, p_state jsonb, p_base_revision bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_row synchub.editor_state;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    IF octet_length(p_state::text) > (SELECT max_editor_state_bytes FROM synchub.limits) THEN
        PERFORM synchub.fail('SH413', 'editor state is larger than the limit');
    END IF;
    INSERT INTO synchub.editor_state (project_id, user_id, state, revision)
    VALUES (p_project, p_actor, NULL, 0) ON CONFLICT DO NOTHING;
    SELECT * INTO v_row FROM synchub.editor_state
    WHERE project_id = p_project AND user_id = p_actor FOR UPDATE;
    IF p_base_revision IS DISTINCT FROM v_row.revision THEN
        PERFORM synchub.fail('SHR09', 'editor state changed since base_revision',
            jsonb_build_object('server', jsonb_build_object('state', v_row.state, 'revision', v_row.revision,
                'updated_at', CASE WHEN v_row.revision = 0 THEN NULL ELSE synchub.ts(v_row.updated_at) END)));
    END IF;
    UPDATE synchub.editor_state SET state = p_state, revision = revision + 1, updated_at = now()
    WHERE project_id = p_project AND user_id = p_actor RETURNING * INTO v_row;
    RETURN jsonb_build_object('revision', v_row.revision, 'updated_at', synchub.ts(v_row.updated_at));
END $$;

---------------------------------------------------------------------------------------
-- GitHub-linked projects: base tree and uncommitted changes
---------------------------------------------------------------------------------------

-- Records the repository tree at p_commit as the base; with p_apply the project's files
-- become exactly that tree in one change (one bulk:apply).
CREATE FUNCTION synchub.set_project_base(p_project uuid, p_actor text, p_commit text, p_files jsonb,
                                         p_apply boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_project synchub.projects;
    v_upserts jsonb;
    v_deletes jsonb;
    v_result jsonb;
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
    IF p_apply THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', n.value ->> 'path', 'content', n.value -> 'content')), '[]')
        INTO v_upserts
        FROM jsonb_array_elements(p_files) n
        LEFT JOIN synchub.project_files_current c ON c.project_id = p_project AND c.file_path = n.value ->> 'path'
        WHERE c.content_hash IS DISTINCT FROM synchub.content_hash(n.value ->> 'content')
           OR n.value ->> 'content' IS NULL;
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', c.file_path)), '[]') INTO v_deletes
        FROM synchub.project_files_current c
        WHERE c.project_id = p_project
          AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_files) n WHERE n.value ->> 'path' = c.file_path);
        IF jsonb_array_length(v_upserts) + jsonb_array_length(v_deletes) > 0 THEN
            v_result := synchub.apply_change(p_project, v_upserts, v_deletes, p_actor, NULL, 'bulk:apply',
                (SELECT max_files_per_project * 2 FROM synchub.limits));
        END IF;
    ELSE
        -- Validate the tree even when it is only recorded.
        PERFORM synchub.check_path(n.value ->> 'path') FROM jsonb_array_elements(p_files) n;
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_files) n
                   WHERE jsonb_typeof(n.value -> 'content') IS DISTINCT FROM 'string') THEN
            PERFORM synchub.fail('SH400', 'every file needs a string "content"');
        END IF;
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

-- Uncommitted work of a GitHub-linked project, relative to its base tree.
CREATE FUNCTION synchub.project_changes(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_project synchub.projects;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project;
    IF v_project.source_kind <> 'github' THEN
        PERFORM synchub.fail('SH400', 'the project is not linked to a GitHub repository');
    END IF;
    RETURN jsonb_build_object('base_commit', v_project.base_commit, 'changes', (
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', coalesce(c.file_path, b.file_path),
            'status', CASE WHEN b.file_path IS NULL THEN 'added'
                           WHEN c.file_path IS NULL THEN 'deleted' ELSE 'modified' END)
            ORDER BY coalesce(c.file_path, b.file_path)), '[]')
        FROM (SELECT file_path, content_hash FROM synchub.project_files_current WHERE project_id = p_project) c
        FULL JOIN (SELECT file_path, content_hash FROM synchub.project_base_files WHERE project_id = p_project) b
            ON b.file_path = c.file_path
        WHERE c.content_hash IS DISTINCT FROM b.content_hash));
END $$;
