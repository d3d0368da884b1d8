"""A whole-ledger walk split into seq ranges checked at once, in processes.

Each link can be checked given its stored predecessor, so a range ``first..last`` starts
from the stored entry just before ``first`` (:func:`~..postgres.walk.row_before`) as an
earlier walk would have left it (:meth:`LedgerWalk.resume_after`). Every process reads the
walk's own snapshot (exported by the walk's transaction, imported by the worker's). The
results are joined in seq order: the ranges before the first one that breaks were intact, so
every later range started from exactly the state a single walk would have reached, and the
first break, the counts up to it and the end state are those of one walk whatever the
number of ranges. The walk's own process checks the first range; the others are forked
(nothing is re-imported) and send back plain values.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from baldur_audit.schemas.accel import NativeRowChecker
from baldur_audit.schemas.errors import ChainBreak, StoreUnavailable

from ..postgres import Connection
from ..postgres.rows import SEQ, SealedRow
from ..postgres.walk import (
    conninfo_of,
    copies_view,
    copy_between,
    export_snapshot,
    is_utf8,
    open_in_snapshot,
    prefetched,
    row_after,
    row_before,
    rows_between,
    seq_span,
)

#: Given a connection in the walk's snapshot, what names the column a link break changed.
ExplainIn = Callable[[Connection], Callable[[int], "str | None"]]
#: Seqs per binary ``COPY`` of the native row checker: a stopped copy's rest is read and dropped.
COPY_WINDOW = 100_000
#: Fewer entries than this per range are not worth a process.
MIN_RANGE = 25_000
#: Seconds a worker may take beyond the walk's own range before the walk gives up on it.
WORKER_GRACE = 3600.0


class Peekable:
    """Rows with a look at the next one (a link break is explained by its successor)."""

    def __init__(self, rows: Iterator[SealedRow]) -> None:
        self._rows = rows
        self._next: SealedRow | None = None

    def __iter__(self) -> Peekable:
        return self

    def __next__(self) -> SealedRow:
        if self._next is not None:
            row, self._next = self._next, None
            return row
        return next(self._rows)

    def peek(self) -> SealedRow | None:
        if self._next is None:
            self._next = next(self._rows, None)
        return self._next


class LedgerWalk(Protocol):
    """What a range needs of ``verify.LedgerWalk``: its state between rows, and its check."""

    kinds: dict[str, int]
    pruned: int
    prev_link: bytes
    prev_offset: int
    next_seq: int
    unpruned_seen: bool
    explain: Callable[[int], str | None]

    def resume_after(self, row: SealedRow) -> None: ...

    def row_checker(self) -> NativeRowChecker | None: ...

    def adopt(self, checker: NativeRowChecker) -> None: ...

    def check(self, row: SealedRow, upcoming: Peekable) -> None: ...


class FoundBreak(ChainBreak):
    """A break found by a worker, rebuilt in the walk's process with the same fields."""

    def __init__(self, seq: int, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(seq, detail)


@dataclass(slots=True)
class RangeResult:
    """What checking one range gave: plain values, sent back from a worker."""

    checked: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    state: tuple[bytes, int, int, bool] | None = None  # prev_link, prev_offset, next_seq, unpruned seen
    found: tuple[int, str, str] | None = None  # seq, kind, detail
    error: str | None = None


def _zeroed(walk: LedgerWalk) -> None:
    walk.kinds = dict.fromkeys(walk.kinds, 0)
    walk.pruned = 0


def _state(walk: LedgerWalk) -> tuple[bytes, int, int, bool]:
    return walk.prev_link, walk.prev_offset, walk.next_seq, walk.unpruned_seen


def check_range(
    conn: Connection,
    walk: LedgerWalk,
    first: int,
    last: int,
    *,
    floor: int,
    utf8: bool,
    progress: Callable[[int], None] | None = None,
) -> RangeResult:
    """Check the entries with ``first <= seq <= last`` with ``walk`` (its counts zeroed), from
    the stored entry before ``first`` (at least ``floor``, the walk's first seq) if any."""
    _zeroed(walk)
    result = RangeResult()
    try:
        if first > floor:
            before = row_before(conn, first, floor=floor, utf8=utf8)
            if before is not None:
                walk.resume_after(before)

        if utf8 and walk.row_checker() is not None and copies_view(conn):
            _check_native(conn, walk, first, last, result, progress)
        else:
            _check_rows(conn, walk, first, last, utf8=utf8, result=result, progress=progress)
    except ChainBreak as exc:
        result.found = (exc.seq, exc.kind, exc.detail)
    result.kinds, result.pruned, result.state = dict(walk.kinds), walk.pruned, _state(walk)
    return result


def _upcoming(conn: Connection, first: int, last: int, *, utf8: bool) -> Generator[SealedRow, None, None]:
    """The entries ``first..last`` read ahead, then the one after ``last`` (if any)."""
    read = prefetched(rows_between(conn, first, last, utf8=utf8))
    try:
        yield from read
    finally:
        read.close()
    after = row_after(conn, last, utf8=utf8)  # only ever read to explain a break
    if after is not None:
        yield after


def _tick(result: RangeResult, progress: Callable[[int], None] | None, checked: int) -> None:
    """Count ``checked`` more entries; report each 10,000 as the row-by-row walk does."""
    before = result.checked
    result.checked += checked
    if progress is not None:
        for _ in range(result.checked // 10_000 - before // 10_000):
            progress(10_000)


def _check_rows(
    conn: Connection,
    walk: LedgerWalk,
    first: int,
    last: int,
    *,
    utf8: bool,
    result: RangeResult,
    progress: Callable[[int], None] | None,
    only_one: bool = False,
) -> int | None:
    """Check the entries ``first..last`` row by row with ``walk.check`` (all of them, or with
    ``only_one`` only the first); returns the seq of the last one checked."""
    source = _upcoming(conn, first, last, utf8=utf8)
    rows = Peekable(source)
    seq = None
    try:
        for row in rows:
            if row[SEQ] > last:
                break
            walk.check(row, rows)
            seq = row[SEQ]
            _tick(result, progress, 1)
            if only_one:
                break
    finally:
        source.close()  # stops the read-ahead
    return seq


def _check_native(
    conn: Connection,
    walk: LedgerWalk,
    first: int,
    last: int,
    result: RangeResult,
    progress: Callable[[int], None] | None,
) -> None:
    """Check the entries ``first..last`` with the native row checker, over binary ``COPY`` in
    windows of :data:`COPY_WINDOW` seqs. A row it does not accept goes to ``walk.check`` (row
    by row, as without the accelerator), which raises the break or accepts it; then the
    native checker goes on after it."""
    low = first
    while low <= last:
        high = min(low + COPY_WINDOW - 1, last)
        checker = walk.row_checker()
        assert checker is not None
        stream = copy_between(conn, low, high)
        try:
            for data in stream:
                if not checker.feed(data):
                    break
            else:
                checker.finish()
        finally:
            stream.close()  # reads and drops the rest after a stop
        walk.adopt(checker)
        _tick(result, progress, checker.checked)
        if checker.stopped is None:
            low = high + 1
            continue
        taken = _check_rows(
            conn,
            walk,
            checker.last_seq + 1 if checker.checked else low,
            last,
            utf8=True,
            result=result,
            progress=progress,
            only_one=True,
        )
        if taken is None:
            return
        low = taken + 1


def _worker(
    out: Any,
    conninfo: str,
    snapshot: str,
    walk: LedgerWalk,
    bounds: tuple[int, int, int],
    utf8: bool,
    explain_in: ExplainIn,
) -> None:
    """A forked worker: check one range in the exported snapshot, send the result."""
    first, last, floor = bounds
    try:
        conn = open_in_snapshot(conninfo, snapshot)
        try:
            walk.explain = explain_in(conn)  # names a changed column from this snapshot
            result = check_range(conn, walk, first, last, floor=floor, utf8=utf8)
        finally:
            conn.close()
    except Exception as exc:  # reported to the walk, which raises it as StoreUnavailable
        result = RangeResult(error=f"{type(exc).__name__}: {exc}")
    out.send(result)
    out.close()


def split(low: int, high: int, jobs: int) -> list[tuple[int, int]]:
    """``low..high`` as at most ``jobs`` contiguous ranges of at least MIN_RANGE seqs."""
    count = max(1, min(jobs, (high - low + 1) // MIN_RANGE))
    size = -(-(high - low + 1) // count)
    return [(a, min(a + size - 1, high)) for a in range(low, high + 1, size)]


def default_jobs() -> int:
    """One range per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def walk_ranges(
    conn: Connection,
    walk: LedgerWalk,
    first: int,
    *,
    jobs: int | None,
    explain_in: ExplainIn,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Check every entry from seq ``first`` with ``walk``, in up to ``jobs`` ranges at once
    (None: :func:`default_jobs`); afterwards ``walk`` is where one walk would be (its counts
    up to the first break). Returns the entries checked; raises the first :class:`ChainBreak`,
    StoreUnavailable."""
    span = seq_span(conn, first)
    if span is None:
        return 0
    utf8 = is_utf8(conn)
    ranges = split(max(span[0], first), span[1], jobs or default_jobs())
    workers: list[tuple[Any, Any]] = []
    if len(ranges) > 1:
        snapshot, conninfo = export_snapshot(conn), conninfo_of(conn)
        context = multiprocessing.get_context("fork")
        for low, high in ranges[1:]:
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker,
                args=(send, conninfo, snapshot, walk, (low, high, first), utf8, explain_in),
                daemon=True,
            )
            process.start()
            send.close()
            workers.append((process, receive))
    results = [check_range(conn, walk, *ranges[0], floor=first, utf8=utf8, progress=progress)]
    try:
        for process, receive in workers:
            if not receive.poll(WORKER_GRACE):
                raise StoreUnavailable("a verify worker did not finish")
            try:
                results.append(receive.recv())
            except EOFError:
                raise StoreUnavailable(
                    f"a verify worker ended without a result (exit {process.exitcode})"
                ) from None
            process.join()
    finally:
        for process, receive in workers:
            receive.close()
            if process.is_alive():
                process.terminate()
                process.join()
    return _join(walk, results, progress)


def _join(walk: LedgerWalk, results: list[RangeResult], progress: Callable[[int], None] | None) -> int:
    """Fold the ranges' results in seq order into ``walk``; raise the first break."""
    kinds = dict.fromkeys(walk.kinds, 0)
    pruned = checked = 0
    for index, result in enumerate(results):
        if result.error is not None:
            raise StoreUnavailable(f"verify worker: {result.error}")
        for label, count in result.kinds.items():
            kinds[label] += count
        pruned += result.pruned
        checked += result.checked
        if progress is not None and index:
            progress(result.checked)
        if result.state is not None and (result.checked or result.found):
            walk.prev_link, walk.prev_offset, walk.next_seq, walk.unpruned_seen = result.state
        if result.found is not None:
            walk.kinds, walk.pruned = kinds, pruned
            raise FoundBreak(*result.found)
    walk.kinds, walk.pruned = kinds, pruned
    return checked
