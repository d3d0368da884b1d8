"""The producer side of refusals (wrong credentials, an untrusted certificate, a missing ACL),
without a broker: which errors are refusals, and that the audit trail reports one once a
minute with what to check, instead of a warning per reconnection attempt."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import pytest

from baldur_audit.producers import AuditTrail
from baldur_audit.producers.kafka_producer import refusal_hint

KafkaError = confluent_kafka.KafkaError
SECRET = "s3cret-in-producer-config"


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (KafkaError._AUTHENTICATION, "SASL authentication error", "sasl.password"),
        (KafkaError.SASL_AUTHENTICATION_FAILED, "Broker: SASL authentication failed", "sasl.username"),
        (KafkaError._SSL, "SSL handshake failed", "ssl.ca.location"),
        (KafkaError._TRANSPORT, "error:0A000086:SSL routines::certificate verify failed", "ssl.ca.location"),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "Broker: Cluster authorization failed", "cluster"),
        (KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:1 failed: Connection refused", None),
        (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down", None),
        (KafkaError._MSG_TIMED_OUT, "Local: Message timed out", None),
    ],
)
def test_which_errors_are_refusals(code: int, text: str, expected: str | None) -> None:
    hint = refusal_hint(KafkaError(code, text))
    assert hint is None if expected is None else expected in (hint or ""), hint


class Producers:
    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []

    def __call__(self, config: dict[str, Any]) -> confluent_kafka.Producer:
        self.configs.append(config)
        return confluent_kafka.Producer(config)


@pytest.fixture
def producers() -> Iterator[Producers]:
    yield Producers()


def test_the_trail_reports_a_refusal_once_with_what_to_check(
    producers: Producers, caplog: pytest.LogCaptureFixture
) -> None:
    trail = AuditTrail(
        bootstrap="127.0.0.1:1",
        producer_config={
            "sasl.password": SECRET,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
        },
        producer_factory=producers,
    )
    try:
        assert trail.refusal is None
        error_cb = producers.configs[0]["error_cb"]
        with caplog.at_level(logging.DEBUG, logger="baldur_audit.producers"):
            for _ in range(5):
                error_cb(KafkaError(KafkaError._AUTHENTICATION, f"SASL authentication error for {SECRET}"))
                error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        refusal = trail.refusal
        assert refusal is not None and "sasl.password" in refusal and SECRET not in refusal
        loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(loud) == 1 and loud[0].startswith("kafka refuses the audit producer: "), loud
        assert SECRET not in caplog.text
    finally:
        trail.close(timeout=0)
