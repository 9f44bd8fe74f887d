-- Reading the event log over HTTP (and replay on join): frames exactly as the realtime
-- socket sends them, the retention check, and pruning.

-- Makes a function an entry point of the hub's runtime role: SECURITY DEFINER with a
-- pinned search_path, not executable by PUBLIC, executable by synchub_runtime.
CREATE FUNCTION synchub.expose(p_fn regprocedure) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', p_fn);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', p_fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO synchub_runtime', p_fn);
END $$;
REVOKE EXECUTE ON FUNCTION synchub.expose(regprocedure) FROM PUBLIC;

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

SELECT synchub.expose('synchub.events_for(uuid, text, bigint, integer)');
SELECT synchub.expose('synchub.prune_events(interval)');
