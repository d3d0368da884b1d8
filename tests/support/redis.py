"""A private ``redis-server`` (Debian's package, ``deploy/redis.sh install``) for the Redis
buffer's tests: on 127.0.0.1, a port in 16379-16389 held by a lock file for its lifetime (so
two test processes never share one), data in a temporary folder with ``appendonly yes``
(``appendfsync always`` unless told otherwise) and no RDB snapshots, stopped by its pid.

Locally a missing ``redis-server`` skips with a reason; under ``CI=true`` it is a failure.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

PORTS = range(16379, 16390)
SERVER = "/usr/bin/redis-server"


def redis_server_binary() -> str:
    """The redis-server to run; skips (fails under CI=true) when it is not installed."""
    found = SERVER if os.access(SERVER, os.X_OK) else shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed (deploy/redis.sh install)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class RedisServer:
    """One redis-server process; :meth:`start`, :meth:`stop` (SIGTERM), :meth:`kill`."""

    def __init__(self, workdir: Path, *, password: str | None = None, appendfsync: str = "always") -> None:
        self.workdir = workdir
        self.password = password
        self.appendfsync = appendfsync
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _take_port(self) -> None:
        for port in PORTS:
            handle = open(Path(tempfile.gettempdir()) / f"baldur-redis-{port}.lock", "a+")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:  # something else listens there: not ours to use
                    handle.close()
                    continue
            self.port, self._lock = port, handle
            return
        pytest.fail(f"no free port for redis-server in {PORTS.start}-{PORTS.stop - 1}")

    def start(self) -> None:
        """Start (again, on the same port and data) and wait until it answers PING."""
        binary = redis_server_binary()
        if not self.port:
            self._take_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.05)

    def ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM by pid (redis writes its AOF and exits) and wait; SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL by pid (a crash) and wait."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def release(self) -> None:
        self.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@contextmanager
def running_redis(workdir: Path, **options: object) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped (by pid) and its port released at the end."""
    server = RedisServer(workdir, **options)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.release()
