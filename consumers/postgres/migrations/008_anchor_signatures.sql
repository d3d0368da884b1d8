-- Retention anchors signed with the Ed25519 checkpoint key too (CHAIN.md §17): the HMAC alone
-- can be checked, and forged, only by holders of the chain key; the Ed25519 signature lets an
-- outsider check a pruned ledger's starting point with the public checkpoint key alone.
-- `ed25519_signature` is the signer's 4-byte key hash followed by the 64-byte signature (as in a
-- signed note's signature line). Anchors made before this migration keep NULL: their HMAC still
-- verifies as before.
ALTER TABLE retention_anchors
    ADD COLUMN ed25519_signature bytea CHECK (ed25519_signature IS NULL OR octet_length(ed25519_signature) = 68);

-- baldur_prune takes the Ed25519 signature as a sixth argument (NULL: HMAC only, as before).
-- The function is replaced, so EXECUTE is given again to every role that had it.
CREATE TEMPORARY TABLE baldur_prune_grantees ON COMMIT DROP AS
    SELECT DISTINCT grantee::text AS grantee FROM information_schema.routine_privileges
    WHERE routine_name = 'baldur_prune' AND privilege_type = 'EXECUTE'
      AND grantee NOT IN ('PUBLIC', current_user);

DROP FUNCTION baldur_prune(interval, text, bigint, text, bytea);

CREATE FUNCTION baldur_prune(older_than interval, mode text, up_to_seq bigint DEFAULT NULL,
                             anchor_key_id text DEFAULT NULL, anchor_signature bytea DEFAULT NULL,
                             anchor_ed25519 bytea DEFAULT NULL)
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
                                           signature, entries_deleted, ed25519_signature)
            SELECT e.seq, e.kafka_offset, e.kafka_timestamp, e.link, anchor_key_id,
                   anchor_signature, count(*), anchor_ed25519 FROM audit_entries WHERE seq <= cut;
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

REVOKE EXECUTE ON FUNCTION baldur_prune(interval, text, bigint, text, bytea, bytea) FROM PUBLIC;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT grantee FROM baldur_prune_grantees LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION baldur_prune(interval, text, bigint, text, bytea, bytea) TO %I',
                       r.grantee);
    END LOOP;
END
$$;
