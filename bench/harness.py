"""What every benchmark phase needs: endpoints, fresh topics and databases (removed
afterwards), the CLI run as a child process with its own peak RSS and CPU time,
pre-encoded events, a poller of the chain head, statistics and the machine.

The pipeline is driven only through the ``baldur-audit`` CLI and the public codec and
producer library, so the benchmark keeps working while their internals change.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baldur_audit.schemas.defaults import DEFAULT_BOOTSTRAP, DEFAULT_DSN, LOCAL_ADMIN_DSN

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("BALDUR_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
DSN = os.environ.get("BALDUR_SQL_DSN", DEFAULT_DSN)
#: The role ``init`` runs as and the bench's own tables (COPY targets) are created by: the
#: database owner, when the runtime role (``BALDUR_SQL_DSN``) is not the owner.
OWNER_DSN = os.environ.get("BALDUR_SQL_OWNER_DSN", DSN)
ADMIN_DSN = os.environ.get("BALDUR_TEST_ADMIN_DSN", LOCAL_ADMIN_DSN)
#: A benchmark-only signing key (never a real one): 32 bytes of 0x42.
KEY_SECRET = bytes([0x42]) * 32
KEY_SETTING = "hex:" + KEY_SECRET.hex()
#: Producer settings of the audit library (producers/kafka_producer.py): idempotent, so
#: acks=all, a short linger and zstd. The raw producers of pre-encoded events use them too.
LIBRARY_PRODUCER = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "zstd"}


class BenchError(Exception):
    """A phase could not run or produced an impossible result (one line, no secrets)."""


def log(message: str) -> None:
    """Progress on stderr, time-stamped."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at another database."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


# -- statistics ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (``fraction`` in [0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(fraction * len(sorted_values) - 1e-9))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the runs that have it (keys of the first run first)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(key for key in run if key not in keys)
    return {key: statistics.median(run[key] for run in runs if key in run) for key in keys}


# -- the machine --------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return 0.0
    found = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return round(int(found.group(1)) / 1024 / 1024, 1) if found else 0.0


def _kafka_version() -> str:
    jars = sorted((ROOT / ".local" / "kafka-libs").glob("kafka_2.13-*.jar"))
    if jars:
        return jars[-1].name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return "unknown (no .local/kafka-libs)"


def machine_info(dsn: str = DSN) -> dict[str, Any]:
    """CPU, cores, memory, load, and the versions of everything on the measured path."""
    import confluent_kafka
    import fastavro
    import psycopg

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()
        if isinstance(confluent_kafka.version(), str)
        else confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": fastavro.__version__,
        "psycopg": psycopg.__version__,
        "kafka": _kafka_version(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else "unknown"
    except psycopg.Error:
        info["postgresql"] = "unreachable"
    return info


def describe_machine(info: dict[str, Any]) -> str:
    """One line for the table header."""
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"PostgreSQL {info['postgresql']}, Kafka {info['kafka']} (librdkafka "
        f"{info['librdkafka']}), Python {info['python']}; load {info['load_average_1m_at_start']}"
    )


# -- events -------------------------------------------------------------------------------

_BASE_MS = 1_764_417_600_000


def build_event(i: int, *, run: str = "bench") -> Any:
    """Event number ``i``: a realistic configuration change (about 280 encoded bytes)."""
    from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

    return ChangeEvent(
        event_id=uuid7(_BASE_MS + i, os.urandom(10)),
        occurred_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC).replace(microsecond=i % 1_000_000),
        actor=Actor(f"deployer-{i % 50}", "user"),
        action="update",
        target=f"payments.svc-{i % 200}.timeout",
        source="api",
        before=json.dumps({"timeout_ms": 1000 + i % 5000, "retries": 3}),
        after=json.dumps({"timeout_ms": 2500 + i % 5000, "retries": 5}),
        reason=f"p99 above SLO after deploy {i}",
        trace_id=f"{i + 1:032x}",
        client_ip="10.1.***.***",
        attributes={"ticket": f"OPS-{i}", "run": run},
    )


def encode_events(count: int, *, start: int = 0, run: str = "bench") -> list[bytes]:
    """``count`` single-object-encoded events (distinct event ids)."""
    from baldur_audit.schemas.codec import encode_event

    return [encode_event(build_event(i, run=run)) for i in range(start, start + count)]


def _encode_range(bounds: tuple[int, int]) -> list[bytes]:
    return encode_events(bounds[1] - bounds[0], start=bounds[0])


def encode_events_parallel(count: int, *, start: int = 0, chunk: int = 50_000) -> list[bytes]:
    """:func:`encode_events` in one process per CPU (spawned: no client state is inherited),
    in order; in this process when ``count`` is small."""
    workers = len(os.sched_getaffinity(0))
    if count <= chunk or workers < 2:
        return encode_events(count, start=start)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    bounds = [(low, min(low + chunk, start + count)) for low in range(start, start + count, chunk)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [value for part in pool.map(_encode_range, bounds) for value in part]


def produce_values(
    topic: str, values: Iterable[bytes], *, bootstrap: str = BOOTSTRAP, settings: dict[str, Any] | None = None
) -> int:
    """Write ``values`` to ``topic`` in order and wait for every acknowledgement."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, **LIBRARY_PRODUCER, "linger.ms": 20, **(settings or {})}
    )
    failures: list[str] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error.str())

    count = 0
    for value in values:
        while True:
            try:
                producer.produce(topic, value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    left = producer.flush(120)
    if left or failures:
        raise BenchError(f"producing to {topic}: {left} undelivered, {len(failures)} failed ({failures[:1]})")
    return count


# -- topics and databases -------------------------------------------------------------------


@dataclass
class Resources:
    """Topics, databases and consumer groups this run created; removed by :meth:`cleanup`."""

    topics: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def new_topic(self, label: str) -> str:
        topic = f"baldur.bench.{label}.{uuid.uuid4().hex[:8]}"
        self.topics.append(topic)
        return topic

    def create_topic(self, label: str) -> str:
        """A new one-partition topic, created now (``init`` creates a ledger's own)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = self.new_topic(label)
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(30)
        return topic

    def delete_topic(self, topic: str) -> None:
        """Delete ``topic`` now (best effort: cleanup tries again)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        try:
            for future in admin.delete_topics([topic]).values():
                future.result(30)
        except Exception as exc:  # cleanup retries it
            log(f"could not delete topic {topic} yet: {exc}")
            return
        self.topics.remove(topic)

    def new_database(self, label: str) -> str:
        """A fresh database owned by the owner role (created by the admin role)."""
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict

        dbname = f"baldur_bench_{label}_{uuid.uuid4().hex[:8]}"
        owner = str(conninfo_to_dict(OWNER_DSN).get("user") or "")
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
            if owner:
                statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
            conn.execute(statement)
        self.databases.append(dbname)
        return dbname

    def drop_database(self, dbname: str) -> None:
        import psycopg

        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if dbname in self.databases:
            self.databases.remove(dbname)

    def cleanup(self) -> None:
        """Best effort: every failure is logged, none stops the rest."""
        from confluent_kafka.admin import AdminClient

        for dbname in list(self.databases):
            try:
                self.drop_database(dbname)
            except Exception as exc:  # cleanup must go on
                log(f"cleanup: could not drop database {dbname}: {type(exc).__name__}")
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        try:  # topics the ledger side made beside ours (e.g. the checkpoints' <topic>.checkpoints)
            existing = admin.list_topics(timeout=30).topics
            self.topics += [t for t in existing if any(t.startswith(f"{ours}.") for ours in self.topics)]
        except Exception as exc:  # cleanup must go on
            log(f"cleanup: could not list topics: {exc}")
        for what, futures in (
            ("group", admin.delete_consumer_groups(self.groups) if self.groups else {}),
            ("topic", admin.delete_topics(self.topics) if self.topics else {}),
        ):
            for name, future in futures.items():
                try:
                    future.result(30)
                except Exception as exc:  # a group that never joined is not an error
                    if what == "topic":
                        log(f"cleanup: could not delete {what} {name}: {exc}")
        self.topics.clear()
        self.groups.clear()


@dataclass
class Ledger:
    """A topic and a database with `init` done, and the environment the CLI runs with."""

    topic: str
    dbname: str
    dsn: str
    env: dict[str, str]
    owner_dsn: str = ""


def open_ledger(res: Resources, label: str, *, topic: str | None = None) -> Ledger:
    """A fresh database bound to ``topic`` (a new topic when None) by ``baldur-audit init``."""
    topic = topic or res.new_topic(label)
    dbname = res.new_database(label)
    group = f"baldur-bench-{label}-{uuid.uuid4().hex[:8]}"
    res.groups.append(group)
    env = {
        **os.environ,
        "BALDUR_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "BALDUR_AUDIT_TOPIC": topic,
        "BALDUR_SQL_DSN": DSN,
        "BALDUR_SECRETS_AUDIT_SIGNING_KEY": KEY_SETTING,
        "BALDUR_CHAINER_GROUP": group,
    }
    # Every role's DSN (runtime, owner, reader, ...) points at the fresh database.
    for name in [key for key in env if key.startswith("BALDUR_SQL_") and key.endswith("_DSN")]:
        env[name] = with_dbname(env[name], dbname)
    env["BALDUR_SQL_DSN"] = with_dbname(DSN, dbname)
    env.pop("BALDUR_ENV", None)
    env.pop("BALDUR_LEDGER_ID", None)
    led = Ledger(
        topic=topic,
        dbname=dbname,
        dsn=with_dbname(DSN, dbname),
        env=env,
        owner_dsn=with_dbname(OWNER_DSN, dbname),
    )
    run_cli(led, "init")
    return led


# -- the CLI as a measured child process ----------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    """One finished ``baldur-audit`` process: its JSON result and its own resource use."""

    result: dict[str, Any]
    wall_seconds: float
    cpu_seconds: float
    max_rss_mb: float


#: A small process between the benchmark and each CLI process. Linux records the high-water
#: RSS of the forked copy of the parent in the child's ``ru_maxrss`` at exec, so a child
#: forked straight from the (large) benchmark would report the benchmark's size; forked from
#: this launcher, it reports its own peak. The launcher forwards SIGTERM/SIGINT and writes
#: the child's rusage ("utime stime maxrss_kb") to the file named by its first argument.
LAUNCHER = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda n, _f: os.kill(pid, n))
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_utime} {usage.ru_stime} {usage.ru_maxrss}")
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""


#: py-spy's sampling rate (Hz) for ``--profile``: samples / rate = seconds on a CPU.
PROFILE_RATE = 250


def py_spy() -> str:
    """The py-spy executable: the one in this venv (the dev extra), else on PATH."""
    from shutil import which

    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else which("py-spy")
    if not found:
        raise BenchError("py-spy not found: .venv/bin/pip install py-spy (it is in the dev extra)")
    return found


def cli_command(*args: str, profile: Path | None = None) -> list[str]:
    """The argv of ``baldur-audit ARGS --json``, optionally under ``py-spy record``: on-CPU
    samples only (no ``--idle``), child processes included, full file names (so the
    breakdown can tell the package's modules apart), without pausing the process."""
    argv = [sys.executable, "-m", "baldur_audit.consumers", *args, "--json"]
    if profile is None:
        return argv
    return [
        py_spy(),
        "record",
        "--nonblocking",
        "--subprocesses",
        "--full-filenames",
        "--rate",
        str(PROFILE_RATE),
        "--format",
        "raw",
        "--output",
        str(profile),
        "--",
        *argv,
    ]


@dataclass
class Child:
    """A running ``baldur-audit`` process (under the launcher); stderr goes to a temporary
    file (a pipe could fill up and stall the child)."""

    what: str
    proc: subprocess.Popen[bytes]
    errors: Any
    usage_file: Path
    started: float

    def terminate(self) -> None:
        """SIGTERM (forwarded by the launcher): the chainer stops after its current batch."""
        if self.proc.returncode is None:
            self.proc.terminate()


def start_process(what: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` under the launcher (stdout piped)."""
    errors = tempfile.TemporaryFile()
    handle, usage_name = tempfile.mkstemp(prefix="bench-rusage-")
    os.close(handle)
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", LAUNCHER, usage_name, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors,
    )
    return Child(what=what, proc=proc, errors=errors, usage_file=Path(usage_name), started=time.monotonic())


def start_cli(led: Ledger, *args: str, profile: Path | None = None) -> Child:
    """Start ``baldur-audit ARGS --json`` for ``led``."""
    return start_process(args[0], cli_command(*args, profile=profile), led.env)


def _last_json(stdout: bytes) -> dict[str, Any] | None:
    """The last line of ``stdout`` that is a JSON object (py-spy adds lines of its own)."""
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    return None


def finish_cli(child: Child, expect: Sequence[int] = (0,), *, timeout: float | None = None) -> CliRun:
    """Wait for the child (at most ``timeout`` seconds, then it is stopped and the phase
    fails); its CPU time and peak RSS come from the launcher's wait4."""
    try:
        stdout = child.proc.communicate(timeout=timeout)[0] or b""
    except BaseException as exc:  # a timeout, or the benchmark itself being stopped
        stop_process(child.proc)
        child.errors.close()
        child.usage_file.unlink(missing_ok=True)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise BenchError(f"{child.what} did not finish within {timeout:.0f} s; stopped") from None
        raise
    wall = time.monotonic() - child.started
    child.errors.seek(0)
    stderr = child.errors.read()
    child.errors.close()
    try:
        utime, stime, maxrss_kb = (float(v) for v in child.usage_file.read_text().split())
    except (OSError, ValueError):
        utime = stime = maxrss_kb = float("nan")
    finally:
        child.usage_file.unlink(missing_ok=True)
    if child.proc.returncode not in expect:
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no message)"]
        raise BenchError(f"{child.what} exited {child.proc.returncode}: {last[0][:300]}")
    result = _last_json(stdout)
    if result is None:
        raise BenchError(f"{child.what} printed no JSON result")
    return CliRun(result=result, wall_seconds=wall, cpu_seconds=utime + stime, max_rss_mb=maxrss_kb / 1024)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (forwarded by the launcher), then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_cli(led: Ledger, *args: str, profile: Path | None = None, timeout: float | None = None) -> CliRun:
    """Run ``baldur-audit ARGS --json`` to completion (at most ``timeout`` s) and measure it."""
    return finish_cli(start_cli(led, *args, profile=profile), timeout=timeout)


def self_rusage() -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# -- the services' CPU time ---------------------------------------------------------------------


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the local PostgreSQL (every ``postgres`` process, with the
    time of exited backends, which the postmaster has reaped) and the Kafka broker(s)
    (``kafka.Kafka`` JVMs), from /proc. Machine-wide: other work on the same services counts
    too, so deltas are exact only on a quiet machine."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {"postgresql": 0.0, "kafka": 0.0}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text(encoding="utf-8", errors="replace")
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if comm not in ("postgres", "java"):
                continue
            # after "pid (comm) ": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = sum(int(v) for v in fields[11:15]) / tick
            if comm == "postgres":
                found["postgresql"] += seconds
            elif b"kafka.Kafka" in Path(entry.path, "cmdline").read_bytes():
                found["kafka"] += seconds
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return found


def service_cpu_since(before: dict[str, float], count: int) -> dict[str, float]:
    """µs per record of PostgreSQL and Kafka CPU since ``before`` (from :func:`service_cpu_seconds`)."""
    now = service_cpu_seconds()
    return {f"{name}_cpu_us_per_event": (now[name] - before[name]) / max(count, 1) * 1e6 for name in before}


# -- watching the chain head ----------------------------------------------------------------


class HeadWatcher:
    """Polls ``chain_head.last_seq`` from its own connection every ``interval`` seconds and
    records (monotonic time, seq) whenever it moves: when rows became visible to readers."""

    def __init__(self, dsn: str, *, interval: float = 0.02) -> None:
        self._dsn = dsn
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="head-watcher", daemon=True)
        self.error: str | None = None

    def __enter__(self) -> HeadWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                last = -1
                while not self._stop.is_set():
                    row = conn.execute("SELECT last_seq FROM chain_head WHERE id = 1").fetchone()
                    now = time.monotonic()
                    if row and row[0] != last:
                        last = row[0]
                        self.samples.append((now, last))
                    self._stop.wait(self._interval)
        except psycopg.Error as exc:
            self.error = type(exc).__name__

    def first_time_at_least(self, seq: int) -> float | None:
        """When ``last_seq`` was first seen at or beyond ``seq``."""
        for moment, seen in self.samples:
            if seen >= seq:
                return moment
        return None


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
