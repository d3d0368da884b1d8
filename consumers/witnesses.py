"""Witnesses of the checkpoints, outside the database owner's control: what a witness must
do to receive a checkpoint (:class:`WitnessSink`) and to give them back to ``verify``
(:class:`WitnessLog`), and a directory witness meant for write-once storage (``<size>.note``).
The Kafka topic witness is ``kafka/witness.py``; what ``verify`` does with the witnesses is
``verification/witness_check.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from baldur_audit.schemas.checkpoint import Checkpoint
from baldur_audit.schemas.errors import ConfigError, ServiceUnavailable

from .files import durable_write

_NOTE_FILE = re.compile(r"(0|[1-9][0-9]{0,19})\.note")


class WitnessSink(Protocol):
    """Somewhere a signed checkpoint is published outside the database's control."""

    name: str

    def publish(self, checkpoint: Checkpoint, note: str) -> str:
        """Publish ``note``; returns where it went. Raises ServiceUnavailable/ConfigError."""
        ...

    def close(self) -> None:
        """Release the sink's resources."""
        ...


class WitnessLog(Protocol):
    """Where witnessed checkpoints can be read back, in the order they were written."""

    name: str

    def positions(self) -> Sequence[int]:
        """Every position holding a checkpoint, oldest first. Raises ServiceUnavailable."""
        ...

    def read(self, position: int) -> bytes | None:
        """The note at ``position`` (None if there is none). Raises ServiceUnavailable."""
        ...


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
                durable_write(target, note.encode("utf-8"), mode=0o444)
            except FileExistsError:  # write-once: the first checkpoint of this size stays
                return f"{target} (kept the existing one)"
        except OSError as exc:
            raise ConfigError(f"cannot write checkpoint {target}: {exc.strerror}") from None
        return str(target)

    def positions(self) -> list[int]:
        """The sizes of the checkpoint files, smallest first."""
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            raise ServiceUnavailable(
                f"cannot read checkpoint directory {self.path}: {exc.strerror}"
            ) from None
        return sorted(int(match.group(1)) for name in names if (match := _NOTE_FILE.fullmatch(name)))

    def read(self, position: int) -> bytes | None:
        """The note of size ``position``."""
        try:
            return (self.path / f"{position}.note").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ServiceUnavailable(f"cannot read {self.path}/{position}.note: {exc.strerror}") from None

    def close(self) -> None:
        """Nothing to release."""
