-- read_events is on every event's path to the sockets (each hub reads each new event back
-- from the log). As a SQL-language function behind SECURITY DEFINER it cannot be inlined,
-- so PostgreSQL planned its query, and event_payload's subqueries for every row, on every
-- call: about 1 ms for one event. PL/pgSQL keeps the plan for the session, and the single
-- file events (nearly all of them) join their file row instead of calling event_payload.
-- Same signature, same rows, same payloads (bulk:apply still uses event_payload).
CREATE OR REPLACE FUNCTION synchub.read_events(p_project uuid, p_since bigint, p_limit integer)
RETURNS TABLE (seq bigint, event text, payload jsonb, created_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT e.seq, e.event_type,
        CASE e.event_type
            WHEN 'file:update' THEN jsonb_build_object('file_path', f.file_path, 'file_type', f.file_type,
                'content', f.content, 'content_hash', f.content_hash, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            WHEN 'file:delete' THEN jsonb_build_object('file_path', f.file_path, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            ELSE synchub.event_payload(e)
        END,
        e.created_at
    FROM synchub.events e
    LEFT JOIN synchub.project_files f
        ON e.event_type IN ('file:update', 'file:delete') AND f.id = e.file_ids[1]
    WHERE e.project_id = p_project AND e.seq > p_since
    ORDER BY e.seq
    LIMIT p_limit;
END $$;
-- CREATE OR REPLACE resets SECURITY DEFINER and search_path: expose it again.
SELECT synchub.expose('synchub.read_events(uuid, bigint, integer)');
