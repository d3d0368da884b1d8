"""Reading a running process's HTTP endpoint over loopback: a free port for it, a GET, the
samples of its Prometheus ``/metrics``, and waiting for a condition on them."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:PORT/PATH``; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def scrape(port: int) -> dict[str, float]:
    """The samples of ``/metrics``: ``name{labels}`` → value (empty when nothing answers)."""
    status, body = get(port, "/metrics")
    if status != 200:
        return {}
    samples = {}
    for line in body.splitlines():
        found = _SAMPLE.match(line)
        if found is not None:
            samples[found["name"] + (found["labels"] or "")] = float(found["value"])
    return samples


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """The first truthy value of ``predicate`` (polled every 0.25 s); AssertionError after
    ``timeout`` seconds, naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
