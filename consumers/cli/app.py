"""What every command receives: :class:`App` — the settings, the keys and the store built from
them on first use, the witnesses, and the one place where exceptions become exit codes and
one-line messages (:meth:`App.guard`). Also the exit codes and the output helpers.

A leaf of the CLI: it imports the library and the adapters, never a command module, and no
command module imports another.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click

from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.errors import AuditError, Fenced
from baldur_audit.schemas.keys import EpochSchedule, Keyring, RecordedSchedule

from ..chain_keys import load_signing_key, parse_old_keys, verification_keys
from ..checkpoint_keys import CheckpointKeys, load_checkpoint_keys
from ..checkpointer import Checkpointer
from ..kafka.witness import KafkaWitness
from ..postgres import dsn_password
from ..postgres.ledger import PostgresLedgerStore
from ..settings import Settings, scrub
from ..verification.witness_check import WitnessCheck
from ..witnesses import DirectoryWitness

log = logging.getLogger("baldur_audit")


class ExitCode(IntEnum):
    """Exit codes a cron job can act on, in the tradition of ``diff`` and ``cmp``."""

    OK = 0  # intact, consistent, done
    FAILED = 1  # tampered, divergent, invalid
    UNCHECKED = 2  # could not check: usage, configuration, unreachable service, unexpected error
    FENCED = 3  # ``chain`` only: another chainer took the chain over


#: The exit status a witness status leads to when the chain walk itself is intact.
EXIT_OF_WITNESS = {
    "matched": ExitCode.OK,
    "none": ExitCode.OK,
    "skipped": ExitCode.OK,
    "mismatch": ExitCode.FAILED,
    "invalid": ExitCode.FAILED,
    "unverifiable": ExitCode.UNCHECKED,
    "unavailable": ExitCode.UNCHECKED,
}


def witness_exit_code(witness: dict[str, Any] | None) -> ExitCode:
    """The exit status ``verify`` owes the witness check (0 when there was none)."""
    if witness is None:
        return ExitCode.OK
    return EXIT_OF_WITNESS.get(witness.get("status", "none"), ExitCode.UNCHECKED)


def break_exit_code(kind: str | None) -> ExitCode:
    """The exit status of a first break or divergence of this kind (None: there is none)."""
    if kind is None:
        return ExitCode.OK
    return ExitCode.UNCHECKED if kind == "unverifiable" else ExitCode.FAILED


def fail(
    message: str, code: ExitCode = ExitCode.UNCHECKED, *, secrets: Sequence[str | bytes | None] = ()
) -> NoReturn:
    """Report ``message`` in one line on stderr, scrubbed of ``secrets``, and exit ``code``."""
    one_line = " ".join(scrub(message, *secrets).split())
    click.echo(f"baldur-audit: {one_line}", err=True)
    sys.exit(code)


@dataclass(slots=True)
class App:
    """The CLI's state: settings, and what is built from them when a command first needs it."""

    settings: Settings
    debug: bool = False
    _key: SigningKey | None = None
    _ring: Keyring | None = None
    _kafka_config: dict[str, str] | None = None

    # -- Kafka ----------------------------------------------------------------------------------

    def kafka_config(self) -> dict[str, str]:
        """The shared Kafka client settings (``--kafka-config``), read once; empty when unset."""
        if self._kafka_config is None:
            self._kafka_config = self.settings.kafka_config
        return self._kafka_config

    # -- keys and the store ---------------------------------------------------------------------

    def key(self) -> SigningKey:
        """The chain signing key (loaded once; a missing one in production is fatal)."""
        if self._key is None:
            self._key = load_signing_key(self.settings)
        return self._key

    def keyring(self) -> Keyring:
        """Keys by key id: the signing key (current) and ``BALDUR_SECRETS_AUDIT_OLD_KEYS``."""
        if self._ring is None:
            self._ring = Keyring(self.key(), parse_old_keys(self.settings.old_keys))
        return self._ring

    def hold_only(self, key: SigningKey) -> None:
        """Use ``key`` alone from now on (a forward-secure chainer holds its epoch key only)."""
        self._ring = Keyring(key)

    def store(self) -> PostgresLedgerStore:
        """A connection to the ledger database."""
        return PostgresLedgerStore.connect(self.settings.dsn)

    def verification_keys(self) -> tuple[dict[str, SigningKey], EpochSchedule | None]:
        """The keys ``verify`` needs (all epoch keys with forward security) and the epoch rule."""
        ring = self.keyring()
        epoch_n = self.settings.epoch_entries
        if epoch_n is None:
            return dict(ring), None
        with self.store() as store:
            last_seq = store.read_head().seq
        return dict(verification_keys(ring, epoch_n=epoch_n, last_seq=last_seq)), EpochSchedule(
            ring.current, epoch_entries=epoch_n
        )

    def replay_keys(self, store: PostgresLedgerStore) -> dict[str, Any]:
        """``replay_compare``'s key arguments: each entry rebuilt with the key it names
        (rotation) or with its epoch's key (forward security)."""
        ring = self.keyring()
        epoch_n = self.settings.epoch_entries
        if epoch_n is None:
            changes, last_seq = store.key_changes()
            return {"ring": ring, "key_for": RecordedSchedule(changes, ring, last_seq=last_seq).key_for}
        schedule = EpochSchedule(ring.current, epoch_entries=epoch_n)
        return {"ring": {**ring, ring.current.key_id: ring.current}, "key_for": schedule.key_for}

    # -- checkpoints and witnesses --------------------------------------------------------------

    def checkpoint_keys(self, *, signing: bool) -> CheckpointKeys:
        """The checkpoint keys of this ledger's origin (a signer only when ``signing``)."""
        return load_checkpoint_keys(self.settings, signing=signing)

    def witness_logs(self, *, replication_factor: int | None = None) -> list[KafkaWitness | DirectoryWitness]:
        """The witness topic, and the checkpoint directory when ``BALDUR_CHECKPOINT_DIR`` is set.
        A witness topic created on first use gets ``replication_factor``, or when None the
        ledger topic's rule: 1, and in production min(3, brokers) with the durable settings."""
        logs: list[KafkaWitness | DirectoryWitness] = [
            KafkaWitness(
                bootstrap=self.settings.bootstrap,
                topic=self.settings.witness_topic,
                replication_factor=replication_factor,
                production=self.settings.production,
                config=self.kafka_config(),
            )
        ]
        folder = self.settings.checkpoint_dir
        if folder is not None:
            logs.append(DirectoryWitness(folder))
        return logs

    def checkpointer(self, chain_keys: Keyring) -> Checkpointer | None:
        """The chainer's checkpointer: every ``BALDUR_CHECKPOINT_EVERY`` entries (default 10000)
        or ``BALDUR_CHECKPOINT_INTERVAL`` seconds (default 30) with new entries; None when both
        are 0. Raises :class:`ConfigError` (e.g. production without a signing key)."""
        every, interval = self.settings.checkpoint_every, self.settings.checkpoint_interval
        if every == 0 and interval == 0:
            return None
        return Checkpointer(
            dsn=self.settings.dsn,
            keys=self.checkpoint_keys(signing=True),
            chain_keys=chain_keys,
            witnesses=self.witness_logs(),
            every=every,
            interval=interval,
        )

    def witness_check(self, *, state: Path | None, use_witness: bool) -> WitnessCheck:
        """``verify``'s witness check: the configured verifier keys (no key is generated), the
        witness topic and directory unless ``use_witness`` is false, and the state file."""
        keys = self.checkpoint_keys(signing=False)
        return WitnessCheck(
            verifiers=keys.verifiers,
            origin=keys.origin,
            logs=self.witness_logs() if use_witness else [],
            state_path=state,
        )

    # -- errors -----------------------------------------------------------------------------------

    def secrets(self) -> list[str | bytes | None]:
        """Everything that must never be printed."""
        found: list[str | bytes | None] = [
            dsn_password(self.settings.dsn),
            self.settings.dsn,
            *self.settings.secrets(),
        ]
        if self._key is not None:
            found.append(self._key.secret)
        if self._ring is not None:
            found.extend(key.secret for key in self._ring.values())
        return found

    def fail(self, message: str, code: ExitCode = ExitCode.UNCHECKED) -> NoReturn:
        """Report ``message`` in one line (no secret in it) and exit ``code``."""
        fail(message, code, secrets=self.secrets())

    @contextmanager
    def guard(self) -> Iterator[None]:
        """The one place where exceptions become exit codes and one-line messages."""
        try:
            yield
        except Fenced as exc:
            self.fail(
                f"stopped: another chainer took over the chain ({exc}); this one wrote nothing more",
                ExitCode.FENCED,
            )
        except AuditError as exc:
            if self.debug:
                log.exception("failed")
            self.fail(f"error: {exc}")
        except KeyboardInterrupt:
            self.fail("interrupted")
        except click.ClickException:
            raise
        except Exception as exc:  # the CLI boundary: no traceback for users
            if self.debug:
                log.exception("unexpected error")
            self.fail(f"unexpected error: {type(exc).__name__}: {exc}")


pass_app = click.make_pass_decorator(App)


def emit_json(value: Any) -> None:
    """One JSON document on stdout (times in UTC ISO 8601, bytes in hex)."""
    click.echo(json.dumps(value, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def progress(label: str, total: int | None) -> Callable[[int], None] | None:
    """A progress reporter on stderr, shown only on a terminal."""
    if not sys.stderr.isatty():
        return None
    bar = click.progressbar(
        length=total or 0, label=label, file=sys.stderr, show_pos=True, show_eta=bool(total)
    )
    bar.__enter__()
    return bar.update
