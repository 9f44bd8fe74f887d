-- GitHub-linked projects: the repository tree at base_commit and the uncommitted changes
-- relative to it.

-- Records the repository tree at p_commit as the base; with p_apply the project's files
-- become exactly that tree in one change (one bulk:apply). A tree that names a path twice
-- is refused before anything is written.
CREATE OR REPLACE FUNCTION synchub.set_project_base(p_project uuid, p_actor text, p_commit text,
                                                    p_files jsonb, p_apply boolean)
RETURNS jsonb LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project synchub.projects;
    v_upserts jsonb;
    v_deletes jsonb;
    v_result jsonb;
    v_twice text;
BEGIN
    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project FOR UPDATE;
    PERFORM synchub.authorize(p_project, p_actor, 'owner');
    IF v_project.source_kind <> 'github' THEN
        PERFORM synchub.fail('SH400', 'the project is not linked to a GitHub repository');
    END IF;
    IF p_commit IS NULL OR p_commit !~ '^[0-9a-fA-F]{7,64}$' THEN
        PERFORM synchub.fail('SH400', 'commit must be a hex commit sha');
    END IF;
    IF jsonb_typeof(p_files) IS DISTINCT FROM 'array' THEN
        PERFORM synchub.fail('SH400', 'files must be an array');
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_files) n
               WHERE jsonb_typeof(n.value) <> 'object'
                  OR jsonb_typeof(n.value -> 'path') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(n.value -> 'content') IS DISTINCT FROM 'string') THEN
        PERFORM synchub.fail('SH400', 'every file needs a string "path" and a string "content"');
    END IF;
    SELECT n.value ->> 'path' INTO v_twice FROM jsonb_array_elements(p_files) n
    GROUP BY n.value ->> 'path' HAVING count(*) > 1 LIMIT 1;
    IF v_twice IS NOT NULL THEN
        PERFORM synchub.fail('SH400', 'a path appears twice in the tree', jsonb_build_object('path', v_twice));
    END IF;
    IF p_apply THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', n.value ->> 'path', 'content', n.value -> 'content')), '[]')
        INTO v_upserts
        FROM jsonb_array_elements(p_files) n
        LEFT JOIN synchub.project_files_current c ON c.project_id = p_project AND c.file_path = n.value ->> 'path'
        WHERE c.content_hash IS DISTINCT FROM synchub.content_hash(n.value ->> 'content');
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', c.file_path)), '[]') INTO v_deletes
        FROM synchub.project_files_current c
        WHERE c.project_id = p_project
          AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_files) n WHERE n.value ->> 'path' = c.file_path);
        IF jsonb_array_length(v_upserts) + jsonb_array_length(v_deletes) > 0 THEN
            v_result := synchub.apply_change(p_project, v_upserts, v_deletes, p_actor, NULL, 'bulk:apply', 'base',
                NULL, (SELECT max_files_per_project * 2 FROM synchub.limits));
        END IF;
    ELSE
        -- Validate the tree even when it is only recorded.
        PERFORM synchub.check_path(n.value ->> 'path') FROM jsonb_array_elements(p_files) n;
    END IF;
    DELETE FROM synchub.project_base_files WHERE project_id = p_project;
    INSERT INTO synchub.project_base_files (project_id, file_path, content_hash)
    SELECT p_project, n.value ->> 'path', synchub.content_hash(n.value ->> 'content')
    FROM jsonb_array_elements(p_files) n;
    UPDATE synchub.projects SET base_commit = p_commit, revision = revision + 1, updated_at = now()
    WHERE id = p_project;
    RETURN jsonb_build_object('base_commit', p_commit, 'file_count', jsonb_array_length(p_files),
                              'applied', v_result IS NOT NULL, 'seq', v_result -> 'seq');
END $$;

-- Uncommitted work of a GitHub-linked project, relative to its base tree.
CREATE OR REPLACE FUNCTION synchub.project_changes(p_project uuid, p_actor text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_project synchub.projects;
BEGIN
    PERFORM synchub.authorize(p_project, p_actor, 'viewer');
    SELECT * INTO v_project FROM synchub.projects WHERE id = p_project;
    IF v_project.source_kind <> 'github' THEN
        PERFORM synchub.fail('SH400', 'the project is not linked to a GitHub repository');
    END IF;
    RETURN jsonb_build_object('base_commit', v_project.base_commit, 'changes', (
        SELECT coalesce(jsonb_agg(jsonb_build_object('path', coalesce(c.file_path, b.file_path),
            'status', CASE WHEN b.file_path IS NULL THEN 'added'
                           WHEN c.file_path IS NULL THEN 'deleted' ELSE 'modified' END)
            ORDER BY coalesce(c.file_path, b.file_path)), '[]')
        FROM (SELECT file_path, content_hash FROM synchub.project_files_current WHERE project_id = p_project) c
        FULL JOIN (SELECT file_path, content_hash FROM synchub.project_base_files WHERE project_id = p_project) b
            ON b.file_path = c.file_path
        WHERE c.content_hash IS DISTINCT FROM b.content_hash));
END $$;
