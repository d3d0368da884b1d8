"""A private Kafka broker and PostgreSQL cluster that a fault test may stop, kill and restart
without disturbing the shared stack (``make up``) that every other test uses.

They run from the same deploy scripts with their own state directory and ports
(``BALDUR_KAFKA_HOME``/``BALDUR_KAFKA_PORT``/``BALDUR_KAFKA_CONTROLLER_PORT``,
``BALDUR_PG_HOME``/``BALDUR_PG_PORT``), bind 127.0.0.1 only, and are stopped by their pid
when the test session ends. Kafka's jars are shared with the main stack (materialised once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local" / "dedicated"
PASSWORD = "baldur-local"
ADMIN_PASSWORD = "baldur-local-admin"
#: The runtime role every command but `init` runs as (deploy/postgres/bootstrap.sql).
CHAINER_USER = "baldur_chainer"
CHAINER_PASSWORD = "baldur-chainer-local"


def _script(name: str, *args: str, env: dict[str, str], timeout: float = 240) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"deploy/{name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")


@dataclass
class DedicatedKafka:
    """A single-node KRaft broker on ``127.0.0.1:port`` (controller on ``port + 1``)."""

    name: str
    port: int
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = LOCAL / self.name / "kafka"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _env(self) -> dict[str, str]:
        return {
            "BALDUR_KAFKA_HOME": str(self.home),
            "BALDUR_KAFKA_PORT": str(self.port),
            "BALDUR_KAFKA_CONTROLLER_PORT": str(self.port + 1),
        }

    def start(self) -> None:
        _script("kafka.sh", "start", env=self._env)

    def stop(self) -> None:
        """Orderly shutdown (SIGTERM, waits for exit)."""
        _script("kafka.sh", "stop", env=self._env)

    def pid(self) -> int | None:
        try:
            return int((self.home / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the broker (a crash) and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)


@dataclass
class DedicatedPostgres:
    """A PostgreSQL 15 cluster on ``127.0.0.1:port`` with the same roles as the main stack:
    ``dsn`` is the runtime role's, ``owner_dsn`` the owner's (creates databases, runs `init`)."""

    name: str
    port: int
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = LOCAL / self.name / "pg"

    @property
    def dsn(self) -> str:
        return f"postgresql://{CHAINER_USER}:{CHAINER_PASSWORD}@127.0.0.1:{self.port}/baldur_audit"

    @property
    def owner_dsn(self) -> str:
        return f"postgresql://baldur:{PASSWORD}@127.0.0.1:{self.port}/baldur_audit"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/postgres"

    @property
    def _env(self) -> dict[str, str]:
        return {"BALDUR_PG_HOME": str(self.home), "BALDUR_PG_PORT": str(self.port)}

    def start(self) -> None:
        _script("postgres.sh", "start", env=self._env)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (disconnect clients, clean shutdown) or ``immediate`` (crash-like)."""
        _script("postgres.sh", "stop", mode, env=self._env)
