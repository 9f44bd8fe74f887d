-- Socket hardening (issue #11): an agent cannot claim to have applied more than exists.

-- The agent's progress and liveness (p_sockets_delta +1 on connect, -1 on disconnect, 0 for
-- a report). An applied seq outside 0..last_seq is refused (false) and not recorded; the
-- check reads last_seq in the statement that records, so no write can slip in between.
-- NULL when the session does not exist.
CREATE FUNCTION synchub.session_report(p_session uuid, p_applied_seq bigint, p_sockets_delta integer)
RETURNS boolean LANGUAGE sql AS $$
    UPDATE synchub.sessions s
    SET applied_seq = CASE WHEN p_applied_seq BETWEEN 0 AND p.last_seq
                           THEN greatest(s.applied_seq, p_applied_seq) ELSE s.applied_seq END,
        sockets = greatest(s.sockets + p_sockets_delta, 0),
        last_seen_at = now()
    FROM synchub.projects p
    WHERE s.id = p_session AND p.id = s.project_id
    RETURNING p_applied_seq IS NULL OR p_applied_seq BETWEEN 0 AND p.last_seq
$$;
SELECT synchub.expose('synchub.session_report(uuid, bigint, integer)');

-- Hubs of the previous release still call session_seen during a rolling deploy: same
-- check for them (drop it once no such hub runs).
CREATE OR REPLACE FUNCTION synchub.session_seen(p_session uuid, p_applied_seq bigint, p_sockets_delta integer)
RETURNS void LANGUAGE sql AS $$
    SELECT synchub.session_report(p_session, p_applied_seq, p_sockets_delta)
$$;
-- CREATE OR REPLACE resets SECURITY DEFINER and search_path: expose it again.
SELECT synchub.expose('synchub.session_seen(uuid, bigint, integer)');
