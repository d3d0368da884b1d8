"""The live test: producer → sealed latency at fixed offered loads.

A chainer (``baldur-audit chain``, a child process, as users run it) runs on a fresh topic
and database and is idle when the load starts. A paced producer with the audit library's
settings but ``linger.ms=0`` (idempotent, acks=all, zstd; no batching delay of its own: a
batch forms only while earlier requests are in flight) sends pre-encoded events at each
offered rate and notes the send time of each; the offsets of one idempotent producer on a
fresh one-partition topic are dense, so event ``i`` becomes entry ``seq = i + 1``. A
separate process polls ``chain_head.last_seq`` every ``poll_ms`` from its own connection
(the chainer sends no notification to wait for) and notes when each seq became visible to
readers (committed). Latency = visible time − send time, on the machine-wide monotonic
clock; the measured mean poll interval (about 3 ms for ``poll_ms=2`` on this machine) plus
one query bounds the error, and is reported as ``poll_ms``.
"""

from __future__ import annotations

import bisect
import multiprocessing
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .harness import (
    BOOTSTRAP,
    LIBRARY_PRODUCER,
    BenchError,
    Ledger,
    finish_cli,
    log,
    percentile,
    start_cli,
)

#: The offered-load producer: the library's settings without its linger (5 ms), so the
#: producer adds no batching delay to the measured latency.
LIVE_PRODUCER = {**LIBRARY_PRODUCER, "linger.ms": 0}


def poll_head(dsn: str, interval: float, stop: Any, sink: Any) -> None:
    """Child process: (monotonic ns, last_seq) each time the head moves, until ``stop``; then
    sends them with the number of polls and the time they spanned."""
    import psycopg

    times, seqs = array("q"), array("q")
    polls, began = 0, time.monotonic_ns()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            last = -1
            while not stop.is_set():
                row = conn.execute("SELECT last_seq FROM chain_head WHERE id = 1").fetchone()
                now = time.monotonic_ns()
                polls += 1
                if row and row[0] != last:
                    last = row[0]
                    times.append(now)
                    seqs.append(last)
                time.sleep(interval)
    finally:
        sink.send((times.tobytes(), seqs.tobytes(), polls, time.monotonic_ns() - began))
        sink.close()


@dataclass(frozen=True)
class Visibility:
    """When each seq became visible: parallel, increasing arrays from the poller."""

    times_ns: Sequence[int]
    seqs: Sequence[int]

    def visible_ns(self, seq: int) -> int | None:
        """The first poll time at which ``last_seq >= seq`` (None if never seen)."""
        index = bisect.bisect_left(self.seqs, seq)
        return self.times_ns[index] if index < len(self.seqs) else None


def latency_summary(
    send_ns: Sequence[int], first_seq: int, seen: Visibility, offered: float, *, cutoff_ns: int
) -> dict[str, float]:
    """p50/p99/max latency (ms) and the rates achieved for events ``first_seq..`` sent at
    ``send_ns``. An event not seen sealed by ``cutoff_ns`` (the end of the wait) counts with
    ``cutoff_ns`` as its visible time, a lower bound, and is counted as ``unsealed``."""
    if not send_ns:
        raise BenchError("no events were sent")
    latencies = []
    last_visible = 0
    unsealed = 0
    for i, sent in enumerate(send_ns):
        visible = seen.visible_ns(first_seq + i)
        if visible is None or visible > cutoff_ns:
            unsealed += 1
            visible = cutoff_ns
        latencies.append((visible - sent) / 1e6)
        last_visible = max(last_visible, visible)
    latencies.sort()
    send_span = max(send_ns[-1] - send_ns[0], 1) / 1e9
    sealed = len(send_ns) - unsealed
    return {
        "offered_per_s": offered,
        "events": len(send_ns),
        "unsealed": unsealed,
        "sent_per_s": (len(send_ns) - 1) / send_span if len(send_ns) > 1 else 0.0,
        "sealed_per_s": sealed / (max(last_visible - send_ns[0], 1) / 1e9),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }


def paced_send(producer: Any, topic: str, payloads: Sequence[bytes], rate: float) -> array:
    """Send ``payloads`` at ``rate`` per second; returns each one's send time (monotonic ns)."""
    send_ns = array("q", bytes(8 * len(payloads)))
    period = 1e9 / rate
    start = time.monotonic_ns()
    sent = 0
    while sent < len(payloads):
        now = time.monotonic_ns()
        due = min(len(payloads), int((now - start) / period) + 1)
        while sent < due:
            try:
                producer.produce(topic, payloads[sent])
            except BufferError:
                producer.poll(0.001)
                continue
            send_ns[sent] = time.monotonic_ns()
            sent += 1
        producer.poll(0)
        wait = start + sent * period - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
    return send_ns


def wait_for_seq(dsn: str, seq: int, timeout: float) -> int:
    """Until ``chain_head.last_seq >= seq`` or ``timeout``; returns the last seq seen."""
    import psycopg

    deadline = time.monotonic() + timeout
    last = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT last_seq FROM chain_head WHERE id = 1").fetchone()
            last = int(row[0]) if row else 0
            if last >= seq or time.monotonic() >= deadline:
                return last
            time.sleep(0.05)


def live_run(
    led: Ledger,
    loads: Sequence[tuple[float, Sequence[bytes]]],
    warmup: bytes,
    *,
    max_wait: float,
    poll_ms: float = 2.0,
    settle: float = 2.0,
) -> list[dict[str, float]]:
    """One live run on ``led`` (fresh): for each (rate, payloads), the latency summary.

    After each load the chainer gets at most ``max_wait`` seconds to catch up (an offered
    rate beyond its capacity leaves a backlog; the next load then starts behind it)."""
    from confluent_kafka import Producer

    context = multiprocessing.get_context("spawn")  # no librdkafka state in the child
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    poller = context.Process(target=poll_head, args=(led.dsn, poll_ms / 1000, stop, send), daemon=True)
    poller.start()
    chainer = start_cli(led, "chain")
    producer = Producer({"bootstrap.servers": BOOTSTRAP, **LIVE_PRODUCER})
    results: list[dict[str, float]] = []
    try:
        producer.produce(led.topic, warmup)
        if producer.flush(30):
            raise BenchError("warm-up event not acknowledged")
        if wait_for_seq(led.dsn, 1, 60) < 1:
            raise BenchError("the chainer sealed nothing within 60 s")
        # The chainer holds the partition, has sealed, and is idle when the load starts.
        time.sleep(settle)  # ... and is idle when the load starts
        next_seq = 2
        sends: list[tuple[float, int, array, int]] = []
        for rate, payloads in loads:
            log(f"live: {rate:.0f} events/s for {len(payloads) / rate:.0f} s")
            send_ns = paced_send(producer, led.topic, payloads, rate)
            if producer.flush(60):
                raise BenchError("live events not acknowledged")
            wait_for_seq(led.dsn, next_seq + len(payloads) - 1, max_wait)
            sends.append((rate, next_seq, send_ns, time.monotonic_ns()))
            next_seq += len(payloads)
            time.sleep(settle)
    finally:
        stop.set()
        chainer.terminate()
        times = seqs = b""
        polls, span_ns = 0, 0
        try:
            finish_cli(chainer, expect=(0, 143), timeout=60)  # 143: killed by SIGTERM
        finally:
            if receive.poll(30):
                times, seqs, polls, span_ns = receive.recv()
            poller.join(10)
            if poller.is_alive():
                poller.terminate()
    seen = Visibility(array("q", times), array("q", seqs))
    poll_ms = span_ns / max(polls, 1) / 1e6
    for rate, first_seq, send_ns, cutoff_ns in sends:
        summary = latency_summary(send_ns, first_seq, seen, rate, cutoff_ns=cutoff_ns)
        summary["poll_ms"] = poll_ms
        results.append(summary)
    return results
