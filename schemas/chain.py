"""The chain: how each topic record is sealed into a linked ledger entry.

Pure: the signing key, records and look-ups are passed in. ``CHAIN.md`` beside
this module is the normative specification of every byte hashed here; the test
vectors in ``vectors/chain-v2.json`` are generated from and checked against it.

A link is ``HMAC-SHA256(key, message)`` where ``message`` is a domain tag
followed by length-prefixed, named fields (see :func:`frame`). The genesis link
binds the ledger's identity; entry ``seq`` (from 1) links to entry ``seq - 1``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from . import accel, fastpath
from .codec import WriterSchema, decode_event, decode_schema_record, is_schema_record, read_fingerprint
from .errors import ConfigError, DecodeError
from .view import entry_view, event_view_body, rejected_view_body, view_digest

GENESIS_TAG = b"baldur-audit/genesis/v1"
LINK_TAG = b"baldur-audit/link/v2"
KEY_ID_TAG = b"baldur-audit/key-id/v1"
MIN_KEY_BYTES = 32
LINK_BYTES = 32
NO_DUPLICATE = 0


class EntryKind(Enum):
    """What an entry records; the code is the byte the link covers."""

    EVENT = ("event", 1)
    REJECTED = ("rejected", 2)
    DUPLICATE = ("duplicate", 3)
    #: An accepted schema record (CHAIN.md §19): from the next seq on, its writer schema is known.
    SCHEMA = ("schema", 4)

    def __init__(self, label: str, code: int) -> None:
        self.label = label
        self.code = code

    @classmethod
    def from_label(cls, label: str) -> EntryKind:
        """The kind named ``label``; raises ``ValueError`` for an unknown one."""
        for kind in cls:
            if kind.label == label:
                return kind
        raise ValueError(f"unknown entry kind {label!r}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An HMAC key and the id it is named by in entries (the id is public, the secret not)."""

    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ConfigError(f"signing key must be at least {MIN_KEY_BYTES} bytes, found {len(self.secret)}")

    def __repr__(self) -> str:  # never show the secret
        return f"SigningKey(key_id={self.key_id!r})"

    @classmethod
    def derive(cls, secret: bytes) -> SigningKey:
        """A key whose id is derived from it: ``hk1-`` + 16 hex of SHA-256(tag || secret)."""
        digest = hashlib.sha256(KEY_ID_TAG + secret).hexdigest()
        return cls(key_id="hk1-" + digest[:16], secret=secret)


def field(name: bytes, value: bytes) -> bytes:
    """One framed field: u8 name length, name, u32 big-endian value length, value."""
    return struct.pack(">B", len(name)) + name + struct.pack(">I", len(value)) + value


def frame(tag: bytes, fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A domain-separated message: the tag as a field named ``domain``, then each field."""
    return field(b"domain", tag) + b"".join(field(name, value) for name, value in fields)


def genesis_message(*, ledger_id: str, topic: str, partition: int) -> bytes:
    """The bytes the genesis link covers (CHAIN.md, "Genesis")."""
    return frame(
        GENESIS_TAG,
        [
            (b"ledger", ledger_id.encode("utf-8")),
            (b"topic", topic.encode("utf-8")),
            (b"partition", struct.pack(">i", partition)),
        ],
    )


def genesis_link(key: SigningKey, *, ledger_id: str, topic: str, partition: int) -> bytes:
    """Link number 0, which binds the ledger's identity, topic and partition."""
    message = genesis_message(ledger_id=ledger_id, topic=topic, partition=partition)
    return hmac.new(key.secret, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkInput:
    """Everything a link covers besides the key and the previous link."""

    seq: int
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    kind: EntryKind
    duplicate_of: int
    value_null: bool
    digest: bytes
    view_digest: bytes


def _fixed(name: bytes, size: int) -> bytes:
    """The framing in front of a fixed-size value (see :func:`field`)."""
    return struct.pack(">B", len(name)) + name + struct.pack(">I", size)


_LINK_DOMAIN = field(b"domain", LINK_TAG)
_H_SEQ, _H_PARTITION = _fixed(b"seq", 8), _fixed(b"partition", 4)
_H_OFFSET, _H_TIMESTAMP = _fixed(b"offset", 8), _fixed(b"timestamp", 8)
_H_KIND, _H_DUPLICATE = _fixed(b"kind", 1), _fixed(b"duplicate_of", 8)
_H_NULL = _fixed(b"value_null", 1)
_NUMBERS = struct.Struct(">Q")


def link_message(key_id: str, prev_link: bytes, link_input: LinkInput) -> bytes:
    """The bytes an entry's link covers (CHAIN.md, "Entry link").

    Spelled out field by field (rather than through :func:`frame`) because it runs once
    per entry; ``tests/unit/schemas/test_chain.py`` checks it against :func:`frame` and the vectors.
    """
    return b"".join(
        (
            _LINK_DOMAIN,
            field(b"prev", prev_link),
            field(b"key_id", key_id.encode("utf-8")),
            _H_SEQ,
            _NUMBERS.pack(link_input.seq),
            field(b"topic", link_input.topic.encode("utf-8")),
            _H_PARTITION,
            struct.pack(">i", link_input.partition),
            _H_OFFSET,
            struct.pack(">q", link_input.offset),
            _H_TIMESTAMP,
            struct.pack(">q", link_input.timestamp_ms),
            _H_KIND,
            struct.pack(">B", link_input.kind.code),
            _H_DUPLICATE,
            _NUMBERS.pack(link_input.duplicate_of),
            _H_NULL,
            b"\x01" if link_input.value_null else b"\x00",
            field(b"digest", link_input.digest),
            field(b"view", link_input.view_digest),
        )
    )


def link_message_framed(key_id: str, prev_link: bytes, link_input: LinkInput) -> bytes:
    """:func:`link_message` built with the generic :func:`frame` (the reference form)."""
    return frame(
        LINK_TAG,
        [
            (b"prev", prev_link),
            (b"key_id", key_id.encode("utf-8")),
            (b"seq", struct.pack(">Q", link_input.seq)),
            (b"topic", link_input.topic.encode("utf-8")),
            (b"partition", struct.pack(">i", link_input.partition)),
            (b"offset", struct.pack(">q", link_input.offset)),
            (b"timestamp", struct.pack(">q", link_input.timestamp_ms)),
            (b"kind", struct.pack(">B", link_input.kind.code)),
            (b"duplicate_of", struct.pack(">Q", link_input.duplicate_of)),
            (b"value_null", b"\x01" if link_input.value_null else b"\x00"),
            (b"digest", link_input.digest),
            (b"view", link_input.view_digest),
        ],
    )


class Linker:
    """Computes links under one key, reusing a pre-keyed HMAC state per link."""

    __slots__ = ("key_id", "_base")

    def __init__(self, key: SigningKey) -> None:
        self.key_id = key.key_id
        self._base = hmac.new(key.secret, digestmod=hashlib.sha256)

    def link(self, prev_link: bytes, link_input: LinkInput) -> bytes:
        """The link of an entry whose predecessor's link is ``prev_link``."""
        mac = self._base.copy()
        mac.update(link_message(self.key_id, prev_link, link_input))
        return mac.digest()


_H_PREV = _fixed(b"prev", LINK_BYTES)
_H_DIGEST, _H_VIEW = _fixed(b"digest", LINK_BYTES), _fixed(b"view", LINK_BYTES)
_U8 = struct.Struct(">B").pack
_I64 = struct.Struct(">q").pack


class LedgerLinker:
    """:class:`Linker` for one ledger's topic and partition, taking the link fields as plain
    values: the per-entry work of ``verify`` and ``replay`` (equal to :func:`link_message`,
    which ``tests/unit/schemas/test_chain.py`` checks)."""

    __slots__ = (
        "key_id",
        "link",
        "_base",
        "_key_field",
        "_topic_partition",
        "_inner",
        "_outer",
        "_after",
        "_pack",
    )

    #: ``link(prev_link, seq, offset, timestamp_ms, kind_code, duplicate_of, value_null, digest,
    #: view_digest)``: the link of entry ``seq`` whose predecessor's link is ``prev_link``. The
    #: native linker's when the accelerator is on (schemas/accel.py), else :meth:`link_reference`.
    link: Callable[[bytes, int, int, int, int, int, bool, bytes, bytes], bytes]

    def __init__(self, key: SigningKey, *, topic: str, partition: int) -> None:
        self.key_id = key.key_id
        native = accel.native
        self.link = (
            self.link_reference
            if native is None
            else native.LedgerLinker(key.secret, key.key_id, topic, partition).link
        )
        self._base = hmac.new(key.secret, digestmod=hashlib.sha256)
        self._key_field = field(b"key_id", key.key_id.encode("utf-8"))
        self._topic_partition = (
            field(b"topic", topic.encode("utf-8")) + _H_PARTITION + struct.pack(">i", partition)
        )
        # The usual case (32-byte links and digests) in one struct.pack, MAC'd by RFC 2104 from
        # the two padded-key states, already fed the constant start of every message.
        block = (key.secret if len(key.secret) <= 64 else hashlib.sha256(key.secret).digest()).ljust(
            64, b"\0"
        )
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + _LINK_DOMAIN + _H_PREV)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._after = (self._key_field + _H_SEQ, self._topic_partition + _H_OFFSET)
        a, b, t, k, d, n, g, v = map(
            len, (*self._after, _H_TIMESTAMP, _H_KIND, _H_DUPLICATE, _H_NULL, _H_DIGEST, _H_VIEW)
        )
        size = LINK_BYTES
        self._pack = struct.Struct(f">{size}s{a}sQ{b}sq{t}sq{k}sB{d}sQ{n}s?{g}s{size}s{v}s{size}s").pack

    def link_reference(
        self,
        prev_link: bytes,
        seq: int,
        offset: int,
        timestamp_ms: int,
        kind_code: int,
        duplicate_of: int,
        value_null: bool,
        digest: bytes,
        view_digest: bytes,
    ) -> bytes:
        """The link of entry ``seq`` whose predecessor's link is ``prev_link``, in pure Python
        (the reference of the native linker)."""
        if len(prev_link) == len(digest) == len(view_digest) == LINK_BYTES:
            inner = self._inner.copy()
            inner.update(
                self._pack(
                    prev_link,
                    self._after[0],
                    seq,
                    self._after[1],
                    offset,
                    _H_TIMESTAMP,
                    timestamp_ms,
                    _H_KIND,
                    kind_code,
                    _H_DUPLICATE,
                    duplicate_of,
                    _H_NULL,
                    value_null,
                    _H_DIGEST,
                    digest,
                    _H_VIEW,
                    view_digest,
                )
            )
            outer = self._outer.copy()
            outer.update(inner.digest())
            return outer.digest()
        mac = self._base.copy()
        mac.update(
            b"".join(
                (
                    _LINK_DOMAIN,
                    _H_PREV if len(prev_link) == LINK_BYTES else _fixed(b"prev", len(prev_link)),
                    prev_link,
                    self._key_field,
                    _H_SEQ,
                    _NUMBERS.pack(seq),
                    self._topic_partition,
                    _H_OFFSET,
                    _I64(offset),
                    _H_TIMESTAMP,
                    _I64(timestamp_ms),
                    _H_KIND,
                    _U8(kind_code),
                    _H_DUPLICATE,
                    _NUMBERS.pack(duplicate_of),
                    _H_NULL,
                    b"\x01" if value_null else b"\x00",
                    field(b"digest", digest),
                    field(b"view", view_digest),
                )
            )
        )
        return mac.digest()


def payload_digest(value: bytes | None) -> bytes:
    """SHA-256 of the exact message bytes (a null value hashes as empty, flagged apart)."""
    native = accel.native
    if native is not None and (value is None or value.__class__ is bytes):
        return native.payload_digest(value)
    return hashlib.sha256(value or b"").digest()


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record as read from the topic: position, broker timestamp, exact value bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedEntry:
    """A sealed ledger entry: the record, its classification, digest and link."""

    seq: int
    record: TopicRecord
    kind: EntryKind
    duplicate_of: int | None
    event_id: uuid.UUID | None
    reject_reason: str | None
    schema_fingerprint: bytes | None
    digest: bytes
    view: bytes
    key_id: str
    link: bytes

    def link_input(self) -> LinkInput:
        """The link input this entry was sealed with."""
        return LinkInput(
            seq=self.seq,
            topic=self.record.topic,
            partition=self.record.partition,
            offset=self.record.offset,
            timestamp_ms=self.record.timestamp_ms,
            kind=self.kind,
            duplicate_of=self.duplicate_of or NO_DUPLICATE,
            value_null=self.record.value is None,
            digest=self.digest,
            view_digest=view_digest(self.view),
        )


@dataclass(frozen=True, slots=True)
class Classified:
    """The outcome of decoding one record: an event (its id and the view its payload
    gives, after the Kafka timestamp: schemas/view.py), or the reason it is rejected."""

    event_id: uuid.UUID | None
    view_body: bytes
    reject_reason: str | None
    schema_fingerprint: bytes | None
    #: The writer schema of an accepted schema record (CHAIN.md §19), else None.
    schema: WriterSchema | None = None


def classify(
    value: bytes | None, schemas: Mapping[bytes, WriterSchema], *, schema_records: bool = True
) -> Classified:
    """Decode ``value`` into an event or a schema record, or say why it must be sealed as rejected.

    Records of the current schema go through :mod:`fastpath`, which returns the same
    outcome as :func:`classify_reference` or defers to it. With ``schema_records`` False
    (a ledger's seqs before its sealers knew schema records: CHAIN.md §19), a schema
    record is classified as any other value, which rejects it.
    """
    if schema_records and is_schema_record(value):
        assert value is not None
        fingerprint = bytes(value[2:10])
        try:
            schema = decode_schema_record(value)
        except DecodeError as exc:
            return Classified(
                event_id=None,
                view_body=rejected_view_body(fingerprint),
                reject_reason=exc.reason,
                schema_fingerprint=fingerprint,
            )
        return Classified(
            event_id=None,
            view_body=rejected_view_body(fingerprint),
            reject_reason=None,
            schema_fingerprint=fingerprint,
            schema=schema,
        )
    if value is not None and fastpath.FINGERPRINT in schemas:
        fast = fastpath.decode_view(value)
        if fast is not None:
            return Classified(
                event_id=fast[0],
                view_body=fast[1],
                reject_reason=None,
                schema_fingerprint=fastpath.FINGERPRINT,
            )
    return classify_reference(value, schemas)


def classify_reference(value: bytes | None, schemas: Mapping[bytes, WriterSchema]) -> Classified:
    """:func:`classify` by the generic decoder (codec.decode_event) and validator."""
    try:
        event = decode_event(value, schemas)
    except DecodeError as exc:
        fingerprint = None
        if value:
            try:
                fingerprint = read_fingerprint(value)
            except DecodeError:
                pass
        return Classified(
            event_id=None,
            view_body=rejected_view_body(fingerprint),
            reject_reason=exc.reason,
            schema_fingerprint=fingerprint,
        )
    assert value is not None
    fingerprint = read_fingerprint(value)
    return Classified(
        event_id=event.event_id,
        view_body=event_view_body(event, fingerprint),
        reject_reason=None,
        schema_fingerprint=fingerprint,
    )


_KINDS = {kind.code: kind for kind in EntryKind}
_EVENT, _REJECTED, _DUPLICATE, _SCHEMA = (
    k.code for k in (EntryKind.EVENT, EntryKind.REJECTED, EntryKind.DUPLICATE, EntryKind.SCHEMA)
)

#: Given event ids, return the seq of the first sealed entry of each one already in the ledger.
FirstSeqLookup = Callable[[Collection[uuid.UUID]], Mapping[uuid.UUID, int]]


@dataclass(slots=True)
class ChainHead:
    """The end of the chain: last sealed seq, its offset (-1 before any) and its link."""

    seq: int
    offset: int
    link: bytes


class Sealer:
    """Seals topic records, in offset order, onto a chain head.

    Duplicate detection needs every earlier event id: the caller passes a
    look-up into the ledger (or replay's own index) for ids sealed before this
    batch; ids within the batch are tracked here.
    """

    def __init__(
        self,
        *,
        key: SigningKey | None = None,
        head: ChainHead,
        schemas: Mapping[bytes, WriterSchema],
        key_for: Callable[[int], SigningKey] | None = None,
        schema_records_from: int | None = 1,
    ) -> None:
        # ``key_for(seq)`` picks the key per entry (rotation, forward-secure epochs:
        # schemas/keys.py); without it every entry is sealed with ``key``.
        if (key is None) == (key_for is None):
            raise ValueError("a Sealer needs exactly one of key= and key_for=")
        self._key_for = key_for
        self._key = key
        self._linker = Linker(key) if key is not None else None
        self._last: Linker | None = None
        self._last_key: SigningKey | None = None
        self.head = ChainHead(head.seq, head.offset, head.link)
        # The known writer schemas grow with each accepted schema record (CHAIN.md §19), from
        # seq ``schema_records_from`` on (None: never, the rule of ledgers sealed before it).
        self.schemas: dict[bytes, WriterSchema] = dict(schemas)
        self._schema_records_from = schema_records_from

    def _linker_for(self, seq: int) -> Linker:
        if self._linker is not None:
            return self._linker
        assert self._key_for is not None
        key = self._key_for(seq)
        # One linker only: a forward-secure sealer must not keep an old epoch's keyed state.
        if self._last is None or self._last.key_id != key.key_id:
            self._last = Linker(key)
            self._last_key = key
        return self._last

    def _key_of(self, seq: int) -> SigningKey:
        """The key :meth:`_linker_for` would link ``seq`` with (for the native sealer)."""
        if self._key is not None:
            return self._key
        self._linker_for(seq)
        assert self._last_key is not None
        return self._last_key

    def seal_batch(self, records: Iterable[TopicRecord], first_seq_of: FirstSeqLookup) -> list[SealedEntry]:
        """Seal ``records`` (strictly increasing offsets after the head) into entries.

        Raises ``ValueError`` if an offset does not follow the head: sealing out
        of order would break invariant 1, so it is refused rather than repaired.
        The head advances only as far as the returned entries; on an exception
        (including ``UnknownKey``/``ConfigError`` from ``key_for``) it is left unchanged.
        """
        records = list(records)
        native = accel.native
        if native is not None:
            sealed = self._seal_native(native, records, first_seq_of)
            if sealed is not None:
                return sealed
        schemas = dict(self.schemas)  # adopted with the head, only if the whole batch seals
        start = self._schema_records_from
        classified = []
        for position, record in enumerate(records, start=self.head.seq + 1):
            outcome = classify(record.value, schemas, schema_records=start is not None and position >= start)
            if outcome.schema is not None:
                schemas.setdefault(outcome.schema.fingerprint, outcome.schema)
            classified.append((record, outcome))
        ids = [c.event_id for _, c in classified if c.event_id is not None]
        known = dict(first_seq_of(ids)) if ids else {}
        head = ChainHead(self.head.seq, self.head.offset, self.head.link)
        entries: list[SealedEntry] = []
        for record, outcome in classified:
            if record.offset <= head.offset:
                raise ValueError(f"offset {record.offset} does not follow head offset {head.offset}")
            seq = head.seq + 1
            duplicate_of: int | None = None
            if outcome.schema is not None:
                kind = EntryKind.SCHEMA
            elif outcome.event_id is None:
                kind = EntryKind.REJECTED
            else:
                first = known.get(outcome.event_id)
                if first is None:
                    kind = EntryKind.EVENT
                    known[outcome.event_id] = seq
                else:
                    kind = EntryKind.DUPLICATE
                    duplicate_of = first
            digest = payload_digest(record.value)
            view = entry_view(record.timestamp_ms, outcome.view_body)
            link_input = LinkInput(
                seq=seq,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                kind=kind,
                duplicate_of=duplicate_of or NO_DUPLICATE,
                value_null=record.value is None,
                digest=digest,
                view_digest=view_digest(view),
            )
            linker = self._linker_for(seq)
            link = linker.link(head.link, link_input)
            entries.append(
                SealedEntry(
                    seq=seq,
                    record=record,
                    kind=kind,
                    duplicate_of=duplicate_of,
                    event_id=outcome.event_id,
                    reject_reason=outcome.reject_reason,
                    schema_fingerprint=outcome.schema_fingerprint,
                    digest=digest,
                    view=view,
                    key_id=linker.key_id,
                    link=link,
                )
            )
            head = ChainHead(seq, record.offset, link)
        self.head = head
        self.schemas = schemas
        return entries

    def _seal_native(
        self, native: accel.Native, records: list[TopicRecord], first_seq_of: FirstSeqLookup
    ) -> list[SealedEntry] | None:
        """:meth:`seal_batch` with the native decoder and sealer: one call decodes the records of
        the current schema (the others are classified as in the reference), one call computes
        the digests, views and links. The same entries and the same exceptions in the same
        order; None if the native sealer declined a value it cannot pack exactly as the
        reference does (then nothing has changed but the look-up was asked, and the reference
        runs)."""
        schemas = dict(self.schemas)
        start = self._schema_records_from
        if fastpath.FINGERPRINT in schemas:
            decoded = native.decode_views([record.value for record in records], fastpath.PREFIX)
        else:
            decoded = [None] * len(records)
        # (event id, view body, reject reason, schema fingerprint, is a schema record)
        outcomes: list[tuple[uuid.UUID | None, bytes, str | None, bytes | None, bool]] = []
        ids: list[uuid.UUID] = []
        for position, (record, hit) in enumerate(zip(records, decoded, strict=True), start=self.head.seq + 1):
            if hit is not None:
                fast_id = fastpath.uuid_from_bytes(hit[0])
                ids.append(fast_id)
                outcomes.append((fast_id, hit[1], None, fastpath.FINGERPRINT, False))
                continue
            outcome = classify(record.value, schemas, schema_records=start is not None and position >= start)
            if outcome.schema is not None:
                schemas.setdefault(outcome.schema.fingerprint, outcome.schema)
            if outcome.event_id is not None:
                ids.append(outcome.event_id)
            outcomes.append(
                (
                    outcome.event_id,
                    outcome.view_body,
                    outcome.reject_reason,
                    outcome.schema_fingerprint,
                    outcome.schema is not None,
                )
            )
        known = dict(first_seq_of(ids)) if ids else {}
        seq, offset = self.head.seq, self.head.offset
        rows: list[accel.SealRow] = []
        single = self._key
        keys: list[tuple[str, bytes]] = [] if single is None else [(single.key_id, single.secret)]
        key_index: dict[tuple[str, bytes], int] = {}
        index = 0
        for record, (event_id, view_body, _, _, is_schema) in zip(records, outcomes, strict=True):
            if record.offset <= offset:
                raise ValueError(f"offset {record.offset} does not follow head offset {offset}")
            seq, offset = seq + 1, record.offset
            duplicate_of = NO_DUPLICATE
            if is_schema:
                code = _SCHEMA
            elif event_id is None:
                code = _REJECTED
            else:
                first = known.get(event_id)
                if first is None:
                    code = _EVENT
                    known[event_id] = seq
                else:
                    code = _DUPLICATE
                    duplicate_of = first
            if single is None:
                key = self._key_of(seq)
                pair = (key.key_id, key.secret)
                found = key_index.get(pair)
                if found is None:
                    found = key_index[pair] = len(keys)
                    keys.append(pair)
                index = found
            rows.append(
                (
                    index,
                    seq,
                    record.topic,
                    record.partition,
                    record.offset,
                    record.timestamp_ms,
                    code,
                    duplicate_of,
                    record.value,
                    view_body,
                )
            )
        sealed = native.seal_rows(keys, self.head.link, rows)
        if sealed is None:
            return None
        entries = [
            SealedEntry(
                seq=row[1],
                record=record,
                kind=_KINDS[row[6]],
                duplicate_of=row[7] if row[6] == _DUPLICATE else None,
                event_id=outcome[0],
                reject_reason=outcome[2],
                schema_fingerprint=outcome[3],
                digest=digest,
                view=view,
                key_id=keys[row[0]][0],
                link=link,
            )
            for record, outcome, row, (digest, view, link) in zip(
                records, outcomes, rows, sealed, strict=True
            )
        ]
        self.head = (
            ChainHead(entries[-1].seq, entries[-1].record.offset, entries[-1].link)
            if entries
            else ChainHead(self.head.seq, self.head.offset, self.head.link)
        )
        self.schemas = schemas
        return entries


#: Domain tag of a retention anchor's MAC (CHAIN.md §17).
ANCHOR_TAG = b"baldur-audit/anchor/v1"


def anchor_message(
    *, ledger_id: str, key_id: str, seq: int, offset: int, timestamp_ms: int, link: bytes
) -> bytes:
    """The bytes a retention anchor's MAC covers, framed like a link (CHAIN.md §2, §17): the
    same for the ledger's anchors and a file chain's."""
    return frame(
        ANCHOR_TAG,
        [
            (b"ledger", ledger_id.encode("utf-8")),
            (b"key_id", key_id.encode("utf-8")),
            (b"seq", struct.pack(">Q", seq)),
            (b"offset", struct.pack(">q", offset)),
            (b"timestamp", struct.pack(">q", timestamp_ms)),
            (b"link", link),
        ],
    )
