"""Fault: an operator resets the chainer group's offsets with Kafka's own
``kafka-consumer-groups`` tool (to-earliest, to-latest, shift-by) while the chainer is
stopped. After the restart every record is still sealed exactly once: the chainer resumes
from the head stored in PostgreSQL, and its commit puts the group's offset right again.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.faults.conftest import Services, check_ledger, record_result, scaled
from tests.support.dedicated import ROOT
from tests.support.stack import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FIRST = scaled(300, 20_000)
MORE = scaled(100, 5_000)
SHIFT = scaled(50, 2_000)
RESETS = scaled(
    [["--to-earliest"], ["--to-latest"]],
    [
        ["--to-earliest"],
        ["--to-latest"],
        ["--shift-by", f"-{SHIFT}"],
        ["--shift-by", str(SHIFT)],
        ["--to-offset", "0"],
    ],
)
#: Each run of the Java tool costs seconds: the quick run checks ``--describe`` only at the end.
DESCRIBE_EACH = scaled(False, True)


def consumer_groups(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    """``deploy/kafka.sh consumer-groups ARGS`` against the private broker."""
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / "kafka.sh"), "consumer-groups", *args],
        env={**os.environ, **services.kafka_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def committed(services: Services, ledger: Ledger) -> int | None:
    """The group's committed offset as ``--describe`` shows it (None: '-')."""
    done = consumer_groups(services, "--describe", "--group", ledger.env["BALDUR_CHAINER_GROUP"])
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == ledger.topic and fields[2] == "0":
            return None if fields[3] == "-" else int(fields[3])
    raise AssertionError(f"no row for {ledger.topic} in:\n{done.stdout}")


def chain(ledger: Ledger) -> dict:
    return ledger.cli_json("chain", "--until-idle", "1", "--session-timeout", "2")


def test_offset_resets_by_kafka_consumer_groups_change_nothing(led: Ledger, services: Services) -> None:
    started = time.monotonic()
    group = led.env["BALDUR_CHAINER_GROUP"]
    acked = list(led.produce_events(FIRST))
    assert chain(led)["sealed"] == FIRST
    if DESCRIBE_EACH:
        assert committed(services, led) == FIRST  # the chainer's commit makes the lag visible
    rows = []
    for number, reset in enumerate(RESETS):
        acked += led.produce_events(MORE, start=FIRST + number * MORE)
        end = FIRST + (number + 1) * MORE
        done = consumer_groups(
            services, "--group", group, "--topic", led.topic, "--reset-offsets", *reset, "--execute"
        )
        assert done.returncode == 0, done.stderr
        match = re.search(rf"{re.escape(led.topic)}\s+0\s+(\d+)", done.stdout)
        assert match, done.stdout
        reset_to = int(match.group(1))
        before = end - MORE  # where the chainer's commit left the group
        expected = {"--to-earliest": 0, "--to-latest": end, "--to-offset": 0}.get(reset[0])
        if reset[0] == "--shift-by":
            expected = min(max(before + int(reset[1]), 0), end)
        assert reset_to == expected, done.stdout
        if DESCRIBE_EACH:
            assert committed(services, led) == reset_to
        stats = chain(led)
        rows.append(
            {
                "reset": " ".join(reset),
                "group_offset_after_reset": reset_to,
                "sealed_after_restart": stats["sealed"],
                "head_seq": stats["head_seq"],
                "end_offset": end,
            }
        )
        if DESCRIBE_EACH:
            rows[-1]["group_offset_after_chain"] = committed(services, led)
            assert rows[-1]["group_offset_after_chain"] == end, rows[-1]
        assert stats["sealed"] == MORE and stats["head_seq"] == end, rows[-1]
    assert committed(services, led) == FIRST + len(RESETS) * MORE
    check = check_ledger(led, acked)
    record_result(
        "kafka-consumer-groups offset resets while stopped",
        runs=len(RESETS),
        events=len(acked),
        check=check,
        wall_s=time.monotonic() - started,
        detected="every reset ignored for sealing, group offset restored",
        resets=rows,
    )
    assert not check.problems(), check.problems()
    assert check.kinds == {"event": len(acked)}
