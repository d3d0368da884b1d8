-- The head only moves forward. The chainer's role needs UPDATE on chain_head (it moves the head
-- and bumps the fencing epoch), so a stolen chainer credential could rewind or re-point the head
-- (a cut tail then passes a chain walk). This guard accepts an update of the head only when the
-- epoch does not decrease, last_seq does not decrease, and (last_seq, last_offset, last_link)
-- name what is stored: an entry's seq, Kafka offset and link (or a retention anchor's, when
-- `baldur_prune` dropped that entry behind its anchor; or, before the first entry, seq 0, offset
-- -1 and the genesis link). A take-over, which only bumps the epoch, is not looked up.
-- The owner can still disable this trigger (README, "Append-only and the privilege model").

CREATE FUNCTION baldur_head_moves_forward() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    want_offset bigint;
    want_link bytea;
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'baldur-audit: the chain head row cannot be renumbered'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.epoch < OLD.epoch THEN
        RAISE EXCEPTION 'baldur-audit: the fencing epoch cannot go back (% to %)', OLD.epoch, NEW.epoch
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.last_seq < OLD.last_seq THEN
        RAISE EXCEPTION 'baldur-audit: the chain head cannot move back (seq % to %)', OLD.last_seq, NEW.last_seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.last_seq = OLD.last_seq AND NEW.last_offset = OLD.last_offset AND NEW.last_link = OLD.last_link THEN
        RETURN NEW;
    END IF;
    IF NEW.last_seq = 0 THEN
        IF NOT EXISTS (SELECT 1 FROM audit_entries) THEN
            SELECT -1, genesis_link INTO want_offset, want_link FROM ledger_meta WHERE id = 1;
        END IF;
    ELSE
        SELECT kafka_offset, link INTO want_offset, want_link FROM audit_entries WHERE seq = NEW.last_seq;
        IF NOT FOUND THEN
            SELECT kafka_offset, link INTO want_offset, want_link FROM retention_anchors
                WHERE seq = NEW.last_seq;
        END IF;
    END IF;
    IF want_link IS NULL THEN
        RAISE EXCEPTION 'baldur-audit: the chain head cannot point at seq %: no such entry', NEW.last_seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.last_link IS DISTINCT FROM want_link OR NEW.last_offset IS DISTINCT FROM want_offset THEN
        RAISE EXCEPTION 'baldur-audit: the chain head at seq % must carry that entry''s offset and link',
            NEW.last_seq USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER chain_head_moves_forward BEFORE UPDATE ON chain_head
    FOR EACH ROW EXECUTE FUNCTION baldur_head_moves_forward();

-- Names in these functions resolve in the ledger's schema only: a session's temporary tables
-- (pg_temp comes first in every search_path unless it is named) must not stand in for the
-- ledger's tables inside the head guard or inside the SECURITY DEFINER functions, which any
-- role with EXECUTE calls.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION baldur_head_moves_forward() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION baldur_prune(interval, text, bigint, text, bytea, bytea)'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION baldur_erase(text, text, text, uuid)'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
END
$$;
