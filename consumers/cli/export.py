"""Exports that are evidence: ``export`` (a seq range or time window of the ledger, with a signed
manifest, into a folder) and ``check-export`` (proves offline that an export is complete for its
range and unaltered: exit 0 valid, 1 invalid, 2 could not check)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from baldur_audit.schemas.errors import ChainBreak

from ..evidence.export import ExportMismatch, ExportPlan, write_export
from ..evidence.export_check import ExportUnreadable, check_export
from ..evidence.export_format import FORMATS
from .app import App, ExitCode, emit_json, pass_app, progress
from .options import json_option, parse_time, public_key_option, read_public_keys


@click.command(name="export")
@click.option(
    "--since", help="From the first entry stamped at or after this time (ISO 8601, or e.g. 2h ago)."
)
@click.option("--until", "until_", metavar="TIME", help="To the last entry stamped before this time.")
@click.option(
    "--first-seq", type=click.IntRange(1, 2**63 - 1), default=None, help="From this seq (instead of --since)."
)
@click.option(
    "--last-seq", type=click.IntRange(1, 2**63 - 1), default=None, help="To this seq (instead of --until)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="ndjson",
    show_default=True,
    help="One JSON object per line, or CSV.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder to write (default: ./baldur-audit-export-<UTC time>); it must be empty or new.",
)
@click.option("--force", is_flag=True, help="Replace the files of a non-empty --out folder.")
@click.option(
    "--size",
    type=click.IntRange(1, 2**63 - 1),
    default=None,
    help="Cut the export against the stored checkpoint of this tree size (default: the newest).",
)
@json_option("Print a summary as JSON.")
@pass_app
def export(
    app: App,
    since: str | None,
    until_: str | None,
    first_seq: int | None,
    last_seq: int | None,
    fmt: str,
    out: Path | None,
    force: bool,
    size: int | None,
    as_json: bool,
) -> None:
    """Export a contiguous range of the ledger, every entry of every kind, with a manifest signed
    by the checkpoint key that proves it complete and unaltered (check it with `check-export`)."""
    with app.guard():
        if since is not None and first_seq is not None:
            raise click.UsageError("give --since or --first-seq, not both")
        if until_ is not None and last_seq is not None:
            raise click.UsageError("give --until or --last-seq, not both")
        now = datetime.now(UTC)
        start = parse_time(since, now=now) if since else None
        end = parse_time(until_, now=now) if until_ else None
        keys = app.checkpoint_keys(signing=False)
        folder = out
        bar = None

        def planned(plan: ExportPlan) -> None:
            nonlocal bar
            bar = progress("exporting", plan.count)

        def advance(entries: int) -> None:
            if bar is not None:
                bar(entries)

        if folder is None:
            folder = Path(f"baldur-audit-export-{now.strftime('%Y%m%dT%H%M%SZ')}")
        try:
            with app.store() as store:
                manifest = write_export(
                    store,
                    keys,
                    out=folder,
                    fmt=fmt,
                    first_seq=first_seq,
                    last_seq=last_seq,
                    since=start,
                    until=end,
                    size=size,
                    force=force,
                    progress=advance,
                    plan_ready=planned,
                    now=now,
                )
        except (ExportMismatch, ChainBreak) as exc:
            app.fail(f"refusing to export: {exc}", ExitCode.FAILED)
        finally:
            if bar is not None:
                click.echo("", err=True)
        result = manifest.as_dict()
        if as_json:
            emit_json(result)
            return
        checkpoint = result["checkpoint"]
        kinds = result["kinds"]
        click.echo(
            f"exported entries {result['first_seq']}..{result['last_seq']} ({result['count']} entries: "
            f"{kinds['event']} events, {kinds['duplicate']} duplicates, {kinds['rejected']} rejected"
            + (f", {result['pruned']} pruned" if result["pruned"] else "")
            + f") to {folder}/ as {fmt}, cut against the checkpoint of size {checkpoint['size']}; "
            f"manifest signed by {', '.join(result['signed_by'])}"
        )
        if manifest.left_out:
            click.echo(
                f"{manifest.left_out} newer entries are not covered by a checkpoint yet and were left out "
                "(run `baldur-audit checkpoint` to include them)",
                err=True,
            )


@click.command(name="check-export")
@click.argument("folder", type=click.Path(path_type=Path))
@public_key_option()
@json_option("Print the result as JSON.")
@pass_app
def check_export_command(app: App, folder: Path, public_keys: tuple[str, ...], as_json: bool) -> None:
    """Prove offline, with public keys only, that the export in FOLDER is complete for its range
    and unaltered (exit 0 valid, 1 invalid: one line per failure, 2 could not check)."""
    with app.guard():
        verifiers = read_public_keys(public_keys)
        try:
            result = check_export(folder, verifiers)
        except ExportUnreadable as exc:
            app.fail(f"cannot check: {exc}")
    if as_json:
        emit_json(result.as_dict())
    elif result.status == "invalid":
        for line in result.lines():
            click.echo(f"INVALID: {line}")
    elif result.status == "unverifiable":
        for reason in result.unverifiable:
            click.echo(f"UNVERIFIABLE: {reason}: give the verifier key of one of them with --public-key")
    else:
        summary = result.summary
        kinds = summary["kinds"]
        checkpoint = summary["checkpoint"]
        click.echo(
            f"valid: entries {summary['first_seq']}..{summary['last_seq']} of the ledger {summary['origin']} "
            f"({summary['count']} entries: {kinds['event']} events, {kinds['duplicate']} duplicates, "
            f"{kinds['rejected']} rejected"
            + (f", {summary['pruned']} pruned" if summary["pruned"] else "")
            + f") are complete and unaltered under the checkpoint of size {checkpoint['size']} signed "
            f"{checkpoint['time']} by {', '.join(checkpoint['signed_by'])}"
        )
    sys.exit(
        ExitCode.OK if result.valid else ExitCode.FAILED if result.status == "invalid" else ExitCode.UNCHECKED
    )


COMMANDS = (export, check_export_command)
