"""CLI commands for retention and erasure: ``prune``, ``erase``, ``identities sync``.

Registered by ``cli.py``; errors go through its one ``_guard`` (exit 2, one line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from baldur_audit.schemas.errors import ConfigError

from .query import parse_duration
from .retention import MODES, erase, prune, sync_identities

if TYPE_CHECKING:
    from .cli import Context

pass_context = click.pass_obj


def _guard(ctx: Context) -> Any:
    from .cli import _guard as guard

    return guard(ctx)


def _emit_json(value: Any) -> None:
    from .cli import _emit_json as emit_json

    emit_json(value)


@click.command(name="prune")
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Retention period: entries whose broker time is older (e.g. 90d, 12w).")
@click.option("--mode", type=click.Choice(MODES), default="payload", show_default=True,
              help="payload: drop payloads and personal columns, keep links; entries: drop "
                   "whole entries behind a signed retention anchor.")
@click.option("--dry-run", is_flag=True, help="Report what would be pruned; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def prune_command(ctx: Context, older_than: str, mode: str, dry_run: bool, as_json: bool) -> None:
    """Prune old entries: the one sanctioned deletion (the chain still verifies)."""
    with _guard(ctx):
        period = parse_duration(older_than)
        key = ctx.keyring().current
        with ctx.store() as store:
            report = prune(store, older_than=period, mode=mode, key=key, dry_run=dry_run)
        if as_json:
            _emit_json(report.as_dict())
            return
        verb = "would prune" if dry_run else "pruned"
        what = "payloads of" if mode == "payload" else "whole"
        anchor = f"; retention anchor at seq {report.anchor.seq}" if report.anchor else ""
        click.echo(f"{verb} {what} {report.changed} entries up to seq {report.cut_seq}{anchor}")


@click.command(name="erase")
@click.argument("pseudonym")
@click.option("--who", required=True, help="Who requests or performs the erasure.")
@click.option("--why", required=True, help="Why (e.g. the erasure request reference).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def erase_command(ctx: Context, pseudonym: str, who: str, why: str, as_json: bool) -> None:
    """Erase a person: record the erasure on the ledger, then delete the pseudonym's mapping."""
    with _guard(ctx):
        if not pseudonym.startswith("psn1-"):
            raise ConfigError("not a pseudonym: expected psn1- and 64 lowercase hex digits")
        with ctx.store() as store:
            report = erase(store, bootstrap=ctx.settings.bootstrap, topic=ctx.settings.topic,
                           pseudonym=pseudonym, who=who, why=why)
        if as_json:
            _emit_json(report.as_dict())
            return
        state = "mapping deleted" if report.mapping_deleted else "no mapping was loaded"
        click.echo(f"erased {pseudonym}: {state}; recorded as event {report.event_id}")


@click.group(name="identities")
def identities() -> None:
    """Pseudonym mappings (producers/pseudonym.py)."""


@identities.command(name="sync")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def identities_sync(ctx: Context, as_json: bool) -> None:
    """Load <topic>.identities into the identities table (erased ones stay erased)."""
    with _guard(ctx):
        with ctx.store() as store:
            result = sync_identities(store, bootstrap=ctx.settings.bootstrap,
                                     topic=ctx.settings.topic)
        if as_json:
            _emit_json(result)
            return
        click.echo(f"read {result['read']} mappings; {result['identities']} identities loaded")


RETENTION_COMMANDS = (prune_command, erase_command, identities)
