-- Realtime support: authorizing a channel join, the cheap heads check that catches
-- changes whose wake-up never came, and re-checking subscribers after member changes.

-- A reader joins a project's channel: returns its current last_seq and the oldest seq
-- still in the log (viewer or better; 404 otherwise).
CREATE OR REPLACE FUNCTION synchub.join_channel(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN jsonb_build_object('last_seq', (SELECT last_seq FROM synchub.projects WHERE id = p_project),
                              'oldest_seq', synchub.oldest_seq(p_project));
END $$;

-- last_seq of many projects at once (the hub's periodic check for active channels).
CREATE OR REPLACE FUNCTION synchub.project_heads(p_projects uuid[])
RETURNS TABLE (project_id uuid, last_seq bigint)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT id, last_seq FROM synchub.projects WHERE id = ANY (p_projects)
$$;

-- Which of these users may still read the project (after a member change).
CREATE OR REPLACE FUNCTION synchub.readers_among(p_project uuid, p_users text[])
RETURNS TABLE (user_id text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.user_id FROM synchub.project_members m JOIN synchub.projects p ON p.id = m.project_id
    WHERE m.project_id = p_project AND m.user_id = ANY (p_users) AND p.deleted_at IS NULL
$$;
