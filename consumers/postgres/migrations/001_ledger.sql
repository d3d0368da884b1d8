-- baldur-audit ledger, version 1.
-- Append-only by construction: entries, schemas and the ledger identity refuse
-- UPDATE, DELETE and TRUNCATE (trigger) and the privileges are revoked.

CREATE TABLE ledger_meta (
    id              smallint PRIMARY KEY CHECK (id = 1),
    ledger_id       text        NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    genesis_key_id  text        NOT NULL,
    genesis_link    bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The one mutable row: where the chain ends, and the fencing epoch of its writer.
CREATE TABLE chain_head (
    id          smallint PRIMARY KEY CHECK (id = 1),
    epoch       bigint      NOT NULL,
    last_seq    bigint      NOT NULL,
    last_offset bigint      NOT NULL,
    last_link   bytea       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every writer schema the chainer has seen, so the ledger can be verified on its own.
CREATE TABLE writer_schemas (
    fingerprint bytea PRIMARY KEY,
    schema_json text   NOT NULL,
    first_seq   bigint NOT NULL
);

CREATE TABLE audit_entries (
    seq                bigint      PRIMARY KEY CHECK (seq >= 1),
    kafka_offset       bigint      NOT NULL UNIQUE,
    kafka_timestamp    timestamptz NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('event', 'rejected', 'duplicate')),
    duplicate_of       bigint,
    reject_reason      text,
    event_id           uuid,
    occurred_at        timestamptz,
    actor              text,
    actor_type         text,
    action             text,
    target             text,
    before             jsonb,
    after              jsonb,
    reason             text,
    source             text,
    trace_id           text,
    client_ip          text,
    attributes         jsonb,
    schema_fingerprint bytea,
    payload            bytea,
    digest             bytea       NOT NULL,
    key_id             text        NOT NULL,
    link               bytea       NOT NULL
);

-- First occurrence of an event id wins; later ones are sealed as 'duplicate'.
CREATE UNIQUE INDEX audit_entries_event_first ON audit_entries (event_id) WHERE kind = 'event';
CREATE INDEX audit_entries_target_time ON audit_entries (target, occurred_at);
CREATE INDEX audit_entries_actor_time ON audit_entries (actor, occurred_at);
CREATE INDEX audit_entries_time ON audit_entries (occurred_at);
CREATE INDEX audit_entries_trace ON audit_entries (trace_id) WHERE trace_id IS NOT NULL;

CREATE FUNCTION baldur_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'baldur-audit: % on % is refused: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER writer_schemas_append_only BEFORE UPDATE OR DELETE ON writer_schemas
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER writer_schemas_no_truncate BEFORE TRUNCATE ON writer_schemas
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER ledger_meta_append_only BEFORE UPDATE OR DELETE ON ledger_meta
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER ledger_meta_no_truncate BEFORE TRUNCATE ON ledger_meta
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER chain_head_no_delete BEFORE DELETE ON chain_head
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER chain_head_no_truncate BEFORE TRUNCATE ON chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();

-- Privileges: nobody, not even the owning role, holds UPDATE/DELETE/TRUNCATE on entries.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_entries, writer_schemas, ledger_meta FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_entries, writer_schemas, ledger_meta FROM CURRENT_USER;
REVOKE DELETE, TRUNCATE ON chain_head FROM PUBLIC;
REVOKE DELETE, TRUNCATE ON chain_head FROM CURRENT_USER;
