"""A private Prometheus server for tests: Debian's ``prometheus`` binary (``deploy/prometheus.sh
install``) on 127.0.0.1, one free port of 19090-19099, its own data folder, scraping the given
targets every second and evaluating the given rule files every second. Stopped by PID.

Locally a missing binary skips the tests that need it with a reason; under ``CI=true`` it fails
them, so CI can never pass by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

#: The ports a test Prometheus may listen on (127.0.0.1 only).
PORTS = range(19090, 19100)
#: How long Prometheus may take to start and answer /-/ready.
START_TIMEOUT = 60.0

T = TypeVar("T")


def prometheus_binary(name: str = "prometheus") -> str:
    """The path of ``prometheus`` (or ``promtool``); skips (locally) or fails (CI=true) when
    it is not installed."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found is None:
        message = f"{name} is not installed (run `deploy/prometheus.sh install`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrometheusError(Exception):
    """The Prometheus HTTP API answered with an error (``error_type``: bad_data, ...)."""

    def __init__(self, error_type: str, error: str) -> None:
        super().__init__(f"{error_type}: {error}")
        self.error_type = error_type
        self.error = error


class PrometheusServer:
    """One ``prometheus`` process: :meth:`start` it (or use it as a context manager), ask its
    HTTP API, :meth:`stop` it (SIGTERM, then SIGKILL, by PID)."""

    def __init__(
        self,
        workdir: Path,
        *,
        jobs: Mapping[str, Sequence[str]] | None = None,
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
    ) -> None:
        """``jobs``: scrape job name → ``host:port`` targets; ``rule_files``: loaded as they are."""
        self.workdir = workdir
        self.jobs = dict(jobs or {})
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.interval = interval
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    # -- life cycle ---------------------------------------------------------------------------
    def _write_config(self) -> Path:
        # JSON is YAML: no YAML library needed to write the configuration.
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": name, "static_configs": [{"targets": list(targets)}]}
                for name, targets in self.jobs.items()
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> PrometheusServer:
        """Start on the first free port of :data:`PORTS` and wait until it is ready; raises
        RuntimeError (with the tail of its log) when it cannot."""
        binary = prometheus_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        for port in PORTS:
            if not _port_free(port):
                continue
            data = self.workdir / f"data-{port}"
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={data}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self.port = port
            if self._wait_ready():
                return self
            self.stop()
            if "address already in use" not in self.log_tail():
                raise RuntimeError(f"prometheus did not start:\n{self.log_tail()}")
            # Another test took the port between the probe and the bind: try the next one.
        raise RuntimeError(f"no free port for prometheus in {PORTS.start}-{PORTS.stop - 1}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:  # noqa: S310
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines Prometheus logged (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- HTTP API -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``; raises :class:`PrometheusError` on an API error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:  # noqa: S310
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # 400/422/503 carry the error document
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(body.get("errorType", "unknown"), body.get("error", repr(body)))
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (vector samples; a scalar comes back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (pending and firing)."""
        return list(self.api("alerts")["alerts"])

    def alert(self, name: str) -> list[dict[str, Any]]:
        """The active alerts named ``name``."""
        return [alert for alert in self.alerts() if alert["labels"].get("alertname") == name]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (with its group's name under ``group``)."""
        return [
            {**rule, "group": group["name"]}
            for group in self.api("rules")["groups"]
            for rule in group["rules"]
        ]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health."""
        return list(self.api("targets")["activeTargets"])

    def wait_for(self, check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.2) -> T:
        """Poll ``check`` until it returns something true (not None, False or empty); raises
        AssertionError naming ``what`` (with the log's tail) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus: {what} not seen within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(every)


@contextmanager
def prometheus(
    workdir: Path,
    *,
    jobs: Mapping[str, Sequence[str]] | None = None,
    rule_files: Sequence[Path] = (),
) -> Iterator[PrometheusServer]:
    """A started :class:`PrometheusServer`, stopped on exit."""
    server = PrometheusServer(workdir, jobs=jobs, rule_files=rule_files)
    try:
        yield server.start()
    finally:
        server.stop()
