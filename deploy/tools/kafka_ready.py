#!/usr/bin/env python3
"""Is the local Kafka broker ready? The client-side checks of deploy/kafka.sh.

deploy/kafka.sh runs this with the project venv's interpreter, and only once
``import confluent_kafka`` works there (without the venv it falls back to a TCP connect):

    "$VENV_PY" "$D/tools/kafka_ready.py" probe BOOTSTRAP
        healthy(): one metadata request. Exit 0 when the broker answers within 1 s,
        1 otherwise. The shell discards the output.

    "$VENV_PY" "$D/tools/kafka_ready.py" wait BOOTSTRAP PID TIMEOUT
        wait_healthy(): one admin client polled every 0.2 s (short reconnect backoff), so
        readiness is seen within a fraction of a second without a Python start-up per attempt.
        Ready = metadata answered AND a group coordinator answers. Exit codes:
          0  ready; stdout holds the seconds it took, e.g. "2.4"
          2  process PID exited (or is a zombie) before the broker was ready
          3  not ready after TIMEOUT seconds
          1  bad arguments or an unexpected error
        Every 5 s a "kafka: waiting for BOOTSTRAP ... N s" line goes to stderr.

    Either may start with ``--config FILE``: a librdkafka properties file (``name=value`` lines,
    ``#`` comments) that every client of the check uses, for a broker whose listener needs TLS
    or SASL (deploy/kafka.sh passes ``BALDUR_KAFKA_CLIENT_CONFIG``).
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

USAGE = (
    "usage: kafka_ready.py [--config FILE] probe BOOTSTRAP\n"
    "       kafka_ready.py [--config FILE] wait BOOTSTRAP PID TIMEOUT"
)
HEALTHCHECK_GROUP = "baldur-deploy-healthcheck"
HEALTHCHECK_TOPIC = "baldur-deploy-healthcheck"
#: Client settings from ``--config FILE`` (security.protocol, sasl.*, ssl.*), for every client.
CLIENT_CONFIG: dict[str, str] = {}


def read_properties(path: str) -> dict[str, str]:
    """The ``name=value`` settings of a properties file (blank and ``#``/``!`` lines skipped)."""
    settings = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if text and text[0] not in "#!" and "=" in text:
                name, value = text.split("=", 1)
                settings[name.strip()] = value.strip()
    return settings


def _ignore_error(err: KafkaError) -> None:
    """error_cb that drops librdkafka's connection errors while the broker starts."""


def probe(bootstrap: str) -> int:
    """0 when the broker answers a metadata request within 1 s, else 1."""
    try:
        AdminClient({**CLIENT_CONFIG, "bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=1)
    except Exception:
        return 1
    return 0


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (the state field after "PID (COMM) ")."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def coordinator_ready(bootstrap: str) -> bool:
    """True once a group coordinator answers an offset fetch."""
    # The first group request on a fresh cluster creates __consumer_offsets; until its leader is
    # up, consumers get COORDINATOR_NOT_AVAILABLE and a short-lived consumer may see nothing.
    # Count the broker as ready only once a group coordinator answers (~1 s, first start only).
    c = Consumer(
        {
            **CLIENT_CONFIG,
            "bootstrap.servers": bootstrap,
            "group.id": HEALTHCHECK_GROUP,
            "log_level": 0,
            "error_cb": _ignore_error,
        }
    )
    try:
        c.committed([TopicPartition(HEALTHCHECK_TOPIC, 0)], timeout=2)
        return True
    except Exception:
        return False
    finally:
        c.close()


def wait(bootstrap: str, pid: int, timeout: float) -> int:
    """Poll until ready (0), the process is gone (2) or timeout seconds have passed (3)."""
    t0, nxt = time.monotonic(), 5.0
    admin = AdminClient(
        {
            **CLIENT_CONFIG,
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "error_cb": _ignore_error,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 250,
        }
    )
    metadata_ok = False
    while True:
        try:
            if not metadata_ok:
                admin.list_topics(timeout=1)
                metadata_ok = True
            ready = coordinator_ready(bootstrap)
        except Exception:
            ready = False  # not up yet: poll again
        if ready:
            print(f"{time.monotonic() - t0:.1f}")
            return 0
        if not alive(pid):
            return 2
        elapsed = time.monotonic() - t0
        if elapsed >= timeout:
            return 3
        if elapsed >= nxt:
            print(f"kafka: waiting for {bootstrap} ... {elapsed:.0f} s", file=sys.stderr, flush=True)
            nxt += 5
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 2 and args[0] == "--config":
        try:
            CLIENT_CONFIG.update(read_properties(args[1]))
        except (OSError, UnicodeDecodeError) as exc:
            print(f"kafka_ready.py: cannot read {args[1]}: {exc}", file=sys.stderr)
            return 1
        args = args[2:]
    if len(args) == 2 and args[0] == "probe":
        return probe(args[1])
    if len(args) == 4 and args[0] == "wait":
        try:
            pid, timeout = int(args[2]), float(args[3])
        except ValueError:
            print(USAGE, file=sys.stderr)
            return 1
        return wait(args[1], pid, timeout)
    # 1, not argparse's 2: for wait_healthy 2 means "the broker process exited".
    print(USAGE, file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
