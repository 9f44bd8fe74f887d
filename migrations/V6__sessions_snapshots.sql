-- Preview-container sessions (scoped, revocable, with the agent's progress) and the
-- snapshot catalogue (archives live in object storage; rows say what they contain).

CREATE TABLE synchub.sessions (
    id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    token_ttl_seconds integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    applied_seq bigint NOT NULL DEFAULT 0,
    sockets integer NOT NULL DEFAULT 0 CHECK (sockets >= 0),
    last_seen_at timestamptz
);
CREATE INDEX sessions_project ON synchub.sessions (project_id);

CREATE TABLE synchub.snapshots (
    id uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    cursor bigint NOT NULL,
    storage_key text NOT NULL,
    sha256 text NOT NULL,
    bytes bigint NOT NULL,
    file_count integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX snapshots_project_latest ON synchub.snapshots (project_id, cursor DESC, created_at DESC);

-- A session as the API shows it.
CREATE FUNCTION synchub.session_json(s synchub.sessions) RETURNS jsonb
LANGUAGE sql STABLE AS $$
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
CREATE FUNCTION synchub.create_session(p_project uuid, p_token_ttl integer, p_max_lifetime integer)
RETURNS jsonb LANGUAGE plpgsql AS $$
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
CREATE FUNCTION synchub.get_session(p_session uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_session synchub.sessions;
BEGIN
    SELECT * INTO v_session FROM synchub.sessions WHERE id = p_session;
    IF v_session.id IS NULL OR synchub.role_of(v_session.project_id, p_actor) IS NULL THEN
        PERFORM synchub.fail('SH404', 'session not found');
    END IF;
    RETURN synchub.session_json(v_session);
END $$;

-- Whether tokens of this session may still be used (not revoked, within max lifetime).
CREATE FUNCTION synchub.session_active(p_session uuid, p_project uuid)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM synchub.sessions s JOIN synchub.projects p ON p.id = s.project_id
                   WHERE s.id = p_session AND s.project_id = p_project AND s.revoked_at IS NULL
                     AND s.expires_at > now() AND p.deleted_at IS NULL)
$$;

-- Which of these sessions can no longer be used (for closing their sockets).
CREATE FUNCTION synchub.inactive_sessions(p_sessions uuid[])
RETURNS TABLE (session_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT q.id FROM unnest(p_sessions) AS q(id)
    LEFT JOIN synchub.sessions s ON s.id = q.id
    WHERE s.id IS NULL OR s.revoked_at IS NOT NULL OR s.expires_at <= now()
$$;

CREATE FUNCTION synchub.revoke_session(p_session uuid)
RETURNS jsonb LANGUAGE plpgsql AS $$
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

-- The agent's progress and liveness: p_sockets_delta is +1 on connect, -1 on disconnect,
-- 0 for a progress report.
CREATE FUNCTION synchub.session_seen(p_session uuid, p_applied_seq bigint, p_sockets_delta integer)
RETURNS void LANGUAGE sql AS $$
    UPDATE synchub.sessions
    SET applied_seq = greatest(applied_seq, coalesce(p_applied_seq, 0)),
        sockets = greatest(sockets + p_sockets_delta, 0),
        last_seen_at = now()
    WHERE id = p_session
$$;

-- The newest snapshot of a project, if any.
CREATE FUNCTION synchub.latest_snapshot(p_project uuid)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('snapshot_id', id, 'cursor', cursor, 'storage_key', storage_key, 'sha256', sha256,
                              'bytes', bytes, 'file_count', file_count, 'created_at', synchub.ts(created_at))
    FROM synchub.snapshots WHERE project_id = p_project
    ORDER BY cursor DESC, created_at DESC LIMIT 1
$$;

CREATE FUNCTION synchub.record_snapshot(p_id uuid, p_project uuid, p_cursor bigint, p_key text, p_sha256 text,
                                        p_bytes bigint, p_file_count integer)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO synchub.snapshots (id, project_id, cursor, storage_key, sha256, bytes, file_count)
    VALUES (p_id, p_project, p_cursor, p_key, p_sha256, p_bytes, p_file_count)
$$;

SELECT synchub.expose('synchub.create_session(uuid, integer, integer)');
SELECT synchub.expose('synchub.get_session(uuid, text)');
SELECT synchub.expose('synchub.session_active(uuid, uuid)');
SELECT synchub.expose('synchub.inactive_sessions(uuid[])');
SELECT synchub.expose('synchub.revoke_session(uuid)');
SELECT synchub.expose('synchub.session_seen(uuid, bigint, integer)');
SELECT synchub.expose('synchub.latest_snapshot(uuid)');
SELECT synchub.expose('synchub.record_snapshot(uuid, uuid, bigint, text, text, bigint, integer)');
