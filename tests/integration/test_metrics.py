"""The chainer's Prometheus metrics and health probes on the real stack: a chainer started with
``--metrics-address`` is scraped over HTTP while it seals (counts by kind, the head, the lag,
the latency histogram), a second chainer in the group is a ready standby, a bad address is a
usage error; and a scheduled ``chain --until-idle`` run leaves its head provable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.scrape import free_port, get, scrape, wait_for
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration


def start_chainer(ledger: Ledger, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baldur_audit.consumers",
            "chain",
            "--session-timeout",
            "3",
            "--batch-size",
            "20",
            "--metrics-address",
            f"127.0.0.1:{port}",
        ],
        env=ledger.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Chainers a test starts; stopped by PID afterwards (SIGTERM, then SIGKILL)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def sealed(samples: dict[str, float], kind: str) -> float:
    return samples.get(f'baldur_audit_sealed_total{{kind="{kind}"}}', 0.0)


def test_a_chainer_serves_metrics_and_probes_while_it_seals_and_a_standby_is_ready(
    ledger: Ledger, processes: list[subprocess.Popen[str]]
) -> None:
    from baldur_audit.schemas.codec import encode_event
    from tests.support.stack import make_event

    twice = encode_event(make_event(1000))
    ledger.produce_events(30)
    ledger.produce_raw([b"not an avro record", twice, twice])  # rejected, event, duplicate
    active_port, standby_port = free_port(), free_port()
    processes.append(start_chainer(ledger, active_port))
    assert wait_for(lambda: get(active_port, "/livez") == (200, "ok\n"), 60, "the liveness probe")
    wait_for(lambda: get(active_port, "/readyz") == (200, "active\n"), 60, "the chainer to take the head")

    def counted(total: int) -> dict[str, float] | None:
        samples = scrape(active_port)
        return (
            samples
            if sum(sealed(samples, kind) for kind in ("event", "rejected", "duplicate")) == total
            else None
        )

    wait_for(lambda: counted(33), 60, "33 entries counted")
    ledger.produce_events(40, start=30)  # while it runs: counted as they are sealed
    samples = wait_for(lambda: counted(73), 60, "73 entries counted")
    assert (sealed(samples, "event"), sealed(samples, "rejected"), sealed(samples, "duplicate")) == (71, 1, 1)
    status = ledger.cli_json("status")
    assert samples["baldur_audit_head_seq"] == status["head"]["seq"] == 73
    assert samples["baldur_audit_chainer_active"] == 1
    assert samples["baldur_audit_seal_latency_seconds_count"] == 73
    assert samples['baldur_audit_seal_latency_seconds_bucket{le="+Inf"}'] == 73
    assert samples['baldur_audit_seal_latency_seconds_bucket{le="0.005"}'] <= 73
    assert samples["baldur_audit_seal_latency_seconds_sum"] > 0
    assert samples["baldur_audit_batch_seconds_count"] >= 4  # batches of at most 20
    assert samples["baldur_audit_store_retries_total"] == 0
    assert any(name.startswith("baldur_audit_build_info{version=") for name in samples)
    wait_for(lambda: scrape(active_port).get("baldur_audit_lag_records") == 0, 30, "the lag to read 0")
    assert "baldur_audit_checkpoint_age_seconds" not in samples  # none is made in this ledger

    processes.append(start_chainer(ledger, standby_port))
    wait_for(lambda: get(standby_port, "/readyz") == (200, "standby\n"), 60, "the standby to be ready")
    standby = scrape(standby_port)
    assert standby["baldur_audit_chainer_active"] == 0 and "baldur_audit_lag_records" not in standby
    assert sum(sealed(standby, kind) for kind in ("event", "rejected", "duplicate")) == 0
    assert get(active_port, "/readyz") == (200, "active\n")
    assert scrape(active_port)["baldur_audit_chainer_active"] == 1
    assert get(active_port, "/nothing")[0] == 404

    for proc in processes:
        os.kill(proc.pid, signal.SIGTERM)
    for proc in processes:
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
    assert get(active_port, "/livez")[0] == 0  # the port is released with the process


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nonsense", "is not HOST:PORT, PORT or [IPV6]:PORT"),
        (":9464", "has no host"),
        ("127.0.0.1:70000", "the port must be a number from 0 to 65535"),
    ],
)
def test_a_bad_metrics_address_is_a_usage_error(ledger: Ledger, address: str, message: str) -> None:
    for done in (
        ledger.cli("chain", "--until-idle", "0", "--metrics-address", address),
        ledger.cli("chain", "--until-idle", "0", extra_env={"BALDUR_METRICS_ADDRESS": address}),
    ):
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_a_metrics_port_in_use_is_a_configuration_error(ledger: Ledger) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ledger.cli("chain", "--until-idle", "0", "--metrics-address", f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _checkpoint_sizes(ledger: Ledger) -> list[int]:
    with ledger.app() as conn:
        return [int(row[0]) for row in conn.execute("SELECT tree_size FROM checkpoints ORDER BY id")]


def test_an_until_idle_run_ends_with_a_checkpoint_of_its_head(ledger: Ledger, tmp_path: Path) -> None:
    # Checkpoints on, but neither the count nor the interval comes due within the run.
    ledger.env["BALDUR_CHECKPOINT_EVERY"] = "1000000"
    ledger.env["BALDUR_CHECKPOINT_INTERVAL"] = "3600"
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps({"actor": "ci-bot", "action": "apply", "target": f"k8s/deploy/web-{i}"}) + "\n"
            for i in range(7)
        )
    )
    try:
        emitted = ledger.cli("emit", "--file", str(events))
        assert emitted.returncode == 0, emitted.stderr
        done = ledger.cli("chain", "--until-idle", "1", "--session-timeout", "3", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sealed"] == 7
        assert _checkpoint_sizes(ledger) == [7]
        proved = ledger.cli("prove", "7")
        assert proved.returncode == 0, proved.stderr
        assert json.loads(proved.stdout)

        # Nothing new: the head is covered already, so no second checkpoint.
        again = ledger.cli("chain", "--until-idle", "1", "--session-timeout", "3")
        assert again.returncode == 0, again.stderr
        assert _checkpoint_sizes(ledger) == [7]
    finally:
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": ledger.bootstrap}).delete_topics([f"{ledger.topic}.checkpoints"])


def test_the_checkpoint_age_counts_from_a_checkpoint_signed_before_the_chainer_started(
    ledger: Ledger, processes: list[subprocess.Popen[str]]
) -> None:
    ledger.env["BALDUR_CHECKPOINT_EVERY"] = "5"
    try:
        ledger.produce_events(5)
        done = ledger.cli("chain", "--until-idle", "1", "--session-timeout", "3")
        assert done.returncode == 0, done.stderr
        assert _checkpoint_sizes(ledger) == [5]
        ledger.env["BALDUR_CHECKPOINT_EVERY"] = "1000000"  # none comes due in this run
        ledger.env["BALDUR_CHECKPOINT_INTERVAL"] = "3600"
        port = free_port()
        processes.append(start_chainer(ledger, port))

        def aged() -> dict[str, float] | None:
            found = scrape(port)
            active = found.get("baldur_audit_chainer_active") == 1
            return found if active and "baldur_audit_checkpoint_age_seconds" in found else None

        samples = wait_for(aged, 60, "the chainer to report the stored checkpoint's age")
        assert 0 <= samples["baldur_audit_checkpoint_age_seconds"] < 600
        assert samples["baldur_audit_checkpoint_failures_total"] == 0
        assert _checkpoint_sizes(ledger) == [5]
    finally:
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": ledger.bootstrap}).delete_topics([f"{ledger.topic}.checkpoints"])
