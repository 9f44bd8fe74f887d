-- Least privilege: the hub's runtime role may only execute the entry-point functions.
-- Entry points are SECURITY DEFINER with a pinned search_path; nothing is executable by
-- PUBLIC; tables are reachable only through the functions (and the current-files view).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'synchub_runtime') THEN
        CREATE ROLE synchub_runtime NOLOGIN;
    END IF;
END $$;

REVOKE ALL ON SCHEMA synchub FROM PUBLIC;
GRANT USAGE ON SCHEMA synchub TO synchub_runtime;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA synchub FROM PUBLIC;
GRANT SELECT ON synchub.project_files_current TO synchub_runtime;

DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'synchub' AND p.proname IN (
            'create_project', 'list_projects', 'get_project', 'rename_project', 'delete_project',
            'restore_project', 'list_members', 'set_member', 'remove_member',
            'upsert_project_file', 'delete_project_file', 'bulk_upsert_project_files',
            'move_project_file', 'list_current_files', 'list_files', 'get_file',
            'read_events', 'oldest_seq', 'get_editor_state', 'put_editor_state',
            'set_project_base', 'project_changes')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', v_fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO synchub_runtime', v_fn);
    END LOOP;
END $$;
