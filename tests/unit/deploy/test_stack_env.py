"""``make env`` prints the addresses of the stack the scripts start, port overrides included."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _env(**overrides: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("BALDUR_KAFKA_PORT", "BALDUR_PG_PORT")}
    return subprocess.run(
        ["make", "-s", "env"],
        cwd=ROOT,
        env={**environ, **overrides},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_env_prints_the_default_ports() -> None:
    done = _env()
    assert done.returncode == 0, done.stderr
    assert "export BALDUR_KAFKA_BOOTSTRAP=127.0.0.1:29092" in done.stdout
    assert "@127.0.0.1:25432/baldur_audit" in done.stdout


def test_env_honours_the_port_overrides_of_the_deploy_scripts() -> None:
    done = _env(BALDUR_KAFKA_PORT="39092", BALDUR_PG_PORT="35432")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "export BALDUR_KAFKA_BOOTSTRAP=127.0.0.1:39092" in lines
    assert all("25432" not in line and "29092" not in line for line in lines)
    assert sum("@127.0.0.1:35432/" in line for line in lines) == 4  # runtime, owner, reader, admin


def test_env_gives_the_runtime_roles_and_the_owner_to_init_only() -> None:
    """BALDUR_SQL_DSN is the chainer role's; the owner's DSN is a separate variable."""
    done = _env()
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
    assert exports["BALDUR_SQL_DSN"].startswith("postgresql://baldur_chainer:")
    assert exports["BALDUR_SQL_OWNER_DSN"].startswith("postgresql://baldur:")
    assert exports["BALDUR_SQL_READER_DSN"].startswith("postgresql://baldur_reader:")
    assert (
        exports["BALDUR_SQL_CHAINER_ROLE"],
        exports["BALDUR_SQL_READER_ROLE"],
        exports["BALDUR_SQL_OPERATOR_ROLE"],
    ) == ("baldur_chainer", "baldur_reader", "baldur_operator")


def test_env_refuses_a_port_that_is_not_a_number() -> None:
    done = _env(BALDUR_PG_PORT="5432; rm -rf /")
    assert done.returncode != 0 and "must be port numbers" in done.stderr and done.stdout == ""
