"""What the viewer and its API read from the ledger, through read-only connections
(``postgres/reader.py``): pages of entries with ``log``'s filters (``postgres/search.py``),
one entry, its evidence bundle (the same bytes as ``prove``), the public keys (as
``keys public`` prints them) and the ledger's status with the last recorded verify result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from baldur_audit.schemas.checkpoint import UnverifiableCheckpoint, VerifierKey
from baldur_audit.schemas.errors import AuditError, ConfigError

from ..checkpoint_keys import CheckpointKeys
from ..evidence.build import build_inclusion_bundle
from ..evidence.bundle import BundleInvalid, render
from ..evidence.check import check_bundle
from ..evidence.export import ExportPlan, write_export
from ..evidence.export_format import FORMATS
from ..postgres.merkle import stored_checkpoint
from ..postgres.reader import ReaderPool
from ..postgres.search import LogFilter, LogPage, entry_by_seq, search_page
from ..postgres.verify_results import last_verify_result
from ..times import parse_duration, parse_time

log = logging.getLogger(__name__)

KINDS: dict[str, tuple[str, ...]] = {
    "event": ("event",),
    "rejected": ("rejected",),
    "duplicate": ("duplicate",),
    "schema": ("schema",),
    "all": ("event", "duplicate", "rejected", "schema"),
}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
FILTER_FIELDS = ("target", "actor", "action", "trace_id", "since", "until", "before", "window", "kind")


MAX_EXPORT_ENTRIES = 100_000
#: Matches are counted up to this many: an exact count of a million matches costs more than
#: the page itself (the page says "more than 10,000").
COUNT_LIMIT = 10_000


class BundleRefused(AuditError):
    """The bundle was built but does not verify: the ledger or its tree was changed."""


def _text(params: Mapping[str, str], name: str, limit: int = 500) -> str | None:
    value = (params.get(name) or "").strip()
    if len(value) > limit:
        raise ConfigError(f"{name}: at most {limit} characters")
    return value or None


def _whole(params: Mapping[str, str], name: str, low: int, high: int, default: int | None) -> int | None:
    text = (params.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{name}: a whole number from {low} to {high}")
    return int(text)


def parse_filter(params: Mapping[str, str], *, now: datetime) -> LogFilter:
    """The :class:`LogFilter` of a request's query parameters — the same filters as ``log``:
    ``target``/``actor`` (``*`` wildcards), ``action``, ``trace_id``, ``since``/``until`` or
    ``before`` with ``window`` (default 1h), ``kind`` (event, rejected, duplicate, schema, all),
    ``after_seq`` and ``limit``. Raises :class:`ConfigError` (a bad request)."""
    since, until, before = (_text(params, name, 64) for name in ("since", "until", "before"))
    start = parse_time(since, now=now) if since else None
    end = parse_time(until, now=now) if until else None
    if before:
        if since or until:
            raise ConfigError("before cannot be combined with since/until")
        end = parse_time(before, now=now)
        try:
            start = end - parse_duration(_text(params, "window", 32) or "1h")
        except OverflowError:
            raise ConfigError("window reaches before year 1") from None
    kind = _text(params, "kind", 16) or "event"
    if kind not in KINDS:
        raise ConfigError(f"kind: one of {', '.join(KINDS)}")
    trace_id = _text(params, "trace_id", 64)
    return LogFilter(
        target=_text(params, "target"),
        actor=_text(params, "actor"),
        action=_text(params, "action", 100),
        trace_id=trace_id,
        since=start,
        until=end,
        kinds=KINDS[kind],
        limit=_whole(params, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT) or DEFAULT_LIMIT,
        after_seq=_whole(params, "after_seq", 0, 2**63 - 1, None),
        count_limit=COUNT_LIMIT,
    )


@dataclass(frozen=True, slots=True)
class Banner:
    """The status banner: ``state`` is intact, tampered or unverified, ``text`` says it."""

    state: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "text": self.text}


def stamp(moment: datetime) -> str:
    """A time as the viewer shows it: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def banner_of(result: Any, *, now: datetime, max_age: timedelta) -> Banner:
    """What the banner says for the newest recorded verify result (None: never verified)."""
    if result is None:
        return Banner("unverified", "not verified since: never (no verify result was recorded)")
    when = stamp(result.checked_at)
    if result.status == "tampered":
        where = f" at seq {result.break_seq}" if result.break_seq is not None else ""
        kind = f" ({result.break_kind})" if result.break_kind else ""
        return Banner("tampered", f"tampered{where}{kind}: found by {result.tool} at {when}")
    if result.status != "intact":
        return Banner("unverified", f"not verified since {when} (the last check could not complete)")
    if now - result.checked_at > max_age:
        return Banner("unverified", f"not verified since {when}")
    through = f" through seq {result.head_seq}" if result.head_seq is not None else ""
    return Banner("intact", f"intact: verified{through} by {result.tool} at {when}")


class LagProbe:
    """The topic's end offset, read at most every ``ttl`` seconds (None while the broker
    cannot be reached): the status page must not wait for Kafka on every request."""

    def __init__(self, read_end: Callable[[], int], *, ttl: float = 10.0) -> None:
        self._read_end = read_end
        self._ttl = ttl
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._end: int | None = None

    def end_offset(self) -> int | None:
        with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                try:
                    self._end = self._read_end()
                except AuditError as exc:
                    log.warning("topic end offset unavailable: %s", exc)
                    self._end = None
                self._at = time.monotonic()
            return self._end


class LedgerReads:
    """The viewer's reads, each on a read-only connection borrowed from ``pool``."""

    def __init__(
        self,
        pool: ReaderPool,
        *,
        verifiers: Sequence[VerifierKey] = (),
        public_keys: str | None = None,
        lag: LagProbe | None = None,
        verify_max_age: timedelta = timedelta(hours=25),
        export_keys: CheckpointKeys | None = None,
        max_export_entries: int = MAX_EXPORT_ENTRIES,
    ) -> None:
        self._pool = pool
        self._verifiers = tuple(verifiers)
        self.public_keys = public_keys
        self._lag = lag
        self._max_age = verify_max_age
        self._export_keys = export_keys
        self._max_export = max_export_entries

    def page(self, query: LogFilter) -> LogPage:
        """A page of entries matching ``query`` (with how many match in all)."""
        with self._pool.borrow() as store:
            return search_page(store, query)

    def entry(self, seq: int) -> dict[str, Any] | None:
        """Entry ``seq`` of any kind, with its before/after (None: there is none)."""
        with self._pool.borrow() as store:
            return entry_by_seq(store, seq)

    def bundle(self, seq: int) -> str:
        """The evidence bundle of entry ``seq``, the same bytes as ``prove SEQ`` prints.

        Raises ProofUnavailable (no checkpoint covers it yet), ChainBreak, and
        :class:`BundleRefused` when it does not verify with the configured keys (as ``prove``
        refuses to print it).
        """
        with self._pool.borrow() as store, store.snapshot() as conn:
            text = render(build_inclusion_bundle(conn, seq, include_payload=True))
        if self._verifiers:
            try:
                check_bundle(text, self._verifiers)
            except BundleInvalid as exc:
                raise BundleRefused(
                    f"the bundle of entry {seq} does not verify (the ledger or its tree was changed): "
                    f"{exc.detail}"
                ) from None
            except UnverifiableCheckpoint:
                pass  # signed by a key this side does not hold: the auditor's key decides
        return text

    def status(self, *, now: datetime | None = None) -> dict[str, Any]:
        """Head, lag, newest checkpoint, the last verify result and the banner."""
        now = now or datetime.now(UTC)
        with self._pool.borrow() as store:
            meta = store.read_meta()
            head = store.read_head()
            with store.snapshot() as conn:
                checkpoint = stored_checkpoint(conn)
                result = last_verify_result(conn)
        end = self._lag.end_offset() if self._lag is not None else None
        return {
            "ledger_id": meta.ledger_id,
            "topic": meta.topic,
            "head": {"seq": head.seq, "offset": head.offset, "epoch": head.epoch},
            "topic_end_offset": end,
            "lag": None if end is None else max(end - (head.offset + 1), 0),
            "checkpoint": None
            if checkpoint is None
            else {
                "size": checkpoint.tree_size,
                "root": checkpoint.root.hex(),
                "signed_at": checkpoint.signed_at,
            },
            "last_verify": None if result is None else result.as_dict(),
            "banner": banner_of(result, now=now, max_age=self._max_age).as_dict(),
        }

    def banner(self, *, now: datetime | None = None) -> Banner:
        """The banner alone (one small query), for every viewer page."""
        with self._pool.borrow() as store, store.snapshot() as conn:
            result = last_verify_result(conn)
        return banner_of(result, now=now or datetime.now(UTC), max_age=self._max_age)

    def export(self, params: Mapping[str, str], folder: Path, *, now: datetime | None = None) -> Path:
        """Write the export that ``params`` select (``first_seq``/``since``, ``last_seq``/``until``,
        ``format`` ndjson or csv) into ``folder``/export, as ``baldur-audit export`` writes it.

        Raises ConfigError (a bad parameter, no checkpoint signing key, more entries than the
        server's limit), ExportRefused, ExportMismatch, ChainBreak, StoreUnavailable.
        """
        if self._export_keys is None or not self._export_keys.signers:
            raise ConfigError(
                "exports are signed with the checkpoint key, and this server has none "
                "(BALDUR_SECRETS_CHECKPOINT_KEY)"
            )
        now = now or datetime.now(UTC)
        fmt = _text(params, "format", 16) or "ndjson"
        if fmt not in FORMATS:
            raise ConfigError(f"format: one of {', '.join(FORMATS)}")
        since, until = _text(params, "since", 64), _text(params, "until", 64)
        first = _whole(params, "first_seq", 1, 2**63 - 1, None)
        last = _whole(params, "last_seq", 1, 2**63 - 1, None)
        if (first is not None and since) or (last is not None and until):
            raise ConfigError("give first_seq or since, and last_seq or until, not both")
        limit = self._max_export

        def within_limit(plan: ExportPlan) -> None:
            if plan.count > limit:
                raise ConfigError(
                    f"seq {plan.first_seq}..{plan.last_seq} holds {plan.count} entries; this server "
                    f"exports at most {limit} at once (use baldur-audit export for more)"
                )

        out = folder / "export"
        with self._pool.borrow() as store:
            write_export(
                store,
                self._export_keys,
                out=out,
                fmt=fmt,
                first_seq=first,
                last_seq=last,
                since=parse_time(since, now=now) if since else None,
                until=parse_time(until, now=now) if until else None,
                plan_ready=within_limit,
                now=now,
            )
        return out
