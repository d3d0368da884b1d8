"""How the ledger side's Kafka clients tell a refusal (wrong credentials, an untrusted
certificate, a missing ACL) from an outage, without a broker: librdkafka retries both for ever,
so a refusal must fail the command with its cause instead of a timeout or a hang. The real
secured broker is tests/integration/test_secured_stack.py."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from baldur_audit.consumers.kafka import ClientErrors, LibrdkafkaLog, patiently
from baldur_audit.schemas.errors import BrokerUnavailable

SECRET = "s3cret-in-the-config"
CONFIG = {"security.protocol": "SASL_SSL", "sasl.username": "ledger", "sasl.password": SECRET}
AUTH = KafkaError(
    KafkaError._AUTHENTICATION,
    f"sasl_ssl://b:9093/bootstrap: SASL authentication error: invalid credentials for {SECRET}",
)
DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")


def test_a_refusal_is_raised_with_what_to_check_and_without_the_configs_secrets() -> None:
    errors = ClientErrors("chainer", CONFIG)
    errors.check()  # nothing refused yet
    errors(AUTH)
    errors(KafkaError(KafkaError._SSL, "a later, different refusal"))
    with pytest.raises(BrokerUnavailable) as raised:
        errors.check()
    message = str(raised.value)
    assert message.startswith("chainer: Kafka refused the connection: sasl_ssl://b:9093/bootstrap: SASL")
    assert "sasl.password" in message and SECRET not in message


@pytest.mark.parametrize(
    ("code", "text", "hint"),
    [
        (KafkaError._SSL, "SSL handshake failed: certificate verify failed", "ssl.ca.location"),
        # librdkafka reports some failed handshakes as transport errors
        (
            KafkaError._TRANSPORT,
            "b:9093/bootstrap: error:0A000086:SSL routines::certificate verify failed",
            "ssl.ca.location",
        ),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed", "ACL on the topic"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "Broker: Group authorization failed", "ACL on the group"),
    ],
)
def test_tls_and_authorization_failures_are_refusals(code: int, text: str, hint: str) -> None:
    errors = ClientErrors("reader of t", {})
    errors(KafkaError(code, text))
    with pytest.raises(BrokerUnavailable, match=hint):
        errors.check()


def test_an_outage_is_no_refusal_and_warns_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    errors = ClientErrors("chainer", CONFIG)
    with caplog.at_level(logging.DEBUG, logger="baldur_audit.consumers.kafka"):
        for _ in range(5):
            errors(DOWN)
            errors(KafkaError(KafkaError._TRANSPORT, "b:9093/1: Disconnected"))
    errors.check()  # an outage is retried, not refused
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["kafka chainer: 1/1 brokers are down", "kafka chainer: b:9093/1: Disconnected"]


def test_after_a_refusal_its_echoes_are_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    errors = ClientErrors("status", CONFIG)
    with caplog.at_level(logging.DEBUG, logger="baldur_audit.consumers.kafka"):
        errors(AUTH)
        errors(DOWN)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert SECRET not in caplog.text


def test_librdkafkas_own_lines_stay_below_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="baldur_audit.consumers.kafka.librdkafka"):
        LibrdkafkaLog().log(logging.ERROR, "FAIL [%s]: connection refused", "rdkafka#consumer-1")
        LibrdkafkaLog().log(logging.DEBUG, "SASL: %s", "handshake")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "FAIL [rdkafka#consumer-1]: connection refused"),
        (logging.DEBUG, "SASL: handshake"),
    ]


class Request:
    """A blocking request that fails until ``answer_after`` calls; ``serve()`` delivers
    ``error`` to the error callback, as ``poll(0)`` would."""

    def __init__(self, errors: ClientErrors, *, fails_with: int, answer_after: int = 10**9) -> None:
        self.errors, self.fails_with, self.answer_after = errors, fails_with, answer_after
        self.calls: list[float] = []
        self.pending: list[KafkaError] = []

    def __call__(self, seconds: float) -> str:
        self.calls.append(seconds)
        if len(self.calls) > self.answer_after:
            return "metadata"
        raise KafkaException(KafkaError(self.fails_with, "Local: Broker transport failure"))

    def serve(self) -> None:
        for error in self.pending:
            self.errors(error)
        self.pending.clear()


def test_a_blocking_request_stops_at_the_first_refusal_not_at_its_timeout() -> None:
    errors = ClientErrors("Kafka admin client", CONFIG)
    request = Request(errors, fails_with=KafkaError._TRANSPORT)
    request.pending.append(AUTH)
    with pytest.raises(BrokerUnavailable, match="SASL authentication error"):
        patiently(request, timeout=60, errors=errors, serve=request.serve)
    assert len(request.calls) == 1 and request.calls[0] <= 1.0  # one slice of at most a second


def test_a_blocking_request_is_retried_through_an_outage_until_it_answers() -> None:
    errors = ClientErrors("reader of t", {})
    request = Request(errors, fails_with=KafkaError._ALL_BROKERS_DOWN, answer_after=2)
    assert patiently(request, timeout=60, errors=errors, serve=request.serve) == "metadata"
    assert len(request.calls) == 3


def test_a_blocking_request_gives_up_at_its_timeout_or_at_once_on_other_errors() -> None:
    errors = ClientErrors("reader of t", {})
    slow = Request(errors, fails_with=KafkaError._TIMED_OUT)
    started = time.monotonic()
    with pytest.raises(KafkaException):
        patiently(slow, timeout=0.3, errors=errors, serve=slow.serve)
    assert time.monotonic() - started < 30  # bounded: it did not wait for ever
    other = Request(errors, fails_with=KafkaError.UNKNOWN_TOPIC_OR_PART)
    with pytest.raises(KafkaException):
        patiently(other, timeout=60, errors=errors, serve=other.serve)
    assert len(other.calls) == 1
