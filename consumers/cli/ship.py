"""``ship --file DIR``: publish a local file chain's events into the Kafka ledger topic.

For a team that outgrows one host: the file chain is verified first (a tampered or
unverifiable chain is refused), then every *event* record is sent through the producer
library's Kafka path (an idempotent producer) with its original event id. The ledger seals
the first copy of an event id as an event and every later copy as a *duplicate*, so
re-sending is harmless; ``ship`` also remembers, in ``<DIR>/shipped-<topic>.json``, the last
seq every earlier record of which the broker acknowledged, and starts after it next time
(``--again`` sends everything again). Duplicate and rejected records of the file chain are
not sent: the first occurrence is the event, and a rejected record was never an event.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from baldur_audit.producers.filechain import FileChainError, iter_records
from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.chain import EntryKind
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event, encode_event
from baldur_audit.schemas.errors import AuditError, BrokerUnavailable, DecodeError

from ..verification.file_chain import verify_file_chain
from .app import App, ExitCode, break_exit_code, emit_json, pass_app
from .options import json_option

#: Events sent between two acknowledged checkpoints of the progress file.
BATCH = 5_000


def _progress_path(directory: Path, topic: str) -> Path:
    return directory / f"shipped-{topic}.json"


def _read_progress(path: Path, ledger_id: str | None) -> int:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0
    except (OSError, ValueError):
        raise FileChainError(f"{path} is not a ship progress file; remove it or use --again") from None
    if not isinstance(doc, dict) or doc.get("ledger_id") != ledger_id or not isinstance(doc.get("seq"), int):
        return 0  # another chain's progress: send everything (re-sends are duplicates)
    return int(doc["seq"])


def _write_progress(path: Path, ledger_id: str | None, seq: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"ledger_id": ledger_id, "seq": seq}) + "\n", encoding="utf-8")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@click.command()
@click.option(
    "--file",
    "file_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The local file chain to publish.",
)
@click.option(
    "--again", is_flag=True, help="Send every event again (the ledger seals the copies as duplicates)."
)
@json_option("Print a JSON summary.")
@pass_app
def ship(app: App, file_dir: Path, again: bool, as_json: bool) -> None:
    """Publish a file chain's events into the Kafka ledger topic, each event once."""
    summary: dict[str, Any] = {}
    code = ExitCode.OK
    with app.guard():
        try:
            checked = verify_file_chain(file_dir, dict(app.keyring()))
        except OSError as exc:
            raise FileChainError(f"cannot read {file_dir}: {exc.strerror or exc}") from None
        brk = checked.report.first_break
        if brk is not None:
            click.echo(
                f"baldur-audit: refusing to ship: the file chain is not intact: "
                f"first break at seq {brk.seq}: {brk.kind}: {brk.detail}",
                err=True,
            )
            sys.exit(break_exit_code(brk.kind))
        settings = app.settings
        progress_file = _progress_path(file_dir, settings.topic)
        done = 0 if again else _read_progress(progress_file, checked.ledger_id)
        summary = _ship(app, file_dir, checked.ledger_id, done, progress_file)
        summary["head_seq"] = checked.report.head["seq"]
        if summary["failed"]:
            code = ExitCode.UNCHECKED
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"shipped {summary['sent']} events of seq {summary['from_seq']}–{summary['head_seq']} "
            f"to {summary['topic']} ({summary['skipped']} duplicate or rejected records not sent"
            + (f", {summary['failed']} not acknowledged: run ship again" if summary["failed"] else "")
            + ")"
        )
    sys.exit(code)


def _ship(app: App, directory: Path, ledger_id: str | None, done: int, progress_file: Path) -> dict[str, Any]:
    settings = app.settings
    trail = AuditTrail(
        bootstrap=settings.bootstrap,
        topic=settings.topic,
        durability="memory",
        producer_config=app.kafka_config(),
        service="baldur-audit-ship",
        max_block_ms=5_000,
    )
    sent = skipped = 0
    failed = 0
    acknowledged = done
    pending_seq = done
    show = sys.stderr.isatty()
    try:
        for found in iter_records(directory):
            record = found.record
            if record.seq <= done:
                continue
            pending_seq = record.seq
            if record.kind != EntryKind.EVENT.code:
                skipped += 1
                continue
            try:
                event = decode_event(record.value, KNOWN_SCHEMAS)
            except DecodeError as exc:
                raise FileChainError(f"seq {record.seq} no longer decodes: {exc.reason}") from None
            if encode_event(event) != record.value:
                raise FileChainError(f"seq {record.seq}: its event does not encode back to the sealed bytes")
            trail.publish(event)
            sent += 1
            if sent % BATCH == 0:
                acknowledged, failed = _checkpoint(trail, progress_file, ledger_id, pending_seq, acknowledged)
                if failed:
                    break
                if show:
                    click.echo(f"shipped {sent} events, up to seq {pending_seq}", err=True)
        if not failed:
            acknowledged, failed = _checkpoint(trail, progress_file, ledger_id, pending_seq, acknowledged)
    except BrokerUnavailable:
        failed = max(1, trail.stats.pending)
    finally:
        left = trail.close(timeout=30)
        failed = max(failed, left, trail.stats.failed)
    return {
        "directory": str(directory),
        "topic": settings.topic,
        "from_seq": done + 1,
        "sent": sent,
        "skipped": skipped,
        "failed": failed,
        "acknowledged_through_seq": acknowledged,
    }


def _checkpoint(
    trail: AuditTrail, path: Path, ledger_id: str | None, seq: int, previous: int
) -> tuple[int, int]:
    """Wait for the broker to acknowledge everything sent; then record ``seq`` as shipped."""
    left = trail.flush(timeout=60)
    failed = trail.stats.failed
    if left or failed:
        return previous, max(left, failed)
    try:
        _write_progress(path, ledger_id, seq)
    except OSError as exc:
        raise AuditError(f"cannot write {path}: {exc.strerror or exc}") from None
    return seq, 0


COMMANDS = (ship,)
