-- The time an entry shows (occurred_at; a rejected record's broker timestamp stands in), indexed
-- with its seq: the newest page of `log` and of the viewer, and their time windows (since/until,
-- "the 30 minutes before T"), read this index instead of sorting the whole ledger.
CREATE INDEX audit_entries_when ON audit_entries ((coalesce(occurred_at, kafka_timestamp)), seq);
