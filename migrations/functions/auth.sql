-- Who may do what: a caller's role in a project and the check every entry point makes.

-- Roles ordered: owner > editor > viewer > none.
CREATE OR REPLACE FUNCTION synchub.role_rank(p_role text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_role WHEN 'owner' THEN 3 WHEN 'editor' THEN 2 WHEN 'viewer' THEN 1 ELSE 0 END
$$;

-- The caller's role in a project, or NULL. The hub marks orchestrator (service token)
-- transactions with `SET LOCAL synchub.service = 'on'`; they act as owner.
CREATE OR REPLACE FUNCTION synchub.role_of(p_project uuid, p_actor text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_setting('synchub.service', true) = 'on'
                THEN (SELECT 'owner' FROM synchub.projects WHERE id = p_project)
                ELSE (SELECT role FROM synchub.project_members
                      WHERE project_id = p_project AND user_id = p_actor)
           END
$$;

-- Refuses callers below p_min_role: 404 when they may not even read the project (so its
-- existence does not leak), 403 when they can see it but their role is too low.
CREATE OR REPLACE FUNCTION synchub.authorize(p_project uuid, p_actor text, p_min_role text,
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
