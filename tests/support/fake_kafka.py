"""A fake Kafka for producer tests: a broker that is a switch, and producers that talk to it.

``FakeBroker.mode`` is ``up`` (delivery reports acknowledge on the next ``poll``), ``down``
(messages wait; each producer reports ``_TRANSPORT`` and ``_ALL_BROKERS_DOWN`` to its
``error_cb`` once per outage) or ``stalled`` (messages wait, no error: a slow broker).
``fail_next(code, n)`` makes the next ``n`` deliveries fail with ``code``. What was
acknowledged is in ``FakeBroker.log`` in the order it was written, like a one-partition
topic.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import confluent_kafka

KafkaError = confluent_kafka.KafkaError


@dataclass
class FakeMessage:
    topic: str
    value: bytes
    headers: list[tuple[str, bytes]] | None
    on_delivery: Callable[[Any, Any], None] | None

    def error(self) -> None:
        return None


class FakeBroker:
    def __init__(self, mode: str = "up") -> None:
        self.mode = mode
        self.log: list[FakeMessage] = []
        self.lock = threading.Lock()
        self.failures: deque[int] = deque()
        self.producers: list[FakeProducer] = []
        self.queue_limit = 100_000

    def fail_next(self, code: int, count: int = 1) -> None:
        with self.lock:
            self.failures.extend([code] * count)

    def values(self) -> list[bytes]:
        with self.lock:
            return [message.value for message in self.log]

    def factory(self, config: dict[str, Any]) -> FakeProducer:
        producer = FakeProducer(config, self)
        self.producers.append(producer)
        return producer


class FakeProducer:
    """Implements the part of ``confluent_kafka.Producer`` the trail uses."""

    def __init__(self, config: dict[str, Any], broker: FakeBroker) -> None:
        self.config = config
        self.broker = broker
        self.queue: deque[FakeMessage] = deque()
        self.reports: deque[tuple[FakeMessage, KafkaError | None]] = deque()
        self.lock = threading.Lock()
        self.announced_down = False
        self.produced = 0

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        *args: Any,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        assert isinstance(value, bytes)
        with self.lock:
            if len(self.queue) >= self.broker.queue_limit:
                raise BufferError("Local: Queue full")
            self.queue.append(FakeMessage(topic, value, headers, on_delivery))
            self.produced += 1

    def _exchange(self) -> list[KafkaError]:
        errors: list[KafkaError] = []
        broker = self.broker
        with broker.lock, self.lock:
            if broker.mode == "down":
                if not self.announced_down:
                    self.announced_down = True
                    errors = [
                        KafkaError(KafkaError._TRANSPORT, "Connect failed"),
                        KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
                    ]
                return errors
            self.announced_down = False
            if broker.mode != "up":
                return errors
            while self.queue:
                message = self.queue.popleft()
                if broker.failures:
                    self.reports.append((message, KafkaError(broker.failures.popleft())))
                else:
                    broker.log.append(message)
                    self.reports.append((message, None))
        return errors

    def poll(self, timeout: float = 0) -> int:
        deadline = time.monotonic() + (timeout or 0)
        served = 0
        while True:
            errors = self._exchange()
            error_cb = self.config.get("error_cb")
            for error in errors:
                if error_cb is not None:
                    error_cb(error)
            while True:
                with self.lock:
                    if not self.reports:
                        break
                    message, error = self.reports.popleft()
                if message.on_delivery is not None:
                    message.on_delivery(error, message)
                served += 1
            if served or time.monotonic() >= deadline:
                return served
            time.sleep(0.002)

    def flush(self, timeout: float = 0) -> int:
        deadline = time.monotonic() + (timeout or 0)
        while True:
            self.poll(0)
            with self.lock:
                left = len(self.queue) + len(self.reports)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.002)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        with self.lock:
            while self.queue:
                self.reports.append((self.queue.popleft(), KafkaError(KafkaError._PURGE_QUEUE, "purged")))

    def __len__(self) -> int:
        with self.lock:
            return len(self.queue) + len(self.reports)
