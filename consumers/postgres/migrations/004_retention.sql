-- Retention and erasure. The one sanctioned change to sealed entries is
-- `baldur_prune`; the one sanctioned deletion of an identity is `baldur_erase`.
--
-- How "only this function" is enforced. The application role owns these tables, so roles
-- cannot tell the function's changes from a plain session's. Two independent checks do:
--   1. the guard trigger reads the call stack (PG_CONTEXT): the outermost frame must be the
--      function itself, called from the top level. A session-settable flag (SET LOCAL
--      baldur.x = on) would be no protection at all, since any session can set any
--      custom setting;
--   2. the trigger also checks the *shape* of the change: an UPDATE may only drop prunable
--      columns and set `pruned_at` (every link input unchanged, the CHECK below holds),
--      and a DELETE may only remove entries at or behind a retention anchor. So even a
--      caller that fakes the stack can do nothing but what retention does, and `verify`
--      then checks that pruned entries form a prefix of the ledger.
-- Residual risk, stated plainly: the tables' owner can drop or disable triggers and a
-- superuser can do anything (session_replication_role = replica skips triggers). That is
-- what the chain is for: verify and replay detect forged values, and a pruned entry keeps
-- only link inputs, so pruning by hand can hide an entry's content but never change it.

ALTER TABLE audit_entries ADD COLUMN pruned_at timestamptz;

-- A pruned entry keeps its link inputs (seq, offset, timestamp, kind, duplicate_of, digest,
-- key_id, link, value_null, view_digest), the reject reason (only its presence is checked)
-- and the event id (the chainer classifies later copies of it as duplicates, CHAIN.md §7).
-- Everything else a reader could see is gone; a CHECK holds even for a superuser whose
-- triggers are off.
ALTER TABLE audit_entries ADD CONSTRAINT audit_entries_pruned_is_empty CHECK (
    pruned_at IS NULL OR (payload IS NULL AND occurred_at IS NULL AND actor IS NULL
        AND actor_type IS NULL AND action IS NULL AND target IS NULL AND before IS NULL
        AND after IS NULL AND reason IS NULL AND source IS NULL AND trace_id IS NULL
        AND client_ip IS NULL AND attributes IS NULL AND schema_fingerprint IS NULL));

-- Where verification starts after whole entries were dropped: entry `seq`'s link and Kafka
-- position, MACed by the retention command with the chain key `key_id` (CHAIN.md-style
-- framing, consumers/retention.py). The database cannot check the MAC: verify does.
CREATE TABLE retention_anchors (
    seq             bigint      PRIMARY KEY CHECK (seq >= 1),
    kafka_offset    bigint      NOT NULL,
    kafka_timestamp timestamptz NOT NULL,
    link            bytea       NOT NULL CHECK (octet_length(link) = 32),
    key_id          text        NOT NULL,
    signature       bytea       NOT NULL CHECK (octet_length(signature) = 32),
    entries_deleted bigint      NOT NULL CHECK (entries_deleted >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The event ids of event entries dropped behind an anchor, with their seq: a later copy of
-- one is still a duplicate of it (CHAIN.md §7), so the chainer's first-occurrence lookup
-- must read this table as well as audit_entries.
CREATE TABLE retired_events (
    event_id uuid   PRIMARY KEY,
    seq      bigint NOT NULL
);

-- Pseudonym -> identity (producers/pseudonym.py). Loaded by `baldur-audit identities sync`;
-- a row leaves only through `baldur_erase`, and an erased pseudonym is never loaded again.
CREATE TABLE identities (
    pseudonym  text        PRIMARY KEY CHECK (pseudonym ~ '^psn1-[0-9a-f]{64}$'),
    identity   text        NOT NULL,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);

-- Every erasure: which pseudonym, who asked, why, and the ledger event that records it.
CREATE TABLE erasures (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pseudonym text        NOT NULL CHECK (pseudonym ~ '^psn1-[0-9a-f]{64}$'),
    who       text        NOT NULL CHECK (btrim(who) <> ''),
    why       text        NOT NULL CHECK (btrim(why) <> ''),
    event_id  uuid        NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_pseudonym ON erasures (pseudonym);

-- True when the outermost PL/pgSQL frame of the current call stack is `fn`, called from the
-- top level (its frame is the last line of PG_CONTEXT).
CREATE FUNCTION baldur_called_by(fn text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    stack text;
    frames text[];
BEGIN
    GET DIAGNOSTICS stack = PG_CONTEXT;
    frames := regexp_split_to_array(stack, E'\n');
    RETURN frames[array_upper(frames, 1)] ~ ('^PL/pgSQL function ' || fn || '\([a-z, ]*\) line [0-9]+ at SQL statement$');
END
$$;

CREATE FUNCTION baldur_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT baldur_called_by('baldur_prune') THEN
        RAISE EXCEPTION 'baldur-audit: % on % is refused: the ledger is append-only (retention goes '
            'through baldur_prune)', TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM retention_anchors WHERE seq >= OLD.seq) THEN
            RAISE EXCEPTION 'baldur-audit: entry % is not behind a retention anchor', OLD.seq
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.pruned_at IS NOT NULL OR NEW.pruned_at IS NULL
        OR (NEW.seq, NEW.kafka_offset, NEW.kafka_timestamp, NEW.kind, NEW.duplicate_of,
            NEW.reject_reason, NEW.event_id, NEW.digest, NEW.key_id, NEW.link, NEW.value_null,
            NEW.view_digest)
           IS DISTINCT FROM
           (OLD.seq, OLD.kafka_offset, OLD.kafka_timestamp, OLD.kind, OLD.duplicate_of,
            OLD.reject_reason, OLD.event_id, OLD.digest, OLD.key_id, OLD.link, OLD.value_null,
            OLD.view_digest) THEN
        RAISE EXCEPTION 'baldur-audit: entry % may only be pruned, not changed', OLD.seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_retention_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION baldur_entries_guard();

CREATE FUNCTION baldur_identities_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- An erased person stays erased, whatever a later sync re-reads from the topic.
        IF EXISTS (SELECT 1 FROM erasures WHERE pseudonym = NEW.pseudonym) THEN
            RETURN NULL;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND baldur_called_by('baldur_erase') THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'baldur-audit: % on identities is refused (erasure goes through baldur_erase)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER identities_guard BEFORE INSERT OR UPDATE OR DELETE ON identities
    FOR EACH ROW EXECUTE FUNCTION baldur_identities_guard();
CREATE TRIGGER identities_no_truncate BEFORE TRUNCATE ON identities
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER retention_anchors_append_only BEFORE UPDATE OR DELETE ON retention_anchors
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER retention_anchors_no_truncate BEFORE TRUNCATE ON retention_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER retired_events_append_only BEFORE UPDATE OR DELETE ON retired_events
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER retired_events_no_truncate BEFORE TRUNCATE ON retired_events
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER erasures_append_only BEFORE UPDATE OR DELETE ON erasures
    FOR EACH ROW EXECUTE FUNCTION baldur_refuse_change();
CREATE TRIGGER erasures_no_truncate BEFORE TRUNCATE ON erasures
    FOR EACH STATEMENT EXECUTE FUNCTION baldur_refuse_change();

-- The cut: the longest prefix of the ledger whose entries are all older than `older_than`
-- by their broker timestamp (pruned entries always form a prefix, which verify checks).
CREATE FUNCTION baldur_retention_cut(older_than interval) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT min(seq) - 1 FROM audit_entries WHERE kafka_timestamp >= now() - older_than),
        (SELECT max(seq) FROM audit_entries), 0)
$$;

-- mode 'payload': drop the payload and every prunable column of entries up to the cut.
-- mode 'entries': delete entries up to `up_to_seq` behind a new anchor at `up_to_seq`, whose
-- MAC (`anchor_signature` under `anchor_key_id`) the caller computed over that entry.
-- `up_to_seq`, when given, must not pass the cut. Returns (cut, entries changed).
CREATE FUNCTION baldur_prune(older_than interval, mode text, up_to_seq bigint DEFAULT NULL,
                             anchor_key_id text DEFAULT NULL, anchor_signature bytea DEFAULT NULL)
RETURNS TABLE (cut_seq bigint, changed bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    cut bigint;
    n bigint := 0;
    anchored bigint;
    e record;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'baldur-audit: older_than must be a non-negative interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One prune at a time ("baldur-prune" as the advisory lock key).
    PERFORM pg_advisory_xact_lock(7084291337152833);
    cut := baldur_retention_cut(older_than);
    IF up_to_seq IS NOT NULL THEN
        IF up_to_seq > cut THEN
            RAISE EXCEPTION 'baldur-audit: entries up to seq % are not all older than %', up_to_seq, older_than
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        cut := up_to_seq;
    END IF;
    IF mode = 'payload' THEN
        UPDATE audit_entries SET payload = NULL, occurred_at = NULL, actor = NULL,
            actor_type = NULL, action = NULL, target = NULL, before = NULL, after = NULL,
            reason = NULL, source = NULL, trace_id = NULL, client_ip = NULL, attributes = NULL,
            schema_fingerprint = NULL, pruned_at = now()
        WHERE seq <= cut AND pruned_at IS NULL;
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSIF mode = 'entries' THEN
        IF up_to_seq IS NULL OR anchor_key_id IS NULL OR anchor_signature IS NULL THEN
            RAISE EXCEPTION 'baldur-audit: dropping entries needs a signed anchor (up_to_seq, key id, signature)'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT coalesce(max(seq), 0) INTO anchored FROM retention_anchors;
        IF cut > anchored THEN
            SELECT seq, kafka_offset, kafka_timestamp, link INTO e FROM audit_entries WHERE seq = cut;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'baldur-audit: entry % does not exist', cut
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            INSERT INTO retention_anchors (seq, kafka_offset, kafka_timestamp, link, key_id,
                                           signature, entries_deleted)
            SELECT e.seq, e.kafka_offset, e.kafka_timestamp, e.link, anchor_key_id,
                   anchor_signature, count(*) FROM audit_entries WHERE seq <= cut;
            INSERT INTO retired_events (event_id, seq)
                SELECT a.event_id, a.seq FROM audit_entries a
                WHERE a.seq <= cut AND a.kind = 'event' AND a.event_id IS NOT NULL;
            DELETE FROM audit_entries WHERE seq <= cut;
            GET DIAGNOSTICS n = ROW_COUNT;
        END IF;
    ELSE
        RAISE EXCEPTION 'baldur-audit: unknown prune mode % (payload or entries)', mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT cut, n;
END
$$;

-- Delete one person's mapping, recording who asked and why (the caller has already put the
-- erasure event on the topic: `event_id`). Returns whether a mapping was deleted.
CREATE FUNCTION baldur_erase(pseudonym text, who text, why text, event_id uuid)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    n bigint;
BEGIN
    INSERT INTO erasures (pseudonym, who, why, event_id)
        VALUES (baldur_erase.pseudonym, baldur_erase.who, baldur_erase.why, baldur_erase.event_id);
    DELETE FROM identities i WHERE i.pseudonym = baldur_erase.pseudonym;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;

-- The functions run as the owner, which 001 stripped of UPDATE/DELETE on entries: give back
-- exactly what pruning needs (the prunable columns and the marker; DELETE for anchors). The
-- owner could grant itself anything anyway; the guard trigger is what refuses other changes.
GRANT UPDATE (payload, occurred_at, actor, actor_type, action, target, before, after, reason,
              source, trace_id, client_ip, attributes, schema_fingerprint, pruned_at),
      DELETE ON audit_entries TO CURRENT_USER;
-- Application roles that should prune or erase are granted EXECUTE explicitly.
REVOKE EXECUTE ON FUNCTION baldur_prune(interval, text, bigint, text, bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION baldur_erase(text, text, text, uuid) FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON retention_anchors, erasures, retired_events FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON retention_anchors, erasures, retired_events FROM CURRENT_USER;
REVOKE UPDATE, DELETE, TRUNCATE ON identities FROM PUBLIC;
