-- A session ends with its project: session_active (which every container token use
-- checks) already said so, but inactive_sessions (which closes open sockets with 4010)
-- did not, so a preview's socket outlived its deleted project until the next token
-- refresh failed. Both now agree.
CREATE OR REPLACE FUNCTION synchub.inactive_sessions(p_sessions uuid[])
RETURNS TABLE (session_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT q.id FROM unnest(p_sessions) AS q(id)
    LEFT JOIN synchub.sessions s ON s.id = q.id
    LEFT JOIN synchub.projects p ON p.id = s.project_id
    WHERE s.id IS NULL OR s.revoked_at IS NOT NULL OR s.expires_at <= now() OR p.deleted_at IS NOT NULL
$$;
-- CREATE OR REPLACE resets SECURITY DEFINER and search_path: expose it again.
SELECT synchub.expose('synchub.inactive_sessions(uuid[])');
