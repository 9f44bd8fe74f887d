-- Editor state: one JSON document per user and project (open tabs, cursors), with its
-- own revision.

-- The caller's editor state; revision 0 and no state when none was saved.
CREATE OR REPLACE FUNCTION synchub.get_editor_state(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    RETURN coalesce(
        (SELECT jsonb_build_object('state', state, 'revision', revision, 'updated_at', synchub.ts(updated_at))
         FROM synchub.editor_state WHERE project_id = p_project AND user_id = p_actor),
        jsonb_build_object('state', NULL, 'revision', 0, 'updated_at', NULL));
END $$;

-- Saves the caller's editor state if base_revision is the stored one; else 409 with the
-- server copy (the server wins).
CREATE OR REPLACE FUNCTION synchub.put_editor_state(p_project uuid, p_actor text, p_state jsonb,
                                                    p_base_revision bigint)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_row synchub.editor_state;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    IF octet_length(p_state::text) > (SELECT max_editor_state_bytes FROM synchub.limits) THEN
        PERFORM synchub.fail('SH413', 'editor state is larger than the limit');
    END IF;
    INSERT INTO synchub.editor_state (project_id, user_id, state, revision)
    VALUES (p_project, p_actor, NULL, 0) ON CONFLICT DO NOTHING;
    SELECT * INTO v_row FROM synchub.editor_state
    WHERE project_id = p_project AND user_id = p_actor FOR UPDATE;
    IF p_base_revision IS DISTINCT FROM v_row.revision THEN
        PERFORM synchub.fail('SHR09', 'editor state changed since base_revision',
            jsonb_build_object('server', jsonb_build_object('state', v_row.state, 'revision', v_row.revision,
                'updated_at', CASE WHEN v_row.revision = 0 THEN NULL ELSE synchub.ts(v_row.updated_at) END)));
    END IF;
    UPDATE synchub.editor_state SET state = p_state, revision = revision + 1, updated_at = now()
    WHERE project_id = p_project AND user_id = p_actor RETURNING * INTO v_row;
    RETURN jsonb_build_object('revision', v_row.revision, 'updated_at', synchub.ts(v_row.updated_at));
END $$;
