"""The whole ledger through a secured Kafka, whose only client listener is SASL_SSL with
SCRAM-SHA-512, and a PostgreSQL that takes TLS connections with a client certificate only
(tests/support/secured.py makes the certificates and starts both, once for this file).

What it proves: the producer library and every command (init, emit, chain, verify, replay,
checkpoint, prove, status) work with the Kafka client configuration file, given by
``BALDUR_KAFKA_CONFIG`` or by ``--kafka-config``, and a ``sslmode=verify-full`` DSN; a wrong
SASL password, a CA that does not trust the broker, a DSN with another CA or without TLS each
fail in one line with exit 2 instead of hanging; and no password or private key shows in any
output, at ``-vv --debug`` too.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.secured import SecuredLedger, SecuredStack, secured_ledger, secured_stack

pytestmark = pytest.mark.integration

#: A command that hangs instead of failing fails its test (subprocess timeout), nothing tighter:
#: refusals take about two seconds here, but timing belongs to the benchmarks.
BOUND = 90
#: Each refused command, as it runs in the tests below.
REFUSED_COMMANDS = {
    "status": ("status",),
    "chain": ("chain", "--until-idle", "1"),
    "emit": ("emit", "--actor", "alice", "--action", "update", "--target", "svc.timeout"),
}


@pytest.fixture(scope="module")
def stack() -> Iterator[SecuredStack]:
    """The secured broker and cluster, started once for this file, stopped at its end."""
    with secured_stack() as found:
        yield found


@pytest.fixture(scope="module")
def shared(stack: SecuredStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredLedger]:
    """One initialised ledger for the refusal tests, which change nothing in it."""
    with secured_ledger(stack, tmp_path_factory.mktemp("shared"), stack.client_config("shared")) as led:
        done = led.cli("init", timeout=BOUND)
        assert done.returncode == 0, done.stderr
        yield led


def assert_no_secret(stack: SecuredStack, *texts: str, also: tuple[str, ...] = ()) -> None:
    """No password and no line of a private key in ``texts`` (named by index when one is)."""
    for index, text in enumerate(texts):
        for secret in (*stack.secrets(), *also):
            assert secret not in text, f"output {index} shows a secret of {len(secret)} characters"


def one_line_exit_2(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that could not run (exit 2)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "unexpected error" not in done.stderr
    return lines[0]


def record_with_library(led: SecuredLedger, config: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Three events through the producer library, configured by ``AuditTrail.from_env``."""
    from baldur_audit.producers import AuditTrail

    environ = {
        "BALDUR_AUDIT_ENABLED": "true",
        "BALDUR_AUDIT_DURABILITY": "memory",
        "BALDUR_KAFKA_BOOTSTRAP": led.stack.bootstrap,
        "BALDUR_AUDIT_TOPIC": led.topic,
        "BALDUR_KAFKA_CONFIG": str(config),
        "BALDUR_SERVICE_NAME": "payments",
        "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
    }
    with caplog.at_level(logging.DEBUG, logger="baldur_audit"):
        trail = AuditTrail.from_env(environ)
        try:
            ids = [
                trail.record_change(
                    actor="svc-payments",
                    target=f"payments.limit.{i}",
                    before={"limit": i},
                    after={"limit": i + 1},
                    reason="secured stack test",
                )
                for i in range(3)
            ]
            assert trail.flush(60) == 0
            assert trail.stats.delivered == 3, trail.stats
        finally:
            trail.close()
    return [str(event_id) for event_id in ids]


def test_the_ledger_works_through_sasl_ssl_kafka_and_tls_postgres(
    stack: SecuredStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sasl = stack.client_config("sasl")
    mtls = stack.client_config("mtls", client_cert=True)  # SASL and a TLS client certificate
    outputs: list[str] = []

    with secured_ledger(stack, tmp_path, sasl) as led:

        def run(*args: str, unset_config: bool = False) -> subprocess.CompletedProcess[str]:
            env: dict[str, str | None] = {"BALDUR_KAFKA_CONFIG": None} if unset_config else {}
            done = led.cli(*args, extra_env=env, timeout=BOUND)
            outputs.extend([done.stdout, done.stderr])
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done

        assert json.loads(run("init", "--json").stdout)["topic_created"] is True
        # emit with --kafka-config alone (the variable unset), the others by BALDUR_KAFKA_CONFIG
        emitted = run(
            "--kafka-config",
            str(mtls),
            "emit",
            "--actor",
            "alice",
            "--action",
            "update",
            "--target",
            "svc.timeout",
            "--after",
            "30s",
            unset_config=True,
        ).stdout.split()
        assert len(emitted) == 1
        recorded = record_with_library(led, sasl, caplog)

        chained = json.loads(run("-vv", "chain", "--until-idle", "2", "--json").stdout)
        assert chained["sealed"] == 4 and chained["head_seq"] == 4, chained
        entries = [json.loads(line) for line in run("log", "--all", "--json").stdout.splitlines()]
        assert [entry["event_id"] for entry in entries] == emitted + recorded

        verified = json.loads(run("verify", "--json").stdout)
        assert verified["intact"] is True and verified["entries"] == 4, verified
        replayed = json.loads(run("--kafka-config", str(mtls), "replay", "--json", unset_config=True).stdout)
        assert replayed["consistent"] is True and replayed["topic_records"] == 4, replayed

        run("checkpoint", "--json")
        witnessed = json.loads(run("-vv", "--debug", "verify", "--json").stdout)
        assert witnessed["intact"] is True and witnessed["witness"]["status"] == "matched", witnessed
        bundle = tmp_path / "bundle.json"
        bundle.write_text(run("prove", "4").stdout)
        keys = tmp_path / "keys.txt"
        keys.write_text(run("keys", "public").stdout)
        checked = json.loads(run("check-proof", str(bundle), "--public-key", str(keys), "--json").stdout)
        assert checked["valid"] is True, checked

        round_ = json.loads(run("monitor", "--once", "--json").stdout)
        assert round_["exit_code"] == 0, round_
        status = json.loads(run("-vv", "--debug", "status", "--json").stdout)
        assert status["head"]["seq"] == 4 and status["lag"] == 0, status
        assert status["group"]["committed_offset"] == 4, status

    assert_no_secret(stack, *outputs, caplog.text)


@pytest.mark.parametrize("command", sorted(REFUSED_COMMANDS))
def test_a_wrong_sasl_password_is_one_line_and_exit_2(
    stack: SecuredStack, shared: SecuredLedger, command: str
) -> None:
    wrong = secrets.token_urlsafe(18)
    config = stack.client_config("wrong-password", password=wrong)
    done = shared.cli("--kafka-config", str(config), *REFUSED_COMMANDS[command], timeout=BOUND)
    line = one_line_exit_2(done)
    assert "SASL authentication error" in line and "sasl.password" in line, line
    debug = shared.cli(
        "-vv", "--debug", "--kafka-config", str(config), *REFUSED_COMMANDS[command], timeout=BOUND
    )
    assert debug.returncode == 2, debug.stderr
    assert_no_secret(stack, done.stdout, done.stderr, debug.stdout, debug.stderr, also=(wrong,))


def test_monitor_counts_a_refused_round_as_not_checked(stack: SecuredStack, shared: SecuredLedger) -> None:
    wrong = secrets.token_urlsafe(18)
    config = stack.client_config("wrong-password", password=wrong)
    done = shared.cli("--kafka-config", str(config), "monitor", "--once", "--json", timeout=BOUND)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "SASL authentication error" in done.stdout + done.stderr
    assert_no_secret(stack, done.stdout, done.stderr, also=(wrong,))


@pytest.mark.parametrize("command", sorted(REFUSED_COMMANDS))
def test_a_ca_that_does_not_trust_the_broker_is_one_line_and_exit_2(
    stack: SecuredStack, shared: SecuredLedger, command: str
) -> None:
    config = stack.client_config("untrusted", ca=stack.certs.other_ca)
    done = shared.cli(
        *REFUSED_COMMANDS[command], extra_env={"BALDUR_KAFKA_CONFIG": str(config)}, timeout=BOUND
    )
    line = one_line_exit_2(done)
    assert "certificate verify failed" in line and "ssl.ca.location" in line, line
    assert_no_secret(stack, done.stdout, done.stderr)


@pytest.mark.parametrize("command", ["status", "verify"])
def test_postgres_with_a_ca_that_does_not_trust_it_is_one_line_and_exit_2(
    stack: SecuredStack, shared: SecuredLedger, command: str
) -> None:
    dsn = stack.dsn(dbname=shared.dbname, rootcert=stack.certs.other_ca)
    done = shared.cli(command, extra_env={"BALDUR_SQL_DSN": dsn}, timeout=BOUND)
    line = one_line_exit_2(done)
    assert "certificate verify failed" in line, line
    assert_no_secret(stack, done.stdout, done.stderr)


def test_postgres_without_tls_is_refused_in_one_line_and_exit_2(
    stack: SecuredStack, shared: SecuredLedger
) -> None:
    dsn = stack.dsn(dbname=shared.dbname, sslmode="disable")
    for args in (("status",), ("-vv", "--debug", "status")):
        done = shared.cli(*args, extra_env={"BALDUR_SQL_DSN": dsn}, timeout=BOUND)
        assert done.returncode == 2, done.stderr
        if "--debug" not in args:
            assert "no encryption" in one_line_exit_2(done)
        assert_no_secret(stack, done.stdout, done.stderr)


def test_the_chainers_logs_show_no_secret_even_with_librdkafkas_debug_output(
    stack: SecuredStack, shared: SecuredLedger
) -> None:
    # librdkafka's own debug contexts for TLS, SASL and its configuration, at -vv, in both formats
    config = stack.client_config("debug", client_cert=True, extra=("debug=security,broker,conf",))
    for log_format in ("text", "json"):
        done = shared.cli(
            "-vv",
            "--debug",
            "--log-format",
            log_format,
            "--kafka-config",
            str(config),
            "chain",
            "--until-idle",
            "1",
            timeout=BOUND,
        )
        assert done.returncode == 0, done.stderr
        assert "SCRAM-SHA-512" in done.stderr, "librdkafka's debug lines show at -vv"
        assert_no_secret(stack, done.stdout, done.stderr)
