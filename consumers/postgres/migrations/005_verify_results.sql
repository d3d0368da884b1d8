-- The results of `verify --record` and of the monitor's rounds, newest last: what the viewer's
-- banner shows (intact / tampered at seq N / not verified since T). Append-only like the
-- entries: rows refuse UPDATE, DELETE and TRUNCATE (trigger and revoked privileges), so an
-- old "tampered" result cannot be quietly replaced by an "intact" one.
CREATE TABLE verify_results (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    checked_at timestamptz NOT NULL DEFAULT now(),
    tool       text        NOT NULL CHECK (tool IN ('verify', 'monitor')),
    mode       text        NOT NULL CHECK (mode IN ('full', 'incremental')),
    status     text        NOT NULL CHECK (status IN ('intact', 'tampered', 'unchecked')),
    entries    bigint      CHECK (entries >= 0),
    head_seq   bigint      CHECK (head_seq >= 0),
    break_seq  bigint,
    break_kind text,
    detail     text        CHECK (octet_length(detail) <= 8192),
    CHECK (status = 'tampered' OR break_seq IS NULL)
);
CREATE INDEX verify_results_newest ON verify_results (checked_at DESC, id DESC);

CREATE TRIGGER verify_results_append_only BEFORE UPDATE OR DELETE ON verify_results
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER verify_results_no_truncate BEFORE TRUNCATE ON verify_results
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON verify_results FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON verify_results FROM CURRENT_USER;
