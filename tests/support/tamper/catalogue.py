"""The tamper matrix's catalogue (tests/support/tamper/): every kind of change a database
superuser (or, for the rewrite, a key holder) can make, each computing the first affected
seq and which tools must locate it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
from baldur_audit.consumers.postgres.rows import ENTRY_COLUMNS, datetime_to_ms
from baldur_audit.schemas.chain import ChainHead, Linker, SealedEntry, Sealer, TopicRecord
from baldur_audit.schemas.codec import (
    KNOWN_SCHEMAS,
    WriterSchema,
    decode_event,
    encode_event,
)
from baldur_audit.schemas.errors import DecodeError
from baldur_audit.schemas.event import Actor
from baldur_audit.schemas.view import NULL, VIEW_COLUMNS, split_view
from tests.support.tamper.base import (
    BOTH,
    KNOWN_GAPS,
    NOBODY,
    REPLAY,
    VERIFY,
    Damage,
    Tampering,
    random_event,
)
from tests.support.tamper.columns import tamper_column, tamper_kind


def _flip(value: bytes, rng: random.Random) -> bytes:
    flipped = bytearray(value)
    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def tamper_payload(t: Tampering) -> Damage:
    """Flip one bit of a stored payload, or set it NULL (the digest is left as sealed)."""
    row = t.pick(where=lambda r: bool(r["payload"]))
    seq = row["seq"]
    variant = t.rng.choice(["bitflip", "bitflip", "null"])
    value = None if variant == "null" else _flip(bytes(row["payload"]), t.rng)
    t.exec("UPDATE audit_entries SET payload = %s WHERE seq = %s", (value, seq))
    return Damage(variant, f"seq {seq}: payload {variant}", seq)


def tamper_payload_digest(t: Tampering) -> Damage:
    """Change a payload and recompute its digest, so the digest check alone passes."""
    rng = t.rng
    variant = rng.choice(["bitflip", "append", "other-row", "null-to-empty", "empty-to-null"])
    if variant == "null-to-empty":
        row, value = t.pick(where=lambda r: r["payload"] is None), b""
    elif variant == "empty-to-null":
        row, value = t.pick(where=lambda r: r["payload"] is not None and not r["payload"]), None
    else:
        row = t.pick(where=lambda r: bool(r["payload"]))
        payload = bytes(row["payload"])
        if variant == "bitflip":
            value = _flip(payload, rng)
        elif variant == "append":
            value = payload + b"\x00"
        else:
            value = bytes(
                rng.choice(
                    [r for r in t.base.rows if r["payload"] is not None and bytes(r["payload"]) != payload]
                )["payload"]
            )
    t.exec(
        "UPDATE audit_entries SET payload = %s, digest = %s WHERE seq = %s",
        (value, hashlib.sha256(value or b"").digest(), row["seq"]),
    )
    return Damage(variant, f"seq {row['seq']}: payload {variant}, digest recomputed", row["seq"])


def tamper_digest(t: Tampering) -> Damage:
    """Change a stored digest alone."""
    row = t.pick()
    variant = t.rng.choice(["random", "zero", "other-row"])
    others = [bytes(r["digest"]) for r in t.base.rows if bytes(r["digest"]) != bytes(row["digest"])]
    value = {"random": t.rng.randbytes(32), "zero": bytes(32), "other-row": t.rng.choice(others)}[variant]
    t.exec("UPDATE audit_entries SET digest = %s WHERE seq = %s", (value, row["seq"]))
    return Damage(variant, f"seq {row['seq']}: digest {variant}", row["seq"])


def tamper_link(t: Tampering) -> Damage:
    """Change a stored link."""
    row = t.pick()
    seq, link = row["seq"], bytes(row["link"])
    variant = t.rng.choice(["random", "other-row", "truncated", "hash-of-self"])
    value = {
        "random": t.rng.randbytes(32),
        "truncated": link[:31],
        "hash-of-self": hashlib.sha256(link).digest(),
        "other-row": bytes(t.base.row(t.rng.choice([s for s in range(1, t.n + 1) if s != seq]))["link"]),
    }[variant]
    t.exec("UPDATE audit_entries SET link = %s WHERE seq = %s", (value, seq))
    return Damage(variant, f"seq {seq}: link {variant}", seq)


def tamper_key_id(t: Tampering) -> Damage:
    """Relabel the key an entry names (verify: unverifiable there; replay: modified)."""
    row = t.pick()
    current = row["key_id"]
    variant = t.rng.choice(["unknown", "case", "empty", "trailing-space"])
    value = {
        "unknown": "hk1-" + t.rng.randbytes(8).hex(),
        "case": current.upper(),
        "empty": "",
        "trailing-space": current + " ",
    }[variant]
    t.exec("UPDATE audit_entries SET key_id = %s WHERE seq = %s", (value, row["seq"]))
    return Damage(variant, f"seq {row['seq']}: key_id {current} -> {value!r}", row["seq"])


def tamper_seq(t: Tampering) -> Damage:
    """Renumber entries: open a gap, move one entry past the head, or close a deletion's gap."""
    n = t.n
    variant = t.rng.choice(["shift-suffix", "move-beyond-head", "close-gap"])
    seq = t.rng.randint(1, n - 1 if variant == "close-gap" else n)
    if variant == "shift-suffix":
        by = t.rng.randint(1, 3)
        t.renumber(seq, by)
        return Damage(variant, f"seq {seq}..{n} renumbered +{by} (head unchanged)", seq)
    if variant == "move-beyond-head":
        new = n + t.rng.randint(1, 5)
        t.exec("UPDATE audit_entries SET seq = %s WHERE seq = %s", (new, seq))
        return Damage(variant, f"entry {seq} renumbered to {new}", seq)
    t.exec("DELETE FROM audit_entries WHERE seq = %s", (seq,))
    t.renumber(seq + 1, -1)
    t.set_head(n - 1)
    return Damage(variant, f"entry {seq} deleted, {seq + 1}..{n} renumbered down, head moved", seq)


def tamper_head(t: Tampering) -> Damage:
    """Edit the chain head row: its seq, offset or link (replay does not read the head)."""
    n, rng = t.n, t.rng
    variant = rng.choice(["seq-down", "seq-up", "offset", "link", "consistent-rollback", "delete-row"])
    if variant == "delete-row":
        t.exec("DELETE FROM chain_head")
        return Damage(variant, "chain_head row deleted", n, frozenset({VERIFY}), exact=False)
    if variant == "seq-down":
        seq = rng.randint(0, n - 1)
        t.exec("UPDATE chain_head SET last_seq = %s", (seq,))
        return Damage(variant, f"head last_seq {n} -> {seq}", seq + 1, frozenset({VERIFY}))
    if variant == "seq-up":
        seq = n + rng.randint(1, 5)
        t.exec("UPDATE chain_head SET last_seq = %s", (seq,))
        return Damage(variant, f"head last_seq {n} -> {seq}", n + 1, frozenset({VERIFY}))
    if variant == "offset":
        t.exec("UPDATE chain_head SET last_offset = last_offset + %s", (rng.choice([-1, 1, 7]),))
        return Damage(variant, "head last_offset moved", n, frozenset({VERIFY}))
    if variant == "link":
        t.exec("UPDATE chain_head SET last_link = %s", (rng.randbytes(32),))
        return Damage(variant, "head last_link replaced", n, frozenset({VERIFY}))
    seq = rng.randint(1, n - 1)
    t.set_head(seq)
    return Damage(variant, f"head rolled back to entry {seq}, entries kept", seq + 1, frozenset({VERIFY}))


def tamper_epoch(t: Tampering) -> Damage:
    """Change the head's fencing epoch: a running chainer would stop, but no entry changes."""
    value = t.rng.choice([0, 7, 10**12])
    t.exec("UPDATE chain_head SET epoch = %s", (value,))
    return Damage("epoch", f"head epoch -> {value}", None, NOBODY)


def tamper_writer_schema(t: Tampering) -> Damage:
    """Edit the stored writer schema. Edits that change its fingerprint are verify's to see;
    edits that keep it (doc, whitespace, logical types) cannot change any decoded value,
    because the code's own schema for that fingerprint wins."""
    fingerprint, schema_json, first_seq = t.base.schema
    variant = t.rng.choice(
        [
            "rename-field",
            "swap-before-after",
            "retype-field",
            "doc",
            "whitespace",
            "drop-logical-type",
            "delete-row",
            "extra-schema",
        ]
    )
    document = json.loads(schema_json)
    fields = document["fields"]
    if variant == "rename-field":
        t.rng.choice(fields)["name"] = "forged"
    elif variant == "swap-before-after":
        names = {f["name"]: f for f in fields}
        names["before"]["name"], names["after"]["name"] = "after", "before"
    elif variant == "retype-field":
        fields[4]["type"] = "bytes"
    elif variant == "doc":
        document["doc"] = "edited by the database owner"
    elif variant == "drop-logical-type":
        for f in fields:
            if isinstance(f["type"], dict):
                f["type"].pop("logicalType", None)
    if variant == "delete-row":
        t.exec("DELETE FROM writer_schemas")
    elif variant == "extra-schema":  # a schema no entry uses, under its own fingerprint
        fields[4]["name"] = "forged"
        extra = WriterSchema.from_json(json.dumps(document))
        t.exec(
            "INSERT INTO writer_schemas (fingerprint, schema_json, first_seq) VALUES (%s, %s, %s)",
            (extra.fingerprint, extra.schema_json, t.n),
        )
    else:
        text = json.dumps(document, indent=None if variant != "whitespace" else 4)
        t.exec("UPDATE writer_schemas SET schema_json = %s", (text,))
    if variant in ("rename-field", "swap-before-after", "retype-field"):
        return Damage(
            variant, f"writer schema {fingerprint.hex()}: {variant}", first_seq, frozenset({VERIFY})
        )
    return Damage(variant, f"writer schema {fingerprint.hex()}: {variant} (fingerprint kept)", None, NOBODY)


def tamper_meta(t: Tampering) -> Damage:
    """Edit the ledger identity (ledger_meta), which the genesis link binds."""
    variant = t.rng.choice(
        ["ledger_id", "kafka_topic", "genesis_link", "genesis_key_id", "kafka_partition", "delete-row"]
    )
    if variant == "delete-row":
        t.exec("DELETE FROM ledger_meta")
        return Damage(variant, "ledger_meta row deleted", 1, BOTH, exact=False)
    value: Any = {
        "ledger_id": t.base.ledger_id + "-forged",
        "kafka_topic": t.base.ledger.topic + ".forged",
        "genesis_link": t.rng.randbytes(32),
        "genesis_key_id": "hk1-" + t.rng.randbytes(8).hex(),
        "kafka_partition": 1,
    }[variant]
    t.conn.execute(sql.SQL("UPDATE ledger_meta SET {} = %s").format(sql.Identifier(variant)), (value,))
    # Replay derives genesis from the stored ledger id and topic, its key and partition 0.
    seen = BOTH if variant in ("ledger_id", "kafka_topic") else frozenset({VERIFY})
    return Damage(variant, f"ledger_meta.{variant} edited", 1, seen)


def tamper_delete(t: Tampering) -> Damage:
    """Delete entries (the head left as it was)."""
    n = t.n
    variant = t.rng.choice(["middle", "first", "last", "tail", "several", "all"])
    if variant == "all":
        t.exec("DELETE FROM audit_entries")
        return Damage(variant, f"all {n} entries deleted, head kept", 1)
    if variant == "tail":
        seq = t.rng.randint(2, n)
        t.exec("DELETE FROM audit_entries WHERE seq >= %s", (seq,))
        return Damage(variant, f"entries {seq}..{n} deleted, head kept", seq)
    if variant == "several":
        seqs = sorted(t.rng.sample(range(1, n + 1), 3))
        t.exec("DELETE FROM audit_entries WHERE seq = ANY(%s)", (seqs,))
        return Damage(variant, f"entries {seqs} deleted", seqs[0])
    seq = {"first": 1, "last": n, "middle": t.rng.randint(2, n - 1)}[variant]
    t.exec("DELETE FROM audit_entries WHERE seq = %s", (seq,))
    return Damage(variant, f"entry {seq} deleted", seq)


def _insert_copy(t: Tampering, source: dict[str, Any], seq: int, offset: int) -> None:
    """Insert a forged entry: a copy of ``source`` at ``seq``/``offset`` with another actor
    (and a new event id, which the unique index on events demands)."""
    columns = [c for c in ENTRY_COLUMNS if c not in ("seq", "kafka_offset", "event_id", "actor")]
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    t.conn.execute(
        sql.SQL(
            "INSERT INTO audit_entries (seq, kafka_offset, event_id, actor, {})"
            " SELECT %s, %s, CASE WHEN event_id IS NULL THEN NULL ELSE %s END,"
            " CASE WHEN actor IS NULL THEN NULL ELSE 'mallory' END, {}"
            " FROM audit_entries WHERE seq = %s"
        ).format(listed, listed),
        (seq, offset, uuid.UUID(int=t.rng.getrandbits(128)), source["seq"]),
    )


def tamper_insert(t: Tampering) -> Damage:
    """Insert a forged entry (a neighbour's copy with changes) beyond the head or in the middle."""
    n, rng = t.n, t.rng
    variant = rng.choice(["beyond-head", "beyond-head+head", "middle-renumbered"])
    if variant.startswith("beyond-head"):
        _insert_copy(
            t, t.base.row(rng.randint(1, n)), n + 1, t.free_offset(above=t.base.rows[-1]["kafka_offset"])
        )
        if variant.endswith("+head"):
            t.set_head(n + 1)
        return Damage(variant, f"forged entry inserted at seq {n + 1}", n + 1)
    seq = rng.randint(2, n)
    prev, nxt = t.base.row(seq - 1), t.base.row(seq)
    offset = t.free_offset(above=prev["kafka_offset"], below=nxt["kafka_offset"])
    t.renumber(seq, 1)
    _insert_copy(t, t.base.row(seq - 1), seq, offset)
    t.set_head(n + 1)
    return Damage(
        variant,
        f"forged entry inserted at seq {seq} (offset {offset}), {seq}..{n} renumbered up, head moved",
        seq,
    )


def tamper_swap(t: Tampering) -> Damage:
    """Exchange two entries' contents, keeping their seqs."""
    n = t.n
    a = t.rng.randint(1, n - 1)
    b = a + 1 if t.rng.random() < 0.4 else t.rng.randint(a + 1, n)
    rest = ", ".join(ENTRY_COLUMNS[1:])
    # CREATE TABLE AS takes no bind parameters: the seqs are ints, formatted as literals.
    t.exec(
        f"CREATE TEMP TABLE swapped ON COMMIT DROP AS"
        f" SELECT * FROM audit_entries WHERE seq IN ({int(a)}, {int(b)})"
    )
    t.exec("DELETE FROM audit_entries WHERE seq IN (%s, %s)", (a, b))
    t.exec(
        f"INSERT INTO audit_entries (seq, {rest}) SELECT CASE seq WHEN %s THEN %s ELSE %s END,"
        f" {rest} FROM swapped",
        (a, b, a),
    )
    return Damage("adjacent" if b == a + 1 else "distant", f"entries {a} and {b} swapped", a)


def tamper_truncate(t: Tampering) -> Damage:
    """Delete the tail and roll the head back to match: a valid chain, only the topic knows."""
    n = t.n
    keep = t.rng.choice([0, t.rng.randint(1, n - 1), n - 1])
    t.exec("DELETE FROM audit_entries WHERE seq > %s", (keep,))
    t.set_head(keep)
    return Damage(
        "head-rolled-back",
        f"entries {keep + 1}..{n} deleted, head moved to {keep}",
        keep + 1,
        frozenset({REPLAY}),
    )


def _forge_value(rng: random.Random, value: bytes | None, i: int) -> bytes:
    """Other bytes for a record: the same event with forged fields, or a new event."""
    try:
        event = decode_event(value, KNOWN_SCHEMAS)
    except DecodeError:
        return encode_event(random_event(rng, 20_000 + i))
    return encode_event(
        dataclasses.replace(
            event,
            actor=Actor("mallory", "user"),
            reason="approved",
            after=json.dumps({"forged": rng.randint(0, 10**6)}),
        )
    )


def _suffix(base: Any, seq: int) -> tuple[list[dict[str, Any]], ChainHead, list[TopicRecord]]:
    """The base's rows before ``seq``, the head they end on, and the topic records from ``seq``
    on as the chainer read them."""
    prefix = base.rows[: seq - 1]
    head = ChainHead(
        seq - 1,
        prefix[-1]["kafka_offset"] if prefix else -1,
        bytes(prefix[-1]["link"]) if prefix else base.genesis,
    )
    records = [
        TopicRecord(
            base.ledger.topic,
            0,
            r["kafka_offset"],
            datetime_to_ms(r["kafka_timestamp"]),
            None if r["payload"] is None else bytes(r["payload"]),
        )
        for r in base.rows[seq - 1 :]
    ]
    return prefix, head, records


def _reseal_from(t: Tampering, seq: int, entries: Sequence[SealedEntry]) -> None:
    """As superuser: cut the chain back to ``seq - 1``. Then (a follow-up, holding the key)
    append ``entries`` through the store, exactly as a chainer writes entries and moves the head."""
    t.exec("DELETE FROM audit_entries WHERE seq >= %s", (seq,))
    t.set_head(seq - 1)

    def reseal(dsn: str) -> None:
        with PostgresLedgerStore.connect(dsn) as store:
            taken = store.take_over()
            assert taken.seq == seq - 1, (taken, seq)
            store.append(entries, epoch=taken.epoch)

    t.follow_ups.append(reseal)


def tamper_rewrite(t: Tampering) -> Damage:
    """The key holder's rewrite: from a random seq on, reseal forged contents with the right
    key (``Sealer``) and a consistent head. Verify cannot see it; replay must."""
    base, rng, n = t.base, t.rng, t.n
    seq = rng.randint(1, n)
    prefix, head, records = _suffix(base, seq)
    variant = rng.choice(["forge", "forge-many", "drop", "inject", "retime", "swap-payloads"])
    if variant == "retime":  # the record's bytes, under another broker timestamp
        records[0] = dataclasses.replace(
            records[0], timestamp_ms=records[0].timestamp_ms - rng.randint(1, 10**6)
        )
    elif variant == "swap-payloads":
        other = rng.choice([i for i, r in enumerate(records) if r.value != records[0].value] or [0])
        first_value, other_value = records[0].value, records[other].value
        records[0] = dataclasses.replace(records[0], value=other_value)
        records[other] = dataclasses.replace(records[other], value=first_value)
    elif variant.startswith("forge"):
        indexes = [0] + (
            rng.sample(range(1, len(records)), min(5, len(records) - 1)) if variant == "forge-many" else []
        )
        for i in indexes:
            records[i] = dataclasses.replace(records[i], value=_forge_value(rng, records[i].value, i))
    elif variant == "drop":
        del records[0]
    else:
        offset = t.free_offset(above=head.offset, below=records[0].offset)
        forged = TopicRecord(
            base.ledger.topic, 0, offset, records[0].timestamp_ms, encode_event(random_event(rng, 30_000))
        )
        records = sorted([*records, forged], key=lambda r: r.offset)
    firsts = {r["event_id"]: r["seq"] for r in prefix if r["kind"] == "event"}
    sealer = Sealer(key=base.key, head=head, schemas=KNOWN_SCHEMAS)
    entries = sealer.seal_batch(records, lambda ids: {i: firsts[i] for i in ids if i in firsts})
    _reseal_from(t, seq, entries)
    # The first seq whose entry is not what the base sealed, or that only one side has.
    sealed = base.rows[seq - 1 :]
    first = next(
        (e.seq for e, r in zip(entries, sealed, strict=False) if e.link != bytes(r["link"])),
        seq + min(len(entries), len(sealed)),
    )
    what = f"suffix from seq {seq} resealed with the key ({variant}); head {sealer.head.seq}"
    if len(entries) == len(sealed) and first > n:  # resealed exactly as it was
        return Damage(variant, what + " (nothing changed)", None, NOBODY)
    return Damage(variant, what, first, frozenset({REPLAY}))


#: The visible columns the reseal below rewrites, and the value it writes.
RESEALED_COLUMNS = {"actor": "mallory", "target": "payments.forged_limit", "reason": "approved by mallory"}


def _with_column(view: bytes, column: str, value: str) -> bytes:
    """``view`` with one text column replaced (schemas/view.py framing)."""
    values = split_view(view)
    assert values is not None, "a sealed view is well framed"
    values[[name for name, _ in VIEW_COLUMNS].index(column)] = value.encode("utf-8")
    return b"".join(NULL if v is None else struct.pack(">i", len(v)) + v for v in values)


def tamper_reseal_visible(t: Tampering) -> Damage:
    """The key holder's rewrite of what an entry *shows*: from a random event entry on, the
    Sealer's entries for the unchanged topic records, the first with one visible column
    (actor, target or reason) changed, every link from there recomputed with the key. The
    payload bytes, offsets and digests stay as on the topic. Verify cannot see it (a valid
    chain); ``replay --classify-all`` must; default replay does not (``KNOWN_GAPS``).
    Not in the random catalogue: tests/integration/test_replay_gaps.py runs it."""
    base, rng = t.base, t.rng
    seq = t.pick(("event",))["seq"]
    prefix, head, records = _suffix(base, seq)
    firsts = {r["event_id"]: r["seq"] for r in prefix if r["kind"] == "event"}
    sealed = Sealer(key=base.key, head=head, schemas=KNOWN_SCHEMAS).seal_batch(
        records, lambda ids: {i: firsts[i] for i in ids if i in firsts}
    )
    assert [e.link for e in sealed] == [bytes(r["link"]) for r in base.rows[seq - 1 :]], "not the base"
    column = rng.choice(sorted(RESEALED_COLUMNS))
    value = RESEALED_COLUMNS[column]
    assert base.row(seq)[column] != value, (seq, column)
    linker = Linker(base.key)
    prev = head.link
    entries = []
    for i, entry in enumerate(sealed):
        view = _with_column(entry.view, column, value) if i == 0 else entry.view
        changed = dataclasses.replace(entry, view=view, link=b"")
        link = linker.link(prev, changed.link_input())
        entries.append(dataclasses.replace(changed, link=link))
        prev = link
    _reseal_from(t, seq, entries)
    what = f"entry {seq}'s {column} set to {value!r}, links resealed from there (payloads unchanged)"
    return Damage("visible-resealed", what, seq, frozenset({REPLAY}))


#: What ``baldur_prune`` drops from an entry (004_retention.sql, audit_entries_pruned_is_empty).
PRUNABLE = (
    "payload",
    "occurred_at",
    "actor",
    "actor_type",
    "action",
    "target",
    "before",
    "after",
    "reason",
    "source",
    "trace_id",
    "client_ip",
    "attributes",
    "schema_fingerprint",
)


def tamper_prune_by_hand(t: Tampering) -> Damage:
    """Imitate retention as the superuser: drop entries' prunable columns and mark them
    pruned, without ``baldur_prune``."""
    variant = t.rng.choice(["prefix-by-hand", "middle", "pruned_at-only"])
    dropped = ", ".join(f"{column} = NULL" for column in PRUNABLE)
    if variant == "pruned_at-only":  # the CHECK constraint refuses it, triggers or not
        t.exec("UPDATE audit_entries SET pruned_at = now() WHERE seq = %s", (t.rng.randint(1, t.n),))
        return Damage(variant, "pruned_at set, columns kept", None, NOBODY)
    if variant == "prefix-by-hand":
        last = t.rng.randint(1, 30)
        t.exec(f"UPDATE audit_entries SET {dropped}, pruned_at = now() WHERE seq <= %s", (last,))
        return Damage(variant, f"entries 1..{last} pruned by hand", 1, NOBODY)
    seq = t.rng.randint(2, t.n)
    t.exec(f"UPDATE audit_entries SET {dropped}, pruned_at = now() WHERE seq = %s", (seq,))
    return Damage(variant, f"entry {seq} pruned by hand (not a prefix)", seq, frozenset({VERIFY}))


#: Columns the combination tamper draws from (changes local to one row, no renumbering).
COMBO_COLUMNS = (
    "kafka_timestamp",
    "event_id",
    "occurred_at",
    "actor",
    "target",
    "before",
    "after",
    "reason",
    "attributes",
    "duplicate_of",
    "reject_reason",
    "schema_fingerprint",
)


def tamper_combo(t: Tampering) -> Damage:
    """Two or three row-local tampers at once, anywhere: the tools must name the lowest seq."""
    local: list[Callable[[Tampering], Damage]] = [
        tamper_payload,
        tamper_payload_digest,
        tamper_digest,
        tamper_link,
        tamper_key_id,
        tamper_kind,
    ]
    parts: list[Damage] = []
    while len(parts) < 2 or (len(parts) < 3 and t.rng.random() < 0.5):
        apply = t.rng.choice([*local, tamper_column(t.rng.choice(COMBO_COLUMNS))])
        with t.conn.transaction() as savepoint:
            damage = apply(t)
            if damage.variant in KNOWN_GAPS:  # a known gap would hide the lowest seq: redraw
                raise psycopg.Rollback(savepoint)
            parts.append(damage)
    seqs = [d.first_seq for d in parts if d.first_seq is not None]
    variant = "+".join(d.variant for d in parts)
    what = "; ".join(d.what for d in parts)
    return Damage(variant, what, min(seqs) if seqs else None, BOTH if seqs else NOBODY)


@dataclass(frozen=True, slots=True)
class TamperClass:
    """One row of the matrix: a kind of change, and in words what the tools should make of it."""

    name: str
    apply: Callable[[Tampering], Damage]
    expected: str


_ROW = "verify and replay locate the entry"
#: Columns with their own tamper class below (every other stored column gets a column class).
_NOT_COLUMN_CLASSES = ("seq", "kind", "payload", "digest", "key_id", "link")
CATALOGUE: tuple[TamperClass, ...] = (
    *(
        TamperClass(
            f"column:{column}",
            tamper_column(column),
            _ROW
            + (" (the reason's presence; its wording is a known gap)" if column == "reject_reason" else ""),
        )
        for column in ENTRY_COLUMNS
        if column not in _NOT_COLUMN_CLASSES
    ),
    TamperClass("column:kind", tamper_kind, _ROW + " (covered by the link)"),
    TamperClass("payload:bitflip", tamper_payload, _ROW + " (digest check)"),
    TamperClass("payload+digest", tamper_payload_digest, _ROW + " (the link covers the digest)"),
    TamperClass("digest", tamper_digest, _ROW),
    TamperClass("link", tamper_link, _ROW),
    TamperClass("key_id", tamper_key_id, "verify: unverifiable at the entry; replay: modified"),
    TamperClass("seq", tamper_seq, _ROW + " (missing, or modified where the gap was closed)"),
    TamperClass(
        "row:delete",
        tamper_delete,
        _ROW + " (missing; a deleted tail with the head kept is missing to verify, truncated to replay)",
    ),
    TamperClass("row:insert", tamper_insert, _ROW + " (inserted/reordered; extra to replay)"),
    TamperClass("row:swap", tamper_swap, _ROW + " at the lower seq (reordered/modified)"),
    TamperClass(
        "head",
        tamper_head,
        "verify locates it (the head must be the last entry); replay does not read the head",
    ),
    TamperClass("head:epoch", tamper_epoch, "benign: a fencing token, not chain content; both stay intact"),
    TamperClass(
        "writer_schemas",
        tamper_writer_schema,
        "verify locates a schema that is not its fingerprint at its first seq; edits "
        "keeping the fingerprint are benign (the code's schema wins); replay never reads it",
    ),
    TamperClass(
        "ledger_meta",
        tamper_meta,
        "verify locates seq 1 (genesis); replay sees an "
        "edited ledger id or topic, not the stored genesis "
        "link, key id or partition",
    ),
    TamperClass(
        "tail:truncate+head",
        tamper_truncate,
        "verify cannot see it (a valid shorter chain); replay: truncated at the first "
        "deleted seq (the group's committed offset is the witness)",
    ),
    TamperClass(
        "keyholder:rewrite",
        tamper_rewrite,
        "verify cannot see it (every link recomputed with the key); replay: first "
        "entry that differs from the topic",
    ),
    TamperClass(
        "retention:by-hand",
        tamper_prune_by_hand,
        "a pruned prefix looks like retention to both (a stated residual risk); a pruned "
        "entry after an unpruned one is verify's; pruned_at alone is refused by a CHECK",
    ),
    TamperClass("combo", tamper_combo, "verify and replay name the lowest damaged seq"),
)
CLASSES = {tamper.name: tamper for tamper in CATALOGUE}
