"""One Kafka client configuration file for every client, and JSON logs, on the local stack
(the SASL/TLS broker of test_secured_stack.py proves the security settings themselves)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

SECRET = "never-printed-5ecret-9f2c"


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return str(path)


def test_every_command_takes_the_client_configuration_file(ledger: Ledger, tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "# tuning every client accepts\nsocket.keepalive.enable=true\nclient.dns.lookup=use_all_dns_ips\n",
    )
    env = {"BALDUR_KAFKA_CONFIG": path}
    done = ledger.cli(
        "emit", "--actor", "alice", "--action", "update", "--target", "svc.timeout", extra_env=env
    )
    assert done.returncode == 0, done.stderr
    done = ledger.cli("--kafka-config", path, "chain", "--until-idle", "1")
    assert done.returncode == 0, done.stderr
    for args in (("status",), ("verify",), ("replay",)):
        result = ledger.cli("--kafka-config", path, *args, "--json")
        assert result.returncode == 0, (args, result.stderr)
    status = json.loads(ledger.cli("status", "--json", extra_env=env).stdout)
    assert status["head"]["seq"] == 1 and status["lag"] == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"sasl.pasword={SECRET}\n", "No such configuration property"),
        (f"bootstrap.servers={SECRET}:9092\n", "bootstrap.servers is set by baldur-audit itself"),
        (f"security.protocol=SASL_SSL\nsasl.password {SECRET}\n", "line 2: expected name=value"),
    ],
)
def test_a_bad_configuration_file_is_one_line_and_exit_2_without_its_secrets(
    ledger: Ledger, tmp_path: Path, text: str, message: str
) -> None:
    path = _config(tmp_path, text)
    for args in (
        ("status",),
        ("chain", "--until-idle", "1"),
        ("emit", "--actor", "a", "--action", "update", "--target", "t"),
    ):
        done = ledger.cli("--kafka-config", path, *args, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert SECRET not in done.stderr + done.stdout


def test_a_missing_configuration_file_is_named_in_one_line(ledger: Ledger, tmp_path: Path) -> None:
    done = ledger.cli("status", extra_env={"BALDUR_KAFKA_CONFIG": str(tmp_path / "absent.properties")})
    assert done.returncode == 2
    assert "absent.properties: cannot read it" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_json_logs_are_one_object_per_line_with_the_entry_they_are_about(ledger: Ledger) -> None:
    ledger.produce_events(3)
    ledger.produce_raw([b"not an avro record"])  # sealed as rejected, at seq 4, offset 3
    done = ledger.cli("-v", "--log-format", "json", "chain", "--until-idle", "1")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines, "the chainer logs at INFO with -v"
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"].startswith("baldur_audit") for line in lines)
    rejected = [line for line in lines if "as rejected" in line["message"]]
    assert rejected and rejected[0]["level"] == "warning"
    assert rejected[0]["seq"] == 4 and rejected[0]["offset"] == 3
    env_done = ledger.cli("-v", "status", extra_env={"BALDUR_LOG_FORMAT": "json"})
    assert env_done.returncode == 0
    assert all(json.loads(line) for line in env_done.stderr.splitlines() if line.strip())
