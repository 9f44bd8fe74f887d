-- synchub baseline: the tables, the view, the runtime role and its grants.
-- The database is the source of truth: versions, seq, quotas and roles are decided here,
-- inside one transaction per change. The functions that decide them are not here: each
-- has one definition in migrations/functions/<concern>.sql, applied again on every
-- migrate (src/db/functions.rs). A later change to a table is a new V<n>__*.sql file.
--
-- Ready to be distributed by project (Citus, docs/SCALING.md): every table that holds a
-- project's data has project_id in its primary key and in every unique constraint, and
-- references other project tables through it; projects itself is keyed by its id. Only
-- limits and user_usage are not project data. tests/api/schema.rs checks it.

CREATE SCHEMA IF NOT EXISTS synchub;

-- Limits the SQL functions enforce (CONTRACT section 7). One row; the hub writes its
-- configured values here at start so direct SQL callers get the same rules.
CREATE TABLE synchub.limits (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_file_bytes integer NOT NULL DEFAULT 2097152,
    max_files_per_project integer NOT NULL DEFAULT 10000,
    max_projects_per_user integer NOT NULL DEFAULT 50,
    max_bytes_per_user bigint NOT NULL DEFAULT 209715200,
    max_bulk_entries integer NOT NULL DEFAULT 2000,
    max_editor_state_bytes integer NOT NULL DEFAULT 262144
);
INSERT INTO synchub.limits DEFAULT VALUES;

CREATE TABLE synchub.projects (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    owner_id text NOT NULL,
    source_kind text NOT NULL DEFAULT 'cloud' CHECK (source_kind IN ('cloud', 'github')),
    source_repo text,
    source_ref text,
    base_commit text,
    revision bigint NOT NULL DEFAULT 1,
    last_seq bigint NOT NULL DEFAULT 0,
    file_count integer NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX projects_owner ON synchub.projects (owner_id);

CREATE TABLE synchub.project_members (
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON synchub.project_members (user_id);

-- Stored bytes per user (current content of the projects they own), kept as a counter
-- that every change updates under a row lock, so parallel writers cannot overshoot.
CREATE TABLE synchub.user_usage (
    user_id text PRIMARY KEY,
    stored_bytes bigint NOT NULL DEFAULT 0
);

-- Every version of every file. A delete is a tombstone version (is_deleted, no content).
-- file_path uses the "C" collation so ordering is byte order everywhere.
CREATE TABLE synchub.project_files (
    id bigint GENERATED ALWAYS AS IDENTITY,
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    file_path text COLLATE "C" NOT NULL,
    file_type text NOT NULL,
    content text,
    content_hash text,
    size integer NOT NULL DEFAULT 0,
    version integer NOT NULL,
    parent_version_id bigint,
    is_current_version boolean NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false,
    seq bigint NOT NULL,
    created_by text NOT NULL,
    last_modified_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, parent_version_id) REFERENCES synchub.project_files (project_id, id),
    UNIQUE (project_id, file_path, version),
    CHECK (is_deleted = (content IS NULL))
);
CREATE UNIQUE INDEX project_files_current_path
    ON synchub.project_files (project_id, file_path) WHERE is_current_version;

CREATE VIEW synchub.project_files_current AS
SELECT id, project_id, file_path, file_type, content, content_hash, size, version,
       parent_version_id, seq, created_by, last_modified_by, created_at, updated_at
FROM synchub.project_files
WHERE is_current_version AND NOT is_deleted;

-- The event log: one row per committed change, numbered 1, 2, 3 … per project with no
-- gap (seq comes from projects.last_seq under the project row lock). Payloads are built
-- from the file rows, so content is stored once.
CREATE TABLE synchub.events (
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    event_type text NOT NULL
        CHECK (event_type IN ('file:update', 'file:delete', 'bulk:apply', 'project:deleted')),
    file_ids bigint[] NOT NULL DEFAULT '{}',
    actor text NOT NULL,
    op_id uuid,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project_id, seq)
);

-- Results of writes that carried an op_id, so a retry returns the first result, and what
-- the op_id was used for (kind, hash of actor and arguments), so reusing it for another
-- write is refused. Looked up by op_id alone: one op_id cannot be spent in two projects.
CREATE TABLE synchub.applied_ops (
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    op_id uuid NOT NULL,
    result jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    op_kind text NOT NULL,
    args_hash text NOT NULL,
    PRIMARY KEY (project_id, op_id)
);
CREATE INDEX applied_ops_op_id ON synchub.applied_ops (op_id);

CREATE TABLE synchub.editor_state (
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    state jsonb,
    revision bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);

-- The repository tree at base_commit (GitHub-linked projects), for the `changes` view.
CREATE TABLE synchub.project_base_files (
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    file_path text COLLATE "C" NOT NULL,
    content_hash text NOT NULL,
    PRIMARY KEY (project_id, file_path)
);

-- Preview-container sessions (scoped, revocable, with the agent's progress) and the
-- snapshot catalogue (archives live in object storage; rows say what they contain).
CREATE TABLE synchub.sessions (
    id uuid NOT NULL,
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    token_ttl_seconds integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    applied_seq bigint NOT NULL DEFAULT 0,
    sockets integer NOT NULL DEFAULT 0 CHECK (sockets >= 0),
    last_seen_at timestamptz,
    PRIMARY KEY (project_id, id)
);
-- GET and DELETE /v1/sessions/{id} name the session alone.
CREATE INDEX sessions_id ON synchub.sessions (id);

CREATE TABLE synchub.snapshots (
    id uuid NOT NULL,
    project_id uuid NOT NULL REFERENCES synchub.projects (id) ON DELETE CASCADE,
    cursor bigint NOT NULL,
    storage_key text NOT NULL,
    sha256 text NOT NULL,
    bytes bigint NOT NULL,
    file_count integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX snapshots_project_latest ON synchub.snapshots (project_id, cursor DESC, created_at DESC);

-- Least privilege: the hub's runtime role may only execute the entry-point functions
-- (SECURITY DEFINER, pinned search_path; granted after every migrate by
-- src/db/functions.rs) and read the current-files view. Nothing is reachable by PUBLIC.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'synchub_runtime') THEN
        CREATE ROLE synchub_runtime NOLOGIN;
    END IF;
END $$;

REVOKE ALL ON SCHEMA synchub FROM PUBLIC;
GRANT USAGE ON SCHEMA synchub TO synchub_runtime;
GRANT SELECT ON synchub.project_files_current TO synchub_runtime;
