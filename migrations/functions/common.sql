-- Helpers every concern uses: errors, timestamps, counters, content hashes.
--
-- How the files in this folder work: each function has exactly one definition in the
-- tree, in the file of its concern, written CREATE OR REPLACE. Every migrate applies all
-- of them again, in one transaction under the migration lock, after the numbered
-- migrations (src/db/functions.rs); functions no file defines any more are dropped, and
-- privileges are set from the definitions: nothing is executable by PUBLIC, and every
-- SECURITY DEFINER function (the entry points: each says so in its own definition, with
-- SET search_path = pg_catalog, pg_temp) is executable by synchub_runtime.
--
-- Every operation the hub performs is one entry-point function, each one transaction, so
-- direct callers (operators, importers) get the same rules and errors. Errors are raised
-- with synchub's own SQLSTATEs; the hub maps each one once to the contract's error codes,
-- and DETAIL carries the error details as JSON:
--   SH400 invalid_request   SHP00 invalid_path      SH403 forbidden
--   SH404 not_found         SH409 version_conflict  SHR09 revision_conflict
--   SHA09 already_exists    SH410 history_trimmed   SH413 payload_too_large
--   SHQ03 quota_exceeded    SH415 unsupported_content SHO09 op_id_reused
--   SHT10 history_trimmed (a file version removed by history retention)

-- Raises one of the codes listed above; DETAIL is the JSON details object (or empty).
CREATE OR REPLACE FUNCTION synchub.fail(p_code text, p_message text,
                                        p_detail jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message,
        DETAIL = coalesce(p_detail::text, '');
END $$;

-- Timestamps in the contract's shape: 2026-11-22T10:00:00.000Z.
CREATE OR REPLACE FUNCTION synchub.ts(p timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Raises SH400 unless p_value (a JSON number, or null/absent) is an integer in 0..2^53-1,
-- so JavaScript clients hold it exactly and no bigint arithmetic can overflow.
CREATE OR REPLACE FUNCTION synchub.check_counter(p_name text, p_value jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(p_value) <> 'number' OR p_value::text::numeric <> trunc(p_value::text::numeric)
        OR p_value::text::numeric < 0 OR p_value::text::numeric > 9007199254740991 THEN
        PERFORM synchub.fail('SH400', format('%s must be an integer from 0 to 9007199254740991', p_name));
    END IF;
END $$;

-- The content_hash of the contract: hex SHA-256 of the UTF-8 bytes.
CREATE OR REPLACE FUNCTION synchub.content_hash(p_content text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(p_content, 'UTF8')), 'hex')
$$;
