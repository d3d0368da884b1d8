"""The chainer's pause detector, on a real process that is really stopped (SIGSTOP/SIGCONT):
a chainer that stood still past its session timeout must treat losing the partition as
"expelled" even when librdkafka reports an orderly revocation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

CHILD = """
import sys
from baldur_audit.consumers.kafka.source import PauseDetector
detector = PauseDetector(tick=0.05)
detector.take()
print("ready", flush=True)
sys.stdin.readline()
print(f"{detector.take():.3f}", flush=True)
"""


def standstill_seen(pause: float) -> float:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        if pause:
            child.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            child.send_signal(signal.SIGCONT)
        else:
            time.sleep(1.0)
        child.stdin.write("\n")
        child.stdin.flush()
        return float(child.stdout.readline())
    finally:
        child.kill()
        child.wait(10)


def test_a_stopped_process_sees_how_long_it_stood_still() -> None:
    assert 1.2 <= standstill_seen(1.5) <= 10


def test_a_running_process_sees_no_standstill() -> None:
    assert standstill_seen(0) < 0.5
