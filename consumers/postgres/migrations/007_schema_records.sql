-- Schema records (schemas/CHAIN.md §19): writer schemas published to the topic itself. An
-- accepted one is sealed as an entry of kind 'schema', and its schema is stored in
-- writer_schemas with first_seq = that entry's seq (the seq from which it is known).
ALTER TABLE audit_entries DROP CONSTRAINT audit_entries_kind_check;
ALTER TABLE audit_entries ADD CONSTRAINT audit_entries_kind_check
    CHECK (kind IN ('event', 'rejected', 'duplicate', 'schema'));

-- From which seq the sealers of this ledger apply a classification rule: 'schema-records'
-- is written by the first chainer that knows schema records, at the seq after its head when
-- it takes the chain over (1 for a new ledger). Before it (and with no row), a value framed
-- as a schema record was classified as any other bytes: rejected. Replay follows it.
CREATE TABLE chain_rules (
    name     text   PRIMARY KEY,
    from_seq bigint NOT NULL CHECK (from_seq >= 1)
);
CREATE TRIGGER chain_rules_append_only BEFORE UPDATE OR DELETE ON chain_rules
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER chain_rules_no_truncate BEFORE TRUNCATE ON chain_rules
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON chain_rules FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON chain_rules FROM CURRENT_USER;
