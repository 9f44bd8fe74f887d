-- Projects and their members.

-- A project as the API shows it.
CREATE OR REPLACE FUNCTION synchub.project_json(p synchub.projects, p_role text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
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

-- Creates a project owned by p_owner (with a new id when p_project is NULL); the per-user
-- project limit is checked under the owner's usage row lock so two parallel creates cannot
-- overshoot it.
CREATE OR REPLACE FUNCTION synchub.create_project(p_project uuid, p_name text, p_owner text,
                                                  p_source jsonb)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    VALUES (coalesce(p_project, gen_random_uuid()), p_name, p_owner, v_kind,
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
CREATE OR REPLACE FUNCTION synchub.list_projects(p_actor text, p_include_deleted boolean)
RETURNS jsonb LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', p.id, 'name', p.name, 'role', m.role, 'revision', p.revision,
               'updated_at', synchub.ts(p.updated_at), 'deleted_at', synchub.ts(p.deleted_at))
           ORDER BY p.updated_at DESC, p.id), '[]'::jsonb)
    FROM synchub.project_members m JOIN synchub.projects p ON p.id = m.project_id
    WHERE m.user_id = p_actor AND (p_include_deleted OR p.deleted_at IS NULL)
$$;

-- One project; a tombstoned project is still shown to its members (so they can restore it).
CREATE OR REPLACE FUNCTION synchub.get_project(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role text := synchub.authorize(p_project, p_actor, 'viewer', true);
BEGIN
    RETURN (SELECT synchub.project_json(p, v_role) FROM synchub.projects p WHERE id = p_project);
END $$;

-- Renames a project if the caller saw its latest revision; else 409 with the server copy.
CREATE OR REPLACE FUNCTION synchub.rename_project(p_project uuid, p_actor text, p_name text,
                                                  p_base_revision bigint)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
-- Its sessions end for good (revoked in the same transaction): restoring the project does
-- not revive its container tokens.
CREATE OR REPLACE FUNCTION synchub.delete_project(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- Brings a tombstoned project back (owner), within the owner's project limit.
CREATE OR REPLACE FUNCTION synchub.restore_project(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- The members and their roles (viewer or better).
CREATE OR REPLACE FUNCTION synchub.list_members(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'role', role,
                                                          'created_at', synchub.ts(created_at))
                                      ORDER BY user_id), '[]'::jsonb)
            FROM synchub.project_members WHERE project_id = p_project);
END $$;

-- Adds or changes a member (owner only); at least one owner always remains.
CREATE OR REPLACE FUNCTION synchub.set_member(p_project uuid, p_actor text, p_user text,
                                              p_role text)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- Removes a member (owner only); at least one owner always remains.
CREATE OR REPLACE FUNCTION synchub.remove_member(p_project uuid, p_actor text, p_user text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
