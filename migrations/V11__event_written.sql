-- The event a write just made, as read_events gives it, read inside the write's own
-- statement: `SELECT w.*, e.* FROM synchub.upsert_project_file(...) w LEFT JOIN LATERAL
-- synchub.event_written($1, w.seq) e ON true`. The hub hands that frame to its own
-- subscribers as soon as the statement returns (after the commit), instead of waking a feed
-- that reads it back from the log: one round trip less between a write and its event
-- (BENCHMARKS.md, #2). VOLATILE on purpose: each of its queries takes a fresh snapshot, so
-- it sees the rows the write inserted earlier in the same statement (a STABLE function
-- would see the statement's starting snapshot, without them).
CREATE FUNCTION synchub.event_written(p_project uuid, p_seq bigint)
RETURNS TABLE (event text, payload text, created_us bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT r.event, r.payload::text, (extract(epoch FROM r.created_at) * 1000000)::bigint
    FROM synchub.read_events(p_project, p_seq - 1, 1) r
    WHERE r.seq = p_seq;
END $$;
SELECT synchub.expose('synchub.event_written(uuid, bigint)');
