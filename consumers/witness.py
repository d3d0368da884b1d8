"""Witnesses of the checkpoints, outside the database owner's control: a Kafka topic
(``<topic>.checkpoints``, one partition, kept forever) and optionally a directory meant for
write-once storage (``<size>.note``); and the checkpointer and witness check as the CLI builds
them from the environment. What ``verify`` does with the witnesses is ``witness_check.py``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.checkpoint import Checkpoint
from baldur_audit.schemas.errors import BrokerUnavailable, ConfigError, ServiceUnavailable

from .checkpoint_keys import checkpoint_origin, load_checkpoint_keys
from .checkpoints import (
    DEFAULT_EVERY,
    DEFAULT_INTERVAL,
    EVERY_ENV,
    INTERVAL_ENV,
    Checkpointer,
)
from .config import Settings
from .source import close_quietly
from .topic import KafkaTopicAdmin
from .witness_check import WitnessCheck, witness_exit_code

#: What verify.py and cli.py import from here.
__all__ = ["DirectoryWitness", "KafkaWitness", "WitnessCheck", "checkpointer_from_env",
           "witness_check_from_env", "witness_exit_code", "witness_logs", "witness_topic"]

log = logging.getLogger(__name__)

WITNESS_TOPIC_ENV = "BALDUR_WITNESS_TOPIC"
CHECKPOINT_DIR_ENV = "BALDUR_CHECKPOINT_DIR"
_NOTE_FILE = re.compile(r"(0|[1-9][0-9]{0,19})\.note")


def witness_topic(topic: str, environ: Mapping[str, str] | None = None) -> str:
    """``$BALDUR_WITNESS_TOPIC``, else ``<ledger topic>.checkpoints``."""
    environ = os.environ if environ is None else environ
    return environ.get(WITNESS_TOPIC_ENV, "").strip() or f"{topic}.checkpoints"


# --- Kafka ------------------------------------------------------------------------------------

class KafkaWitness:
    """The witness topic: checkpoints are produced to it (idempotent, acks=all; created on
    first use with one partition, no compaction, kept forever) and read back by offset."""

    def __init__(self, *, bootstrap: str, topic: str, replication_factor: int = 1,
                 timeout: float = 10.0) -> None:
        self.topic = topic
        self.name = f"topic {topic}"
        self._bootstrap = bootstrap
        self._replication_factor = replication_factor
        self._timeout = timeout
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._ensured = False

    def publish(self, checkpoint: Checkpoint, note: str) -> str:
        """Produce the note (key: the tree size); raises BrokerUnavailable unless acknowledged."""
        if not self._ensured:
            KafkaTopicAdmin(self._bootstrap, timeout=self._timeout).ensure_topic(
                self.topic, replication_factor=self._replication_factor)
            self._ensured = True
        if self._producer is None:
            self._producer = Producer({"bootstrap.servers": self._bootstrap,
                                       "enable.idempotence": True,
                                       "message.timeout.ms": int(self._timeout * 3000),
                                       "logger": log})
        outcome: list[Any] = []
        self._producer.produce(self.topic, key=str(checkpoint.size).encode("ascii"),
                               value=note.encode("utf-8"),
                               on_delivery=lambda err, msg: outcome.append((err, msg)))
        remaining = self._producer.flush(self._timeout)
        if remaining or not outcome:
            raise BrokerUnavailable(f"witness topic {self.topic}: the checkpoint of size "
                                    f"{checkpoint.size} was not acknowledged within "
                                    f"{self._timeout:.0f} s")
        error, message = outcome[0]
        if error is not None:
            raise BrokerUnavailable(f"witness topic {self.topic}: {error.str()}")
        return f"topic {self.topic} offset {message.offset()}"

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer({
                "bootstrap.servers": self._bootstrap,
                "group.id": "baldur-audit-witness-reader",
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": "error", "isolation.level": "read_committed",
                "allow.auto.create.topics": False, "logger": log})
        return self._consumer

    def positions(self) -> range:
        """The topic's offsets (empty when the topic does not exist)."""
        consumer = self._reader()
        try:
            metadata = consumer.list_topics(topic=self.topic, timeout=self._timeout)
            found = metadata.topics.get(self.topic)
            if found is None or (found.error is not None and
                                 found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                return range(0)
            if found.error is not None:
                raise BrokerUnavailable(f"witness topic {self.topic}: {found.error.str()}")
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0),
                                                       timeout=self._timeout, cached=False)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read witness topic {self.topic}: "
                                    f"{exc.args[0].str()}") from None
        return range(int(low), int(high))

    def read(self, position: int) -> bytes | None:
        """The record value at offset ``position``."""
        consumer = self._reader()
        try:
            consumer.assign([TopicPartition(self.topic, 0, position)])
            for _ in range(max(1, int(self._timeout / 0.5))):
                for message in consumer.consume(num_messages=1, timeout=0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return None
                        raise BrokerUnavailable(f"witness topic {self.topic}: {error.str()}")
                    value = message.value()
                    return value if message.offset() == position else None
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read witness topic {self.topic}: "
                                    f"{exc.args[0].str()}") from None
        raise BrokerUnavailable(f"witness topic {self.topic}: no record at offset {position} "
                                f"within {self._timeout:.0f} s")

    def close(self) -> None:
        """Flush nothing further; close the clients (bounded)."""
        if self._consumer is not None:
            close_quietly(self._consumer)
            self._consumer = None
        self._producer = None


# --- a directory --------------------------------------------------------------------------------

class DirectoryWitness:
    """``<dir>/<size>.note``, each created once (O_EXCL, mode 0444, fsync'd): for a
    write-once (WORM) mount or a bucket with object lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"directory {path}"

    def publish(self, checkpoint: Checkpoint, note: str) -> str:
        """Write ``<size>.note`` unless a checkpoint of that size is already there."""
        target = self.path / f"{checkpoint.size}.note"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            except FileExistsError:  # write-once: the first checkpoint of this size stays
                return f"{target} (kept the existing one)"
            with os.fdopen(fd, "wb") as handle:
                handle.write(note.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            folder = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            raise ConfigError(f"cannot write checkpoint {target}: {exc.strerror}") from None
        return str(target)

    def positions(self) -> list[int]:
        """The sizes of the checkpoint files, smallest first."""
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot read checkpoint directory {self.path}: "
                                     f"{exc.strerror}") from None
        return sorted(int(match.group(1)) for name in names
                      if (match := _NOTE_FILE.fullmatch(name)))

    def read(self, position: int) -> bytes | None:
        """The note of size ``position``."""
        try:
            return (self.path / f"{position}.note").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ServiceUnavailable(f"cannot read {self.path}/{position}.note: "
                                     f"{exc.strerror}") from None

    def close(self) -> None:
        """Nothing to release."""


# --- built from the environment (the CLI's edge) ------------------------------------------------

def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, found {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= 0")
    return value


def witness_logs(settings: Settings, environ: Mapping[str, str] | None = None, *,
                 replication_factor: int = 1) -> list[KafkaWitness | DirectoryWitness]:
    """The witness topic, and the checkpoint directory when ``BALDUR_CHECKPOINT_DIR`` is set."""
    environ = os.environ if environ is None else environ
    logs: list[KafkaWitness | DirectoryWitness] = [KafkaWitness(
        bootstrap=settings.bootstrap, topic=witness_topic(settings.topic, environ),
        replication_factor=replication_factor)]
    folder = environ.get(CHECKPOINT_DIR_ENV, "").strip()
    if folder:
        logs.append(DirectoryWitness(Path(folder)))
    return logs


def checkpointer_from_env(settings: Settings, chain_keys: Mapping[str, SigningKey],
                          environ: Mapping[str, str] | None = None) -> Checkpointer | None:
    """The chainer's checkpointer: every ``BALDUR_CHECKPOINT_EVERY`` entries (default
    10000) or ``BALDUR_CHECKPOINT_INTERVAL`` seconds (default 30) with new entries; None
    when both are 0. Raises :class:`ConfigError` (e.g. production without a signing key)."""
    environ = os.environ if environ is None else environ
    every = _number(environ, EVERY_ENV, DEFAULT_EVERY)
    interval = _number(environ, INTERVAL_ENV, DEFAULT_INTERVAL)
    if every != int(every):
        raise ConfigError(f"{EVERY_ENV} must be a whole number of entries")
    if every == 0 and interval == 0:
        return None
    keys = load_checkpoint_keys(origin=checkpoint_origin(settings.effective_ledger_id, environ),
                                signing=True, environ=environ)
    return Checkpointer(dsn=settings.dsn, keys=keys, chain_keys=chain_keys,
                        witnesses=witness_logs(settings, environ), every=int(every),
                        interval=interval)


def witness_check_from_env(settings: Settings, *, state: Path | None, use_witness: bool,
                           environ: Mapping[str, str] | None = None) -> WitnessCheck:
    """``verify``'s witness check: the configured verifier keys (no key is generated), the
    witness topic and directory unless ``use_witness`` is false, and the state file."""
    environ = os.environ if environ is None else environ
    keys = load_checkpoint_keys(origin=checkpoint_origin(settings.effective_ledger_id, environ),
                                signing=False, environ=environ)
    return WitnessCheck(verifiers=keys.verifiers, origin=keys.origin,
                        logs=witness_logs(settings, environ) if use_witness else [],
                        state_path=state)
