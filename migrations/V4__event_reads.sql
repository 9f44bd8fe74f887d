-- Reading the event log over HTTP (and replay on join): frames exactly as the realtime
-- socket sends them, the retention check, and pruning.

-- Events after p_since for a reader (viewer or better; a tombstoned project's members
-- may still read its log, which ends with project:deleted). 410 when p_since is older
-- than what retention kept.
CREATE FUNCTION synchub.events_for(p_project uuid, p_actor text, p_since bigint, p_limit integer)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_oldest bigint;
    v_events jsonb;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer', true);
    IF p_since IS NULL OR p_since < 0 THEN
        PERFORM synchub.fail('SH400', 'since must be a non-negative seq');
    END IF;
    v_oldest := synchub.oldest_seq(p_project);
    IF p_since + 1 < v_oldest THEN
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

-- Deletes events older than p_keep (retention). Returns how many were removed.
CREATE FUNCTION synchub.prune_events(p_keep interval)
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM synchub.events WHERE created_at < now() - p_keep RETURNING 1)
    SELECT count(*) FROM gone
$$;

ALTER FUNCTION synchub.events_for(uuid, text, bigint, integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION synchub.prune_events(interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION synchub.events_for(uuid, text, bigint, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION synchub.prune_events(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION synchub.events_for(uuid, text, bigint, integer) TO synchub_runtime;
GRANT EXECUTE ON FUNCTION synchub.prune_events(interval) TO synchub_runtime;
