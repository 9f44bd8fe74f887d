-- Preview-container sessions: scoped, revocable, with the agent's progress.

-- A session as the API shows it.
CREATE OR REPLACE FUNCTION synchub.session_json(s synchub.sessions)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'session_id', s.id, 'project_id', s.project_id,
        'connected', s.sockets > 0 AND s.last_seen_at > now() - interval '60 seconds',
        'applied_seq', s.applied_seq,
        'project_last_seq', (SELECT last_seq FROM synchub.projects WHERE id = s.project_id),
        'last_seen_at', synchub.ts(s.last_seen_at), 'expires_at', synchub.ts(s.expires_at),
        'revoked_at', synchub.ts(s.revoked_at), 'token_ttl_seconds', s.token_ttl_seconds)
$$;

-- Creates a session for a project (orchestrators: service marking). max lifetime caps
-- every token minted for it.
CREATE OR REPLACE FUNCTION synchub.create_session(p_project uuid, p_token_ttl integer,
                                                  p_max_lifetime integer)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_session synchub.sessions;
BEGIN
    PERFORM synchub.authorize(p_project, 'service', 'owner');
    IF p_token_ttl IS NULL OR p_token_ttl < 10 OR p_token_ttl > 86400 THEN
        PERFORM synchub.fail('SH400', 'ttl_seconds must be between 10 and 86400');
    END IF;
    IF p_max_lifetime IS NULL OR p_max_lifetime < p_token_ttl OR p_max_lifetime > 30 * 86400 THEN
        PERFORM synchub.fail('SH400', 'max_lifetime_seconds must be at least ttl_seconds and at most 30 days');
    END IF;
    INSERT INTO synchub.sessions (id, project_id, token_ttl_seconds, expires_at)
    VALUES (gen_random_uuid(), p_project, p_token_ttl, now() + make_interval(secs => p_max_lifetime))
    RETURNING * INTO v_session;
    RETURN synchub.session_json(v_session);
END $$;

-- A session for a reader: the service, or a member of its project; others get 404.
CREATE OR REPLACE FUNCTION synchub.get_session(p_session uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_session synchub.sessions;
BEGIN
    SELECT * INTO v_session FROM synchub.sessions WHERE id = p_session;
    IF v_session.id IS NULL OR synchub.role_of(v_session.project_id, p_actor) IS NULL THEN
        PERFORM synchub.fail('SH404', 'session not found');
    END IF;
    RETURN synchub.session_json(v_session);
END $$;

-- Whether tokens of this session may still be used: not revoked, within its max lifetime,
-- its project not deleted (every use of a container token asks).
CREATE OR REPLACE FUNCTION synchub.session_active(p_project uuid, p_session uuid)
RETURNS boolean LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM synchub.sessions s JOIN synchub.projects p ON p.id = s.project_id
                   WHERE s.project_id = p_project AND s.id = p_session AND s.revoked_at IS NULL
                     AND s.expires_at > now() AND p.deleted_at IS NULL)
$$;

-- Which of these sessions can no longer be used, by the same rules as session_active (the
-- hub closes their sockets with 4010).
CREATE OR REPLACE FUNCTION synchub.inactive_sessions(p_sessions uuid[])
RETURNS TABLE (session_id uuid)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT q.id FROM unnest(p_sessions) AS q(id)
    LEFT JOIN synchub.sessions s ON s.id = q.id
    LEFT JOIN synchub.projects p ON p.id = s.project_id
    WHERE s.id IS NULL OR s.revoked_at IS NOT NULL OR s.expires_at <= now() OR p.deleted_at IS NOT NULL
$$;

-- Revokes a session (idempotent); 404 when it does not exist.
CREATE OR REPLACE FUNCTION synchub.revoke_session(p_session uuid)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_session synchub.sessions;
BEGIN
    UPDATE synchub.sessions SET revoked_at = coalesce(revoked_at, now())
    WHERE id = p_session RETURNING * INTO v_session;
    IF v_session.id IS NULL THEN
        PERFORM synchub.fail('SH404', 'session not found');
    END IF;
    RETURN synchub.session_json(v_session);
END $$;

-- The agent's progress and liveness (p_sockets_delta +1 on connect, -1 on disconnect, 0 for
-- a report). An applied seq outside 0..last_seq is refused (false) and not recorded; the
-- check reads last_seq in the statement that records, so no write can slip in between.
-- NULL when the session does not exist (in that project).
CREATE OR REPLACE FUNCTION synchub.session_report(p_project uuid, p_session uuid,
                                                  p_applied_seq bigint, p_sockets_delta integer)
RETURNS boolean LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE synchub.sessions s
    SET applied_seq = CASE WHEN p_applied_seq BETWEEN 0 AND p.last_seq
                           THEN greatest(s.applied_seq, p_applied_seq) ELSE s.applied_seq END,
        sockets = greatest(s.sockets + p_sockets_delta, 0),
        last_seen_at = now()
    FROM synchub.projects p
    WHERE s.project_id = p_project AND s.id = p_session AND p.id = s.project_id
    RETURNING p_applied_seq IS NULL OR p_applied_seq BETWEEN 0 AND p.last_seq
$$;
