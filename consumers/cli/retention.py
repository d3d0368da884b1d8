"""Retention and erasure: ``prune``, ``erase`` and ``identities sync``."""

from __future__ import annotations

import click

from baldur_audit.schemas.errors import ConfigError

from ..retention import MODES, erase, prune, sync_identities
from .app import App, emit_json, pass_app
from .options import json_option, parse_duration


@click.command(name="prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="DURATION",
    help="Retention period: entries whose broker time is older (e.g. 90d, 12w).",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="payload",
    show_default=True,
    help="payload: drop payloads and personal columns, keep links; entries: drop "
    "whole entries behind a signed retention anchor.",
)
@click.option("--dry-run", is_flag=True, help="Report what would be pruned; change nothing.")
@json_option("Print the result as JSON.")
@pass_app
def prune_command(app: App, older_than: str, mode: str, dry_run: bool, as_json: bool) -> None:
    """Prune old entries: the one sanctioned deletion (the chain still verifies)."""
    with app.guard():
        period = parse_duration(older_than)
        key = app.keyring().current
        # Entries mode: the anchor is signed with the Ed25519 checkpoint key too (CHAIN.md §17).
        signer = app.checkpoint_keys(signing=True).signers[0] if mode == "entries" else None
        with app.store() as store:
            report = prune(store, older_than=period, mode=mode, key=key, dry_run=dry_run, signer=signer)
        if as_json:
            emit_json(report.as_dict())
            return
        verb = "would prune" if dry_run else "pruned"
        what = "payloads of" if mode == "payload" else "whole"
        anchor = f"; retention anchor at seq {report.anchor.seq}" if report.anchor else ""
        click.echo(f"{verb} {what} {report.changed} entries up to seq {report.cut_seq}{anchor}")


@click.command(name="erase")
@click.argument("pseudonym")
@click.option("--who", required=True, help="Who requests or performs the erasure.")
@click.option("--why", required=True, help="Why (e.g. the erasure request reference).")
@json_option("Print the result as JSON.")
@pass_app
def erase_command(app: App, pseudonym: str, who: str, why: str, as_json: bool) -> None:
    """Erase a person: record the erasure on the ledger, then delete the pseudonym's mapping."""
    with app.guard():
        if not pseudonym.startswith("psn1-"):
            raise ConfigError("not a pseudonym: expected psn1- and 64 lowercase hex digits")
        with app.store() as store:
            report = erase(
                store,
                bootstrap=app.settings.bootstrap,
                kafka_config=app.kafka_config(),
                topic=app.settings.topic,
                pseudonym=pseudonym,
                who=who,
                why=why,
            )
        if as_json:
            emit_json(report.as_dict())
            return
        state = "mapping deleted" if report.mapping_deleted else "no mapping was loaded"
        click.echo(f"erased {pseudonym}: {state}; recorded as event {report.event_id}")


@click.group(name="identities")
def identities() -> None:
    """Pseudonym mappings (producers/pseudonym.py)."""


@identities.command(name="sync")
@json_option("Print the result as JSON.")
@pass_app
def identities_sync(app: App, as_json: bool) -> None:
    """Load <topic>.identities into the identities table (erased ones stay erased)."""
    with app.guard():
        with app.store() as store:
            result = sync_identities(
                store,
                bootstrap=app.settings.bootstrap,
                topic=app.settings.topic,
                kafka_config=app.kafka_config(),
            )
        if as_json:
            emit_json(result)
            return
        click.echo(f"read {result['read']} mappings; {result['identities']} identities loaded")


COMMANDS = (prune_command, erase_command, identities)
