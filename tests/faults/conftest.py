"""The fault campaign's services, chainer processes, event streams and after-checks.

Every scenario runs on a PRIVATE Kafka broker (127.0.0.1:19092, controller 19093) and a
PRIVATE PostgreSQL cluster (127.0.0.1:15432), started once per session and stopped at its
end (also on failure), so that a scenario may stop, kill and restart them without touching
the shared stack (``make up``). Each scenario gets a fresh topic and database.

``BALDUR_FAULTS_SCALE=quick`` (default, what ``make test`` runs) keeps the whole package
within about three minutes; ``full`` runs the campaign's full numbers (``make faults``). Each
scenario appends one JSON line to ``.local/results/faults.jsonl``.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.dedicated import ROOT, DedicatedKafka, DedicatedPostgres
from tests.support.stack import Ledger, fresh_ledger, make_event

SCALE = os.environ.get("BALDUR_FAULTS_SCALE", "quick")
if SCALE not in ("quick", "full"):
    raise pytest.UsageError(f"BALDUR_FAULTS_SCALE: expected quick or full, found {SCALE!r}")
RESULTS = Path(os.environ.get("BALDUR_FAULTS_RESULTS", ROOT / ".local" / "results" / "faults.jsonl"))
#: Below Linux's ephemeral range (32768-60999), so no client's outgoing connection can hold them
#: (seen once: the spool broker's 39192 "already in use" while two test workers ran).
KAFKA_PORT = 19092
PG_PORT = 15432
#: Every scenario's random choices come from this seed (printed, recorded, and settable).
SEED = int(os.environ.get("BALDUR_FAULTS_SEED", str(int(time.time()))))

T = TypeVar("T")


def scaled(quick: T, full: T) -> T:
    """The quick or the full figure, by ``BALDUR_FAULTS_SCALE``."""
    return full if SCALE == "full" else quick


def full_only(test: Callable[..., None]) -> Callable[..., None]:
    """Run this test at full scale only (deselected, not skipped, in the quick subset)."""
    test._faults_full_only = True  # type: ignore[attr-defined]
    return test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SCALE == "full":
        return
    deselected = [item for item in items if getattr(getattr(item, "obj", None), "_faults_full_only", False)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


def rng(scenario: str) -> random.Random:
    """A random source for one scenario, reproducible from ``BALDUR_FAULTS_SEED``."""
    return random.Random(f"{SEED}:{scenario}")


# -- services ----------------------------------------------------------------------


@dataclass
class Services:
    """The private broker and database cluster of this session."""

    kafka: DedicatedKafka
    pg: DedicatedPostgres

    def kafka_env(self) -> dict[str, str]:
        """The environment that points deploy/kafka.sh at the private broker."""
        return {
            "BALDUR_KAFKA_HOME": str(self.kafka.home),
            "BALDUR_KAFKA_PORT": str(self.kafka.port),
            "BALDUR_KAFKA_CONTROLLER_PORT": str(self.kafka.port + 1),
        }

    def ensure_up(self) -> None:
        """Start whichever of the two a previous scenario left down (idempotent, ~1 s)."""
        self.kafka.start()
        self.pg.start()


@contextmanager
def _ports_lock(timeout: float) -> Iterator[None]:
    """One fault session at a time on this machine: two sessions (two checkouts, or `make
    test` beside `make faults`) would start, stop and kill each other's services on the same
    ports. The lock is per port pair and machine-wide, and released when the process ends."""
    path = Path(tempfile.gettempdir()) / f"baldur-faults-{KAFKA_PORT}-{PG_PORT}.lock"
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another fault session held {path} for {timeout:.0f} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Start the private Kafka and PostgreSQL once; stop both at the end of the session."""
    found = Services(DedicatedKafka("faults", KAFKA_PORT), DedicatedPostgres("faults", PG_PORT))
    with _ports_lock(timeout=float(os.environ.get("BALDUR_FAULTS_LOCK_WAIT", "1800"))):
        yield from _started(found)


def _started(found: Services) -> Iterator[Services]:
    try:
        found.kafka.start()
        found.pg.start()
        yield found
    finally:
        for stop in (found.kafka.stop, found.pg.stop):
            try:
                stop()
            except Exception as exc:  # report, but still try the other one
                print(f"faults: could not stop a private service: {exc}", file=sys.stderr)


@pytest.fixture
def led(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A fresh topic and database on the private services, ``init`` done."""
    services.ensure_up()
    with fresh_ledger(
        tmp_path_factory.mktemp("faults"),
        bootstrap=services.kafka.bootstrap,
        dsn=services.pg.dsn,
        owner_dsn=services.pg.owner_dsn,
        admin_dsn=services.pg.admin_dsn,
    ) as ledger:
        yield ledger


# -- chainer processes --------------------------------------------------------------


class ChainerProc:
    """One ``baldur-audit chain`` subprocess; output goes to files (no pipe can fill up)."""

    def __init__(self, ledger: Ledger, workdir: Path, *args: str, name: str) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "baldur_audit.consumers", "-v", "chain", *args],
                env=ledger.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.pid = self.proc.pid
        self.client_id = args[args.index("--client-id") + 1] if "--client-id" in args else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def kill9(self) -> None:
        """SIGKILL and reap."""
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)  # a stopped process dies at once either way
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the chainer finishes its batch and exits 0) and wait."""
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stats(self) -> dict[str, Any]:
        """The ``--json`` statistics the chainer printed when it stopped."""
        return json.loads(self.stdout.strip().splitlines()[-1])


@dataclass
class Chainers:
    """Starts chainers for one scenario and kills every survivor at teardown (by pid)."""

    ledger: Ledger
    workdir: Path
    started: list[ChainerProc] = field(default_factory=list)

    def start(self, *args: str) -> ChainerProc:
        proc = ChainerProc(self.ledger, self.workdir, *args, name=f"chainer-{len(self.started)}")
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.alive():
                proc.kill9()


@pytest.fixture
def chainers(led: Ledger, tmp_path: Path) -> Iterator[Chainers]:
    found = Chainers(led, tmp_path)
    try:
        yield found
    finally:
        found.cleanup()


# -- producing ------------------------------------------------------------------------


class EventStream:
    """Produces ``count`` valid events from a background thread, ``chunk`` at a time with
    ``pause`` seconds between chunks, through an idempotent producer that outlives broker
    restarts (it queues and retries). Tracks which event ids Kafka acknowledged."""

    def __init__(
        self,
        ledger: Ledger,
        count: int,
        *,
        chunk: int = 500,
        pause: float = 0.05,
        over: float | None = None,
        start: int = 0,
        target: str = "svc.timeout",
    ) -> None:
        """``over``: spread the stream over about that many seconds (sets ``pause``)."""
        from confluent_kafka import Producer

        if over is not None:
            pause = over / max(count / chunk, 1)
        self.count = count
        self.acked: set[uuid.UUID] = set()
        self.failed: dict[uuid.UUID, str] = {}
        self.sent = 0
        self._chunk, self._pause, self._start, self._target = chunk, pause, start, target
        self._topic = ledger.topic
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._producer = Producer(
            {
                "bootstrap.servers": ledger.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 20,
                "message.timeout.ms": 600_000,
                "log_level": 2,
                "error_cb": lambda err: None,
            }
        )
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def __enter__(self) -> EventStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._producer.flush(10)

    def _report(self, event_id: uuid.UUID, err: Any, _msg: Any) -> None:
        with self._lock:
            if err is None:
                self.acked.add(event_id)
            else:
                self.failed[event_id] = str(err)

    def _run(self) -> None:
        from baldur_audit.schemas.codec import encode_event

        try:
            for first in range(self._start, self._start + self.count, self._chunk):
                if self._stop.is_set():
                    return
                last = min(first + self._chunk, self._start + self.count)
                for i in range(first, last):
                    event = make_event(i, target=self._target)
                    payload = encode_event(event)
                    while True:
                        try:
                            self._producer.produce(
                                self._topic,
                                value=payload,
                                on_delivery=lambda err, msg, eid=event.event_id: self._report(eid, err, msg),
                            )
                            break
                        except BufferError:  # queue full (broker down): wait for room
                            self._producer.poll(0.1)
                    self.sent += 1
                    self._producer.poll(0)
                self._producer.poll(0)
                if self._pause:
                    time.sleep(self._pause)
        except BaseException as exc:  # surfaced by wait()
            self._error = exc

    @property
    def done_producing(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        """Wait until every event was produced and has a delivery report."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"producer still running after {timeout} s"
        if self._error is not None:
            raise self._error
        remaining = self._producer.flush(timeout)
        assert remaining == 0, f"{remaining} events still undelivered after {timeout} s"
        assert len(self.acked) + len(self.failed) == self.count


# -- watching and checking the ledger ------------------------------------------------


class Watch:
    """Cheap looks at the topic end and the chain head (no CLI process per look)."""

    def __init__(self, ledger: Ledger) -> None:
        from confluent_kafka import Consumer

        self.ledger = ledger
        self._consumer = Consumer(
            {
                "bootstrap.servers": ledger.bootstrap,
                "log_level": 2,
                "group.id": f"faults-watch-{uuid.uuid4().hex[:8]}",
                "error_cb": lambda err: None,
            }
        )

    def end_offset(self, timeout: float = 10) -> int:
        from confluent_kafka import TopicPartition

        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.ledger.topic, 0), timeout=timeout, cached=False
        )
        return int(high)

    def head(self) -> tuple[int, int, int]:
        """(seq, offset, epoch) of the chain head; (-1, -2, -1) when the database is down."""
        import psycopg

        try:
            with psycopg.connect(self.ledger.dsn, connect_timeout=3, autocommit=True) as conn:
                row = conn.execute("SELECT last_seq, last_offset, epoch FROM chain_head").fetchone()
        except psycopg.OperationalError:
            return (-1, -2, -1)
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def caught_up(self) -> bool:
        end = self.end_offset()
        return end > 0 and self.head()[1] + 1 == end

    def close(self) -> None:
        self._consumer.close()


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.25) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class LedgerCheck:
    """What the after-checks found; :meth:`problems` lists what is wrong."""

    topic_records: int
    entries: int
    seq_dense: bool
    offsets_once: bool
    lost: int  # topic offsets with no entry + acknowledged events with no event entry
    duplicated: int  # offsets sealed twice + event ids sealed twice as kind 'event'
    kinds: dict[str, int]
    acked_missing: int
    verify_exit: int
    verify_intact: bool
    replay_exit: int
    replay_consistent: bool
    verify_detail: Any = None
    replay_detail: Any = None

    def problems(self) -> list[str]:
        found = []
        if self.entries != self.topic_records:
            found.append(f"{self.entries} entries for {self.topic_records} topic records")
        if not self.seq_dense:
            found.append("seq is not 1..n")
        if not self.offsets_once:
            found.append("some offset has no entry or more than one")
        if self.lost or self.duplicated:
            found.append(f"lost {self.lost}, duplicated {self.duplicated}")
        if self.acked_missing:
            found.append(f"{self.acked_missing} acknowledged events not sealed as events")
        if self.verify_exit != 0 or not self.verify_intact:
            found.append(f"verify exit {self.verify_exit}: {self.verify_detail}")
        if self.replay_exit != 0 or not self.replay_consistent:
            found.append(f"replay exit {self.replay_exit}: {self.replay_detail}")
        return found


def check_ledger(ledger: Ledger, acked: Sequence[uuid.UUID] | set[uuid.UUID] = ()) -> LedgerCheck:
    """One entry per topic offset (no gaps, none twice), seq dense, every acknowledged event
    id sealed exactly once as an event and no event id twice, ``verify --json`` intact
    (exit 0) and ``replay --json`` consistent (exit 0)."""
    watch = Watch(ledger)
    try:
        end = watch.end_offset()
    finally:
        watch.close()
    with ledger.app() as conn:
        n, min_seq, max_seq, distinct_offsets, min_off, max_off = conn.execute(
            "SELECT count(*), min(seq), max(seq), count(DISTINCT kafka_offset),"
            " min(kafka_offset), max(kafka_offset) FROM audit_entries"
        ).fetchone()
        kinds = dict(conn.execute("SELECT kind, count(*) FROM audit_entries GROUP BY kind").fetchall())
        events = conn.execute(
            "SELECT event_id, count(*) FROM audit_entries WHERE kind = 'event' GROUP BY event_id"
        ).fetchall()
    sealed_events = {row[0]: row[1] for row in events}
    seq_dense = n == 0 or (min_seq == 1 and max_seq == n)
    offsets_once = distinct_offsets == n and (n == 0 or (min_off == 0 and max_off == n - 1))
    acked_missing = sum(1 for eid in acked if sealed_events.get(eid, 0) != 1)
    twice = sum(count - 1 for count in sealed_events.values() if count > 1)
    lost = max(end - distinct_offsets, 0) + acked_missing
    duplicated = (n - distinct_offsets) + twice
    verify = ledger.cli("verify", "--json", timeout=900)
    replay = ledger.cli("replay", "--json", timeout=900)
    verify_report = _json_or_text(verify)
    replay_report = _json_or_text(replay)
    return LedgerCheck(
        topic_records=end,
        entries=n,
        seq_dense=seq_dense,
        offsets_once=offsets_once,
        lost=lost,
        duplicated=duplicated,
        kinds=kinds,
        acked_missing=acked_missing,
        verify_exit=verify.returncode,
        verify_intact=isinstance(verify_report, dict) and verify_report.get("intact") is True,
        replay_exit=replay.returncode,
        replay_consistent=isinstance(replay_report, dict) and replay_report.get("consistent") is True,
        verify_detail=verify_report if verify.returncode else None,
        replay_detail=replay_report if replay.returncode else None,
    )


def _json_or_text(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError:
        return (done.stdout + done.stderr).strip()[-2000:]


# -- results -------------------------------------------------------------------------


def _git_commit() -> str | None:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def record_result(
    scenario: str,
    *,
    runs: int,
    events: int,
    check: LedgerCheck | None,
    wall_s: float,
    detected: Any = None,
    ok: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Append this scenario's result row to ``.local/results/faults.jsonl`` and return it."""
    row: dict[str, Any] = {
        "scenario": scenario,
        "scale": SCALE,
        "seed": SEED,
        "runs": runs,
        "events": events,
        "topic_records": check.topic_records if check else None,
        "entries": check.entries if check else None,
        "lost": check.lost if check else None,
        "duplicated": check.duplicated if check else None,
        "verify_intact": check.verify_intact if check else None,
        "replay_consistent": check.replay_consistent if check else None,
        "detected": detected,
        "wall_s": round(wall_s, 1),
        "ok": (not check.problems() if check else True) if ok is None else ok,
        "problems": check.problems() if check else [],
        "extra": extra,
        "commit": _git_commit(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=str) + "\n")
    print(f"faults result: {json.dumps(row, default=str)}")
    return row


__all__ = [
    "SCALE",
    "ChainerProc",
    "Chainers",
    "EventStream",
    "LedgerCheck",
    "Services",
    "Watch",
    "check_ledger",
    "full_only",
    "record_result",
    "rng",
    "scaled",
    "wait_for",
]
