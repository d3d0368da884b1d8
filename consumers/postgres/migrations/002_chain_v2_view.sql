-- Chain format 2: each link covers the entry's *view* (its visible columns as PostgreSQL
-- sends them, schemas/CHAIN.md §6.1). The JSON columns become `json`, which keeps the text
-- exactly as sealed (`jsonb` rewrites it), so the view read back is the view that was sealed.
-- Query them as jsonb with a cast: `after::jsonb ->> 'timeout_ms'`.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_entries) THEN
        RAISE EXCEPTION 'this ledger was sealed with chain format 1, which this version cannot '
            'verify: rebuild it from the topic into a new database with `baldur-audit replay --rebuild`';
    END IF;
END $$;

ALTER TABLE audit_entries
    ALTER COLUMN before TYPE json USING before::json,
    ALTER COLUMN after TYPE json USING after::json,
    ALTER COLUMN attributes TYPE json USING attributes::json;

-- Stored beside what they are derived from, so that a pruned entry (payload or personal
-- columns dropped by the retention function) still has every link input.
ALTER TABLE audit_entries
    ADD COLUMN value_null boolean NOT NULL,
    ADD COLUMN view_digest bytea NOT NULL;

ALTER TABLE ledger_meta ADD COLUMN chain_format smallint NOT NULL DEFAULT 2 CHECK (chain_format = 2);
