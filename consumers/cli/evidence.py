"""Checkpoints and evidence: ``checkpoint``, ``prove``, ``consistency``, ``check-proof`` and
``keys public``.

The result goes to stdout (a readable line, ``--json``, or the bundle itself), one-line errors
to stderr; exit 0 valid/ok, 1 invalid or tampered, 2 could not check. ``check-proof`` needs no
database, no Kafka and no HMAC key: only the checkpoint verifier keys given with
``--public-key``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from baldur_audit.schemas.checkpoint import Checkpoint, UnverifiableCheckpoint, open_checkpoint
from baldur_audit.schemas.errors import ChainBreak, ConfigError

from ..checkpoint_keys import CheckpointKeys
from ..checkpointer import Checkpointer
from ..evidence.build import ProofUnavailable, build_consistency_bundle, build_inclusion_bundle
from ..evidence.bundle import BundleInvalid, render
from ..evidence.check import check_bundle
from ..postgres import Connection
from ..postgres.merkle import stored_checkpoint
from .app import App, ExitCode, emit_json, pass_app
from .options import (
    explicit_replication_factor,
    json_option,
    public_key_option,
    read_public_keys,
    replication_factor_option,
)


def _write_bundle(text: str) -> None:
    """The bundle, byte for byte (ASCII), whatever stdout's encoding."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("ascii"))
    sys.stdout.buffer.flush()


def _self_check(app: App, text: str, keys: CheckpointKeys, what: str) -> None:
    """A bundle is printed only if it verifies (unless no verifier key is configured)."""
    if not keys.verifiers:
        return
    try:
        check_bundle(text, keys.verifiers)
    except BundleInvalid as exc:
        app.fail(f"{what} does not verify: {exc}", ExitCode.FAILED)
    except UnverifiableCheckpoint:
        pass  # signed by a key this side does not hold: the auditor's key decides


@click.command()
@replication_factor_option("Replication factor if the witness topic has to be created (3 in production).")
@json_option("Print the checkpoint as JSON.")
@pass_app
def checkpoint(app: App, replication_factor: int, as_json: bool) -> None:
    """Sign a checkpoint of the ledger now, publish it to the witnesses and store it."""
    with app.guard():
        chain_keys = app.keyring()
        keys = app.checkpoint_keys(signing=True)
        checkpointer = Checkpointer(
            dsn=app.settings.dsn,
            keys=keys,
            chain_keys=chain_keys,
            witnesses=app.witness_logs(replication_factor=explicit_replication_factor(replication_factor)),
            every=0,
            interval=0,
        )
        try:
            made = checkpointer.checkpoint()
        except ChainBreak as exc:
            app.fail(f"refusing to checkpoint: {exc.kind} at seq {exc.seq}: {exc.detail}", ExitCode.FAILED)
        finally:
            checkpointer.close()
        if as_json:
            emit_json(made.as_dict())
        else:
            cp = made.checkpoint
            click.echo(
                f"checkpoint of size {cp.size} (root {cp.root_hash.hex()[:16]}…, head seq "
                f"{cp.head_seq}) signed by {', '.join(s.verifier().label for s in keys.signers)}"
                f"; published to {'; '.join(made.published)}"
            )


@click.command()
@click.argument("seq", type=click.IntRange(1, 2**63 - 1))
@click.option(
    "--size",
    type=click.IntRange(1, 2**63 - 1),
    default=None,
    help="Prove against the stored checkpoint of this tree size (default: the newest).",
)
@click.option("--no-payload", is_flag=True, help="Leave the payload bytes out of the bundle.")
@pass_app
def prove(app: App, seq: int, size: int | None, no_payload: bool) -> None:
    """Print the offline evidence bundle of entry SEQ (JSON): the entry, its inclusion
    proof and the signed checkpoint. Check it with `check-proof`."""
    with app.guard():
        keys = app.checkpoint_keys(signing=False)
        try:
            with app.store() as store, store.snapshot() as conn:
                bundle = build_inclusion_bundle(conn, seq, size=size, include_payload=not no_payload)
        except ChainBreak as exc:
            app.fail(f"{exc.kind} at seq {exc.seq}: {exc.detail}", ExitCode.FAILED)
        text = render(bundle)
        _self_check(app, text, keys, f"the bundle of entry {seq} (the ledger or its tree was changed)")
        _write_bundle(text)


def _stored_or_file(conn: Connection, which: str, keys: CheckpointKeys) -> tuple[Checkpoint, str]:
    """A checkpoint named by a tree size, ``latest``, or a file holding its note."""
    if which == "latest" or which.isdigit():
        stored = stored_checkpoint(conn, size=None if which == "latest" else int(which))
        if stored is None:
            raise ProofUnavailable(
                "no checkpoint is stored" if which == "latest" else f"no checkpoint of size {which} is stored"
            )
        note = stored.note
    else:
        try:
            note = Path(which).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot read checkpoint {which}: {reason}") from None
    if not keys.verifiers:
        raise ConfigError(
            "no checkpoint verifier key is configured (BALDUR_SECRETS_CHECKPOINT_KEY "
            "or BALDUR_CHECKPOINT_PUBLIC_KEYS)"
        )
    parsed, _ = open_checkpoint(note, keys.verifiers, keys.origin)
    return parsed, note


@click.command()
@click.argument("old")
@click.argument("new", default="latest")
@pass_app
def consistency(app: App, old: str, new: str) -> None:
    """Print a consistency bundle proving that the ledger of checkpoint OLD grew into the one
    of NEW without changing (each a tree size, `latest`, or a file holding a checkpoint note)."""
    with app.guard():
        keys = app.checkpoint_keys(signing=False)
        with app.store() as store, store.snapshot() as conn:
            bundle = build_consistency_bundle(
                conn, _stored_or_file(conn, old, keys), _stored_or_file(conn, new, keys)
            )
        text = render(bundle)
        _self_check(app, text, keys, "the consistency bundle (the ledger or its tree was changed)")
        _write_bundle(text)


@click.command(name="check-proof")
@click.argument("bundle", type=click.Path(dir_okay=False, allow_dash=True))
@public_key_option()
@json_option("Print the result as JSON.")
@pass_app
def check_proof(app: App, bundle: str, public_keys: tuple[str, ...], as_json: bool) -> None:
    """Verify an evidence bundle offline, with public keys only (exit 0 valid, 1 invalid,
    2 could not check)."""
    with app.guard():
        verifiers = read_public_keys(public_keys)
        try:
            data = sys.stdin.buffer.read() if bundle == "-" else Path(bundle).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read bundle {bundle}: {exc.strerror}") from None
        try:
            report = check_bundle(data, verifiers)
        except BundleInvalid as exc:
            _verdict(as_json, False, f"INVALID: {exc.detail}", ExitCode.FAILED)
        except UnverifiableCheckpoint as exc:
            _verdict(
                as_json,
                None,
                f"UNVERIFIABLE: {exc}: give the verifier key of one of them with --public-key",
                ExitCode.UNCHECKED,
            )
        result = report.as_dict()
        if as_json:
            emit_json(result)
        elif report.kind == "inclusion":
            cp = result["checkpoint"]
            what = (
                "a rejected record"
                if result["entry_kind"] == "rejected"
                else f"a {result['entry_kind']} whose fields were pruned"
                if result["actor"] is None
                else f"{result['actor']} {result['action']} {result['target']}"
            )
            click.echo(
                f"valid: entry {result['seq']} ({what}) is in the ledger {result['origin']} "
                f"of checkpoint size {cp['size']} signed {cp['time']} by "
                f"{', '.join(cp['signed_by'])}"
                + ("" if result["payload_checked"] else " (payload not included)")
            )
        else:
            click.echo(
                f"valid: the ledger {result['origin']} of checkpoint size "
                f"{result['old']['size']} grew to size {result['new']['size']} without "
                "changing its first entries"
            )
    sys.exit(ExitCode.OK)


def _verdict(as_json: bool, valid: bool | None, line: str, code: ExitCode) -> NoReturn:
    if as_json:
        emit_json({"valid": valid, "reason": line.split(": ", 1)[1]})
    else:
        click.echo(line)
    sys.exit(code)


@click.group()
def keys() -> None:
    """Checkpoint keys."""


@keys.command(name="public")
@json_option("Print the keys as JSON.")
@pass_app
def keys_public(app: App, as_json: bool) -> None:
    """Print the checkpoint verifier keys to hand to auditors (never a private key)."""
    with app.guard():
        found = app.checkpoint_keys(signing=not app.settings.production)
        if not found.verifiers:
            raise ConfigError(
                "no checkpoint key is configured (BALDUR_SECRETS_CHECKPOINT_KEY or "
                "BALDUR_CHECKPOINT_PUBLIC_KEYS)"
            )
        signing = {signer.verifier() for signer in found.signers}
        if as_json:
            emit_json(
                {
                    "origin": found.origin,
                    "keys": [
                        {
                            "key": str(key),
                            "name": key.name,
                            "key_hash": key.key_hash.hex(),
                            "signing": key in signing,
                        }
                        for key in found.verifiers
                    ],
                }
            )
            return
        click.echo(f"# checkpoint verifier keys of {found.origin} (for check-proof --public-key)")
        for key in found.verifiers:
            click.echo(str(key))


COMMANDS = (checkpoint, prove, check_proof, consistency, keys)
