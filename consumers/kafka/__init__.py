"""The Kafka adapter of the ledger side: the only package here that imports confluent_kafka
(the producer library, ``producers/``, has its own). ``source`` reads topics (the chainer's
group member, replay's reader, the identities topic), ``admin`` creates and validates topics
and describes the chainer group, ``witness`` is the checkpoints' witness topic. Every client is
built by :func:`build_client` from the shared client configuration (``--kafka-config``).

librdkafka retries everything, a wrong password or an untrusted certificate too, for ever, and
says why only in its log and its error callback. So every client gets a :class:`ClientErrors`
as ``error_cb``: it remembers the first *refusal* (authentication, TLS, authorization; the
``REFUSALS`` of ``producers/kafka_producer.py``) so that the adapter fails at once with the
cause (:meth:`ClientErrors.check`, raised as :class:`BrokerUnavailable`) instead of waiting
out a timeout, and warns about other errors at most once a minute per kind. librdkafka's own
log lines go to ``<this package>.librdkafka`` at INFO at most (:class:`LibrdkafkaLog`): their
errors are the callback's, and one line per connection attempt at ERROR would bury the one
line a command fails with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from baldur_audit.producers.kafka_config import scrub_client_secrets
from baldur_audit.producers.kafka_producer import refusal_hint
from baldur_audit.schemas.errors import BrokerUnavailable, ConfigError

__all__ = ["ClientErrors", "LibrdkafkaLog", "build_client", "patiently", "serve_callbacks"]

_Client = TypeVar("_Client")
_T = TypeVar("_T")

log = logging.getLogger(__name__)
_librdkafka = logging.getLogger(f"{__name__}.librdkafka")

#: Failures of a blocking request that a later attempt may not have (no broker answered yet).
_RETRIABLE = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT})
#: Other errors are logged at WARNING at most once per this many seconds per kind.
WARN_EVERY = 60.0


class LibrdkafkaLog:
    """The ``logger`` of every client: librdkafka's own lines at INFO at most (``-v`` shows
    them). The errors among them reach :class:`ClientErrors` too."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        _librdkafka.log(min(level, logging.INFO), msg, *args)


class ClientErrors:
    """The ``error_cb`` of one client (see the package docstring); ``what`` names the client in
    messages, ``config`` is the shared client configuration, whose secret values are scrubbed."""

    def __init__(self, what: str, config: Mapping[str, str] | None = None) -> None:
        self.what = what
        self.refusal: str | None = None
        self._config = config
        self._warned: dict[int, float] = {}

    def _scrub(self, text: str) -> str:
        return scrub_client_secrets(text, self._config)

    def __call__(self, error: KafkaError) -> None:
        code, text, hint = error.code(), self._scrub(error.str()), refusal_hint(error)
        if hint is not None and self.refusal is None:
            self.refusal = f"{text} ({hint})"
        now = time.monotonic()
        if self.refusal is not None or now - self._warned.get(code, -WARN_EVERY) < WARN_EVERY:
            # A refusal is reported by check(); what follows it ("1/1 brokers are down") is its echo.
            log.debug("kafka %s: %s: %s", self.what, error.name(), text)
            return
        self._warned[code] = now
        log.warning("kafka %s: %s", self.what, text)

    def check(self) -> None:
        """Raise :class:`BrokerUnavailable` naming the refusal, if the cluster refused this client."""
        if self.refusal is not None:
            raise BrokerUnavailable(f"{self.what}: Kafka refused the connection: {self.refusal}")


def patiently(
    call: Callable[[float], _T], *, timeout: float, errors: ClientErrors, serve: Callable[[], object]
) -> _T:
    """``call(seconds)``, a blocking request (``list_topics``, ``get_watermark_offsets``), with
    ``timeout`` cut into slices of at most a second; between slices ``serve()`` (the client's
    ``poll(0)``) runs the error callback, so a refusal fails within about a second
    (:meth:`ClientErrors.check`) instead of after the whole ``timeout``. Raises the request's
    last :class:`KafkaException`, or :class:`BrokerUnavailable` for a refusal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(max(0.05, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            serve()
            errors.check()
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            left = deadline - time.monotonic()
            if code not in _RETRIABLE or left <= 0:
                raise
            time.sleep(min(0.1, left))  # some failures return at once: no busy loop


def serve_callbacks(consumer: Any) -> None:
    """Run a consumer's pending callbacks (its error callback) without taking a record: only
    while it fetches no partition, since ``poll()`` would consume one."""
    if not consumer.assignment():
        consumer.poll(0)


def build_client(
    factory: Callable[[dict[str, Any]], _Client],
    *,
    bootstrap: str,
    config: Mapping[str, str] | None,
    own: Mapping[str, Any],
    what: str,
    errors: ClientErrors | None = None,
) -> _Client:
    """A confluent_kafka client from the shared client configuration (``config``: security and
    tuning, see ``producers/kafka_config.py``) and the settings this client must own, which win;
    its ``error_cb`` is ``errors`` (a new :class:`ClientErrors` when None), its ``logger`` a
    :class:`LibrdkafkaLog`. Raises :class:`ConfigError` (secret values scrubbed) when librdkafka
    refuses a setting."""
    settings: dict[str, Any] = {
        **(config or {}),
        "logger": LibrdkafkaLog(),
        "error_cb": errors or ClientErrors(what, config),
        **own,
        "bootstrap.servers": bootstrap,
    }
    try:
        return factory(settings)
    except (KafkaException, ValueError, TypeError) as exc:
        message = scrub_client_secrets(str(exc.args[0] if exc.args else exc), config)
        raise ConfigError(f"{what}: Kafka client settings refused: {message}") from None
