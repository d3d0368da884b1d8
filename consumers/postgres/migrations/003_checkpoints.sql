-- Merkle tree over the entries (schemas/CHAIN.md §13-14) and signed checkpoints (§15).
-- Append-only like audit_entries: nodes and checkpoints refuse UPDATE, DELETE and TRUNCATE
-- (trigger and revoked privileges); the one-row merkle_tree may only grow.

-- Every perfect subtree hash: node (level, idx) covers leaves [idx * 2^level, (idx+1) * 2^level).
-- Written once, when its last leaf is appended; level 0 holds the leaf hashes.
CREATE TABLE merkle_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- How far the tree reaches: its size (entries seq 1..size), its frontier (CHAIN.md §14,
-- persisted form) and the link of entry `size` (the genesis link at size 0), from which the
-- builder checks the links of the entries it appends.
CREATE TABLE merkle_tree (
    id         smallint    PRIMARY KEY CHECK (id = 1),
    size       bigint      NOT NULL CHECK (size >= 0),
    frontier   bytea       NOT NULL,
    head_link  bytea       NOT NULL CHECK (octet_length(head_link) = 32),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Signed checkpoints, each also published to the witness topic (and directory) before it is
-- stored here: this table is a convenience for `prove`, the witness is the evidence.
CREATE TABLE checkpoints (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root       bytea       NOT NULL CHECK (octet_length(root) = 32),
    head_seq   bigint      NOT NULL CHECK (head_seq = tree_size),
    head_link  bytea       NOT NULL CHECK (octet_length(head_link) = 32),
    note       text        NOT NULL,
    signed_at  timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkpoints_tree_size ON checkpoints (tree_size, id);

CREATE FUNCTION baldur_tree_only_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.size < OLD.size THEN
        RAISE EXCEPTION 'baldur-audit: the merkle tree cannot shrink (size % to %)', OLD.size, NEW.size
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER merkle_tree_no_delete BEFORE DELETE ON merkle_tree
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER merkle_tree_no_truncate BEFORE TRUNCATE ON merkle_tree
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER merkle_tree_only_grows BEFORE UPDATE ON merkle_tree
    FOR EACH ROW EXECUTE FUNCTION baldur_tree_only_grows();

REVOKE UPDATE, DELETE, TRUNCATE ON merkle_nodes, checkpoints FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON merkle_nodes, checkpoints FROM CURRENT_USER;
REVOKE DELETE, TRUNCATE ON merkle_tree FROM PUBLIC;
REVOKE DELETE, TRUNCATE ON merkle_tree FROM CURRENT_USER;
