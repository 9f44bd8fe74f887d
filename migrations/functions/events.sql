-- The event log as readers see it: payloads, replay after a seq, retention.

-- An event's payload as the contract spells it, built from the file rows it produced.
-- A version the history task compacted has no content of its own: version_text rebuilds
-- it (history.sql), so a client resuming from an old seq still gets the full text.
CREATE OR REPLACE FUNCTION synchub.event_payload(e synchub.events)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE e.event_type
        WHEN 'project:deleted' THEN jsonb_build_object('timestamp', synchub.ts(e.created_at))
        WHEN 'file:update' THEN (
            SELECT jsonb_build_object('file_path', f.file_path, 'file_type', f.file_type,
                'content_hash', f.content_hash, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
                -- binary files carry blob {sha256, size} instead of content (blobs.sql)
                || CASE WHEN f.blob_sha256 IS NULL THEN jsonb_build_object('content', coalesce(f.content, synchub.version_text(f.project_id, f.id)))
                        ELSE jsonb_build_object('blob', jsonb_build_object('sha256', f.blob_sha256, 'size', f.size)) END
            FROM synchub.project_files f WHERE f.project_id = e.project_id AND f.id = e.file_ids[1])
        WHEN 'file:delete' THEN (
            SELECT jsonb_build_object('file_path', f.file_path, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            FROM synchub.project_files f WHERE f.project_id = e.project_id AND f.id = e.file_ids[1])
        ELSE (
            SELECT jsonb_build_object(
                'files', coalesce(jsonb_agg(jsonb_build_object('file_path', f.file_path,
                    'file_type', f.file_type, 'content_hash', f.content_hash, 'version', f.version)
                    -- binary files carry blob {sha256, size} instead of content (blobs.sql)
                    || CASE WHEN f.blob_sha256 IS NULL THEN jsonb_build_object('content', coalesce(f.content, synchub.version_text(f.project_id, f.id)))
                            ELSE jsonb_build_object('blob', jsonb_build_object('sha256', f.blob_sha256, 'size', f.size)) END
                    ORDER BY f.file_path) FILTER (WHERE NOT f.is_deleted), '[]'),
                'deletes', coalesce(jsonb_agg(jsonb_build_object('file_path', f.file_path,
                    'version', f.version) ORDER BY f.file_path) FILTER (WHERE f.is_deleted), '[]'),
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            FROM synchub.project_files f WHERE f.project_id = e.project_id AND f.id = ANY (e.file_ids))
    END
$$;

-- The rows of the events after p_since (what read_events returns), as one query in a plain
-- SQL function: no SECURITY DEFINER and no SET, so PostgreSQL inlines it into the query of
-- each function below, which keeps its plan for the session. A function layer (PL/pgSQL,
-- SECURITY DEFINER, its SETs) costs about as much as this query does for one event; this
-- way each caller pays one. Not executable by the hub's role: only through those.
CREATE OR REPLACE FUNCTION synchub.event_rows(p_project uuid, p_since bigint, p_limit integer)
RETURNS TABLE (seq bigint, event text, payload jsonb, created_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT e.seq, e.event_type,
        CASE e.event_type
            WHEN 'file:update' THEN jsonb_build_object('file_path', f.file_path, 'file_type', f.file_type,
                'content_hash', f.content_hash, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
                -- binary files carry blob {sha256, size} instead of content (blobs.sql)
                || CASE WHEN f.blob_sha256 IS NULL THEN jsonb_build_object('content', coalesce(f.content, synchub.version_text(f.project_id, f.id)))
                        ELSE jsonb_build_object('blob', jsonb_build_object('sha256', f.blob_sha256, 'size', f.size)) END
            WHEN 'file:delete' THEN jsonb_build_object('file_path', f.file_path, 'version', f.version,
                'timestamp', synchub.ts(e.created_at), 'actor', e.actor, 'op_id', e.op_id)
            ELSE synchub.event_payload(e)
        END,
        e.created_at
    FROM synchub.events e
    -- The event's version row, by a range on the primary key read in its order: the one
    -- plan that needs no sort, so it is chosen whatever the statistics say (the ON clause
    -- keeps the row only if it is that version). As a plain equality join, the plan made
    -- while the tables were (nearly) empty (a new hub, before autovacuum's first ANALYZE;
    -- this function keeps one plan per connection) searched another index by project_id
    -- alone and filtered every version of the project per event: without statistics every
    -- index probe costs the same. Test
    -- sql_functions::reading_new_events_reads_a_few_rows_however_many_files_the_project_has.
    LEFT JOIN LATERAL (
        SELECT f.* FROM synchub.project_files f
        WHERE f.project_id = e.project_id AND f.id >= e.file_ids[1]
        ORDER BY f.id LIMIT 1
    ) f ON e.event_type IN ('file:update', 'file:delete') AND f.id = e.file_ids[1]
    WHERE e.project_id = p_project AND e.seq > p_since
    ORDER BY e.seq
    LIMIT p_limit
$$;

-- Events with seq > p_since, oldest first, as (seq, event, payload, committed_at). No role
-- check: callers are the hub's fan-out (after it authorized the subscriber) and events_for.
-- It is on every event's path to the sockets (each hub reads each new event back from the
-- log): PL/pgSQL over the inlined event_rows, because a SQL-language function behind
-- SECURITY DEFINER cannot be inlined and was planned again, with event_payload's
-- subqueries for every row, on every call (about 1 ms for one event); PL/pgSQL keeps the
-- plan for the session. Single-file events (nearly all of them) join their file row
-- instead of calling event_payload.
-- plan_cache_mode = force_generic_plan (issue 16): under the default (auto) PL/pgSQL kept
-- building a custom plan for every call, because the generic plan's estimate for
-- `seq > $2` never looked cheaper: ~0.35 ms of planning per call, more than the query. The
-- generic plan is the same index scan on events (project_id, seq) with the file row by its
-- primary key. It does not outlive the statistics it was made with: ANALYZE (and
-- autovacuum's) invalidates cached plans of the tables it touches, so the plan made against
-- a fresh, empty log is re-made once the log grows (checked on PostgreSQL 15; see
-- docs/BENCHMARKS.md, "perf").
CREATE OR REPLACE FUNCTION synchub.read_events(p_project uuid, p_since bigint, p_limit integer)
RETURNS TABLE (seq bigint, event text, payload jsonb, created_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY SELECT * FROM synchub.event_rows(p_project, p_since, p_limit);
END $$;

-- The event a write made earlier in this same statement, as read_events returns it (one
-- definition of every payload: event_rows). The hub's write statements end with
-- `LEFT JOIN LATERAL synchub.write_event(<project>, w.seq) ON true`, so the frame of its
-- own write comes back with the write's answer and needs no read of the log after the
-- commit (src/realtime/broker.rs, `offer`). VOLATILE on purpose: a volatile function's
-- queries take a fresh snapshot and see what the write just did in this transaction; a
-- STABLE one would read with the calling statement's snapshot, taken before the write.
-- An op_id replay answers an earlier seq: then this returns that earlier event (or
-- nothing once retention dropped it), which every feed has already delivered.
CREATE OR REPLACE FUNCTION synchub.write_event(p_project uuid, p_seq bigint)
RETURNS TABLE (event text, payload jsonb, created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY SELECT r.event, r.payload, r.created_at
    FROM synchub.event_rows(p_project, p_seq - 1, 1) r WHERE r.seq = p_seq;
END $$;

-- The oldest seq still in the log (last_seq + 1 when the log is empty).
CREATE OR REPLACE FUNCTION synchub.oldest_seq(p_project uuid) RETURNS bigint
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT min(seq) FROM synchub.events WHERE project_id = p_project),
                    (SELECT last_seq + 1 FROM synchub.projects WHERE id = p_project))
$$;

-- Events after p_since for a reader (viewer or better; a tombstoned project's members may
-- still read its log, which ends with project:deleted). 410 when p_since is older than what
-- retention kept. since and limit are integers in 0..2^53-1, and the retention test is
-- written so it cannot overflow.
CREATE OR REPLACE FUNCTION synchub.events_for(p_project uuid, p_actor text, p_since bigint,
                                              p_limit integer)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_oldest bigint;
    v_events jsonb;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer', true);
    IF p_since IS NULL THEN
        PERFORM synchub.fail('SH400', 'since is required');
    END IF;
    PERFORM synchub.check_counter('since', to_jsonb(p_since));
    PERFORM synchub.check_counter('limit', to_jsonb(p_limit));
    v_oldest := synchub.oldest_seq(p_project);
    IF p_since < v_oldest - 1 THEN
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
CREATE OR REPLACE FUNCTION synchub.prune_events(p_keep interval)
RETURNS bigint LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM synchub.events WHERE created_at < now() - p_keep RETURNING 1)
    SELECT count(*) FROM gone
$$;
