"""The checks a scheduled job runs: ``verify`` (walk the ledger, cross-check the witnesses)
and ``replay`` (rebuild the chain from the topic and compare, or rebuild a ledger), with their
exit policy: 0 intact/consistent, 1 tampered/divergent, 2 could not check."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from baldur_audit.schemas.errors import AuditError

from ..kafka.admin import KafkaTopicAdmin
from ..kafka.source import KafkaTopicReader
from ..postgres.verify_results import record_verify_result
from ..settings import scrub
from ..verification.epochs import with_epoch_check
from ..verification.file_chain import FileChainError, verify_file_chain
from ..verification.replay import rebuild_ledger, replay_compare
from ..verification.verify import verify_ledger
from .app import App, ExitCode, break_exit_code, emit_json, pass_app, progress, witness_exit_code
from .options import json_option, parse_duration


@click.command()
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the last accepted checkpoint here; refuse a ledger that does not extend it.",
)
@click.option("--no-witness", is_flag=True, help="Do not read the witnessed checkpoints.")
@click.option(
    "--file",
    "file_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Verify the local file chain in this folder instead of the ledger.",
)
@click.option(
    "--record", is_flag=True, help="Record the result in the ledger database (the viewer's status banner)."
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Check the ledger in N seq ranges at once (processes); default: one per CPU.",
)
@json_option("Print the report as JSON.")
@pass_app
def verify(
    app: App,
    state: Path | None,
    no_witness: bool,
    file_dir: Path | None,
    record: bool,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Walk the ledger and recompute every link (exit 0 intact, 1 tampered, 2 could not check)."""
    if file_dir is not None:
        sys.exit(verify_file(app, file_dir, as_json))
    with app.guard():
        keys, schedule = app.verification_keys()
        witness = (
            None
            if no_witness and state is None
            else app.witness_check(state=state, use_witness=not no_witness)
        )
        with app.store() as store:
            report = verify_ledger(
                store,
                keys,
                progress=progress("verifying", None),
                witness=witness,
                anchor_verifiers=app.checkpoint_keys(signing=False).verifiers,
                jobs=jobs,
            )
        if schedule is not None:
            with app.store() as store:
                report = with_epoch_check(store, report, schedule)
        if as_json:
            emit_json(report.as_dict())
        elif report.intact:
            click.echo(
                f"intact: {report.entries} entries, head seq {report.head['seq']} "
                f"offset {report.head['offset']} "
                f"({report.as_dict()['entries_per_second']} entries/s)"
                + (
                    f"; witness: {report.witness['status']}: "
                    f"{report.witness['detail'] or report.witness['skipped']}"
                    if report.witness
                    else ""
                )
                + (
                    f"; from the retention anchor at seq {report.retention['anchor']['seq']}"
                    if report.retention and report.retention["anchor"]
                    else ""
                )
            )
        else:
            brk = report.first_break
            assert brk is not None
            click.echo(f"TAMPERED: first break at seq {brk.seq}: {brk.kind}: {brk.detail}")
    brk = report.first_break
    code = witness_exit_code(report.witness) if brk is None else break_exit_code(brk.kind)
    if record:
        code = _record(app, report, code)
    sys.exit(code)


def verify_file(app: App, directory: Path, as_json: bool) -> ExitCode:
    """``verify --file``: the file chain's report, printed; returns the exit status."""
    with app.guard():
        try:
            result = verify_file_chain(directory, dict(app.keyring()), progress=progress("verifying", None))
        except OSError as exc:
            raise FileChainError(f"cannot read {directory}: {exc.strerror or exc}") from None
        report = result.report
        if as_json:
            emit_json(result.as_dict())
        elif report.intact:
            torn = (
                f"; a torn tail of {result.torn_bytes} bytes (cut by the next writer)"
                if result.torn_bytes
                else ""
            )
            click.echo(
                f"intact: {report.entries} entries, head seq {report.head['seq']} "
                f"in {result.segments} segments"
                + (
                    f"; from the retention anchor at seq {report.retention['anchor']['seq']}"
                    if report.retention
                    else ""
                )
                + torn
            )
        else:
            brk = report.first_break
            assert brk is not None
            click.echo(f"TAMPERED: first break at seq {brk.seq}: {brk.kind}: {brk.detail}")
    brk = report.first_break
    return break_exit_code(None if brk is None else brk.kind)


def _record(app: App, report: Any, code: ExitCode) -> ExitCode:
    """Append ``verify``'s result to ``verify_results``; a failure to record is said in one
    line and turns an intact result's exit status into 2 (a tampered one stays 1)."""
    brk = report.first_break
    witness = report.witness or {}
    status = {ExitCode.OK: "intact", ExitCode.FAILED: "tampered"}.get(code, "unchecked")
    detail = brk.detail if brk is not None else witness.get("detail") if code != ExitCode.OK else None
    try:
        with app.store() as store:
            record_verify_result(
                store,
                tool="verify",
                mode="full",
                status=status,
                entries=report.entries,
                head_seq=(report.head or {}).get("seq"),
                break_seq=brk.seq if brk is not None else None,
                break_kind=brk.kind
                if brk is not None
                else witness.get("status")
                if status != "intact"
                else None,
                detail=detail,
            )
    except AuditError as exc:
        click.echo(scrub(f"baldur-audit: could not record the result: {exc}", *app.secrets()), err=True)
        return ExitCode.UNCHECKED if code == ExitCode.OK else code
    return code


@click.command()
@click.option(
    "--rebuild", is_flag=True, help="Write a fresh ledger from the topic into the (empty) database at --dsn."
)
@click.option(
    "--max-lag",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Unsealed records older than this count as a truncated tail.",
)
@click.option(
    "--classify-all",
    is_flag=True,
    help=(
        "Classify every topic record, also those whose bytes and link match the ledger's entry:"
        " slower, but also catches a key holder who rewrote an entry's visible columns (actor,"
        " target, reason) over its unchanged payload and resealed the links, which the default"
        " does not see."
    ),
)
@json_option("Print the report as JSON.")
@pass_app
def replay(app: App, rebuild: bool, max_lag: str, classify_all: bool, as_json: bool) -> None:
    """Rebuild the chain from the topic and compare it with the ledger (exit 0/1/2)."""
    with app.guard():
        lag = parse_duration(max_lag)  # options first: a usage error needs no key
        key = app.keyring().current
        settings = app.settings
        reader = KafkaTopicReader(
            bootstrap=settings.bootstrap, topic=settings.topic, config=app.kafka_config()
        )
        try:
            with app.store() as store:
                if rebuild:
                    report = rebuild_ledger(
                        store,
                        reader,
                        key,
                        ledger_id=settings.effective_ledger_id,
                        topic=settings.topic,
                        progress=progress("rebuilding", None),
                    )
                else:
                    admin = KafkaTopicAdmin(settings.bootstrap, config=app.kafka_config())

                    def committed() -> int | None:
                        try:
                            return admin.group_state(settings.group, settings.topic)["committed_offset"]
                        except AuditError:
                            return None

                    report = replay_compare(
                        store,
                        reader,
                        key,
                        committed_offset=committed,
                        **app.replay_keys(store),
                        max_lag_seconds=lag.total_seconds(),
                        progress=progress("replaying", None),
                        classify_all=classify_all,
                    )
        finally:
            reader.close()
        if as_json:
            emit_json(report.as_dict())
        elif rebuild:
            click.echo(f"rebuilt: sealed {report.topic_records} topic records into a fresh ledger")
        elif report.consistent:
            click.echo(
                f"consistent: {report.topic_records} topic records, "
                f"{report.ledger_entries} ledger entries"
                + (f", {report.unsealed} not sealed yet" if report.unsealed else "")
            )
        else:
            div = report.first_divergence
            assert div is not None
            click.echo(
                f"DIVERGENT: first divergence at seq {div.seq} (offset {div.offset}): "
                f"{div.kind}: {div.detail}"
            )
    div = report.first_divergence
    sys.exit(break_exit_code(None if div is None else div.kind))


COMMANDS = (verify, replay)
