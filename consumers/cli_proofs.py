"""The checkpoint and evidence commands of ``baldur-audit``: ``checkpoint``, ``prove``,
``check-proof``, ``consistency`` and ``keys public``.

Same conventions as ``cli.py``: the result on stdout (a readable line, ``--json``, or the
bundle itself), one-line errors on stderr, exit 0 valid/ok, 1 invalid or tampered, 2 could
not check. ``check-proof`` needs no database, no Kafka and no HMAC key: only the
checkpoint verifier keys given with ``--public-key``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import psycopg

from baldur_audit.schemas.checkpoint import Checkpoint, UnverifiableCheckpoint, open_checkpoint
from baldur_audit.schemas.errors import ChainBreak, ConfigError

from .bundle_check import check_bundle
from .bundles import BundleInvalid, render
from .checkpoint_keys import CheckpointKeys, checkpoint_origin, load_checkpoint_keys, read_verifier_keys
from .checkpoints import Checkpointer, stored_checkpoint
from .proofs import ProofUnavailable, build_consistency_bundle, build_inclusion_bundle
from .witness import witness_logs

if TYPE_CHECKING:
    from .cli import Context

EXIT_OK, EXIT_FAILED, EXIT_UNCHECKED = 0, 1, 2  # as cli.py: valid, invalid, could not check
#: ``cli.py`` imports this module to register its commands, so the CLI's one place of error
#: handling (``_guard``, ``_fail``) and its JSON output are looked up when a command runs.
pass_context = click.pass_obj


def _guard(ctx: Context) -> Any:
    from .cli import _guard as guard

    return guard(ctx)


def _fail(ctx: Context, message: str, code: int = EXIT_UNCHECKED) -> NoReturn:
    from .cli import _fail as fail

    fail(ctx, message, code)


def _emit_json(value: Any) -> None:
    from .cli import _emit_json as emit_json

    emit_json(value)


def _keys(ctx: Context, *, signing: bool) -> CheckpointKeys:
    origin = checkpoint_origin(ctx.settings.effective_ledger_id)
    return load_checkpoint_keys(origin=origin, signing=signing)


def _write_bundle(text: str) -> None:
    """The bundle, byte for byte (ASCII), whatever stdout's encoding."""
    stream = click.get_binary_stream("stdout")
    stream.write(text.encode("ascii"))
    stream.flush()


def _self_check(ctx: Context, text: str, keys: CheckpointKeys, what: str) -> None:
    """A bundle is printed only if it verifies (unless no verifier key is configured)."""
    if not keys.verifiers:
        return
    try:
        check_bundle(text, keys.verifiers)
    except BundleInvalid as exc:
        _fail(ctx, f"{what} does not verify: {exc}", EXIT_FAILED)
    except UnverifiableCheckpoint:
        pass  # signed by a key this side does not hold: the auditor's key decides


@click.command()
@click.option("--replication-factor", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Replication factor if the witness topic has to be created (3 in production).")
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoint as JSON.")
@pass_context
def checkpoint(ctx: Context, replication_factor: int, as_json: bool) -> None:
    """Sign a checkpoint of the ledger now, publish it to the witnesses and store it."""
    with _guard(ctx):
        chain_keys = ctx.keyring()
        keys = _keys(ctx, signing=True)
        checkpointer = Checkpointer(
            dsn=ctx.settings.dsn, keys=keys, chain_keys=chain_keys,
            witnesses=witness_logs(ctx.settings, replication_factor=replication_factor),
            every=0, interval=0)
        try:
            made = checkpointer.checkpoint()
        except ChainBreak as exc:
            _fail(ctx, f"refusing to checkpoint: {exc.kind} at seq {exc.seq}: {exc.detail}",
                  EXIT_FAILED)
        finally:
            checkpointer.close()
        if as_json:
            _emit_json(made.as_dict())
        else:
            cp = made.checkpoint
            click.echo(f"checkpoint of size {cp.size} (root {cp.root_hash.hex()[:16]}…, head seq "
                       f"{cp.head_seq}) signed by {', '.join(s.verifier().label for s in keys.signers)}"
                       f"; published to {'; '.join(made.published)}")


@click.command()
@click.argument("seq", type=click.IntRange(1, 2**63 - 1))
@click.option("--size", type=click.IntRange(1, 2**63 - 1), default=None,
              help="Prove against the stored checkpoint of this tree size (default: the newest).")
@click.option("--no-payload", is_flag=True, help="Leave the payload bytes out of the bundle.")
@pass_context
def prove(ctx: Context, seq: int, size: int | None, no_payload: bool) -> None:
    """Print the offline evidence bundle of entry SEQ (JSON): the entry, its inclusion
    proof and the signed checkpoint. Check it with `check-proof`."""
    with _guard(ctx):
        keys = _keys(ctx, signing=False)
        try:
            with ctx.store() as store, store.snapshot() as conn:
                bundle = build_inclusion_bundle(conn, seq, size=size, include_payload=not no_payload)
        except ChainBreak as exc:
            _fail(ctx, f"{exc.kind} at seq {exc.seq}: {exc.detail}", EXIT_FAILED)
        text = render(bundle)
        _self_check(ctx, text, keys, f"the bundle of entry {seq} (the ledger or its tree was changed)")
        _write_bundle(text)


def _stored_or_file(conn: psycopg.Connection[Any], which: str,
                    keys: CheckpointKeys) -> tuple[Checkpoint, str]:
    """A checkpoint named by a tree size, ``latest``, or a file holding its note."""
    if which == "latest" or which.isdigit():
        stored = stored_checkpoint(conn, size=None if which == "latest" else int(which))
        if stored is None:
            raise ProofUnavailable("no checkpoint is stored" if which == "latest" else
                                   f"no checkpoint of size {which} is stored")
        note = stored.note
    else:
        try:
            note = Path(which).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot read checkpoint {which}: {reason}") from None
    if not keys.verifiers:
        raise ConfigError("no checkpoint verifier key is configured (BALDUR_SECRETS_CHECKPOINT_KEY "
                          "or BALDUR_CHECKPOINT_PUBLIC_KEYS)")
    parsed, _ = open_checkpoint(note, keys.verifiers, keys.origin)
    return parsed, note


@click.command()
@click.argument("old")
@click.argument("new", default="latest")
@pass_context
def consistency(ctx: Context, old: str, new: str) -> None:
    """Print a consistency bundle proving that the ledger of checkpoint OLD grew into the one
    of NEW without changing (each a tree size, `latest`, or a file holding a checkpoint note)."""
    with _guard(ctx):
        keys = _keys(ctx, signing=False)
        with ctx.store() as store, store.snapshot() as conn:
            bundle = build_consistency_bundle(conn, _stored_or_file(conn, old, keys),
                                              _stored_or_file(conn, new, keys))
        text = render(bundle)
        _self_check(ctx, text, keys, "the consistency bundle (the ledger or its tree was changed)")
        _write_bundle(text)


@click.command(name="check-proof")
@click.argument("bundle", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--public-key", "public_keys", multiple=True, required=True, metavar="FILE",
              type=click.Path(dir_okay=False),
              help="File of checkpoint verifier keys (from `baldur-audit keys public`); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def check_proof(ctx: Context, bundle: str, public_keys: tuple[str, ...], as_json: bool) -> None:
    """Verify an evidence bundle offline, with public keys only (exit 0 valid, 1 invalid,
    2 could not check)."""
    with _guard(ctx):
        verifiers = []
        for name in public_keys:
            try:
                text = Path(name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read public key file {name}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
            verifiers.extend(read_verifier_keys(text, name))
        try:
            data = sys.stdin.buffer.read() if bundle == "-" else Path(bundle).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read bundle {bundle}: {exc.strerror}") from None
        try:
            report = check_bundle(data, verifiers)
        except BundleInvalid as exc:
            _verdict(as_json, False, f"INVALID: {exc.detail}", EXIT_FAILED)
        except UnverifiableCheckpoint as exc:
            _verdict(as_json, None, f"UNVERIFIABLE: {exc}: give the verifier key of one of "
                                    "them with --public-key", EXIT_UNCHECKED)
        result = report.as_dict()
        if as_json:
            _emit_json(result)
        elif report.kind == "inclusion":
            cp = result["checkpoint"]
            what = ("a rejected record" if result["entry_kind"] == "rejected" else
                    f"a {result['entry_kind']} whose fields were pruned" if result["actor"] is None
                    else f"{result['actor']} {result['action']} {result['target']}")
            click.echo(f"valid: entry {result['seq']} ({what}) is in the ledger {result['origin']} "
                       f"of checkpoint size {cp['size']} signed {cp['time']} by "
                       f"{', '.join(cp['signed_by'])}"
                       + ("" if result["payload_checked"] else " (payload not included)"))
        else:
            click.echo(f"valid: the ledger {result['origin']} of checkpoint size "
                       f"{result['old']['size']} grew to size {result['new']['size']} without "
                       "changing its first entries")
    sys.exit(EXIT_OK)


def _verdict(as_json: bool, valid: bool | None, line: str, code: int) -> NoReturn:
    if as_json:
        _emit_json({"valid": valid, "reason": line.split(": ", 1)[1]})
    else:
        click.echo(line)
    sys.exit(code)


@click.group()
def keys() -> None:
    """Checkpoint keys."""


@keys.command(name="public")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@pass_context
def keys_public(ctx: Context, as_json: bool) -> None:
    """Print the checkpoint verifier keys to hand to auditors (never a private key)."""
    with _guard(ctx):
        production = os.environ.get("BALDUR_ENV", "").strip().lower() == "production"
        found = _keys(ctx, signing=not production)
        if not found.verifiers:
            raise ConfigError("no checkpoint key is configured (BALDUR_SECRETS_CHECKPOINT_KEY or "
                              "BALDUR_CHECKPOINT_PUBLIC_KEYS)")
        signing = {signer.verifier() for signer in found.signers}
        if as_json:
            _emit_json({"origin": found.origin, "keys": [
                {"key": str(key), "name": key.name, "key_hash": key.key_hash.hex(),
                 "signing": key in signing} for key in found.verifiers]})
            return
        click.echo(f"# checkpoint verifier keys of {found.origin} (for check-proof --public-key)")
        for key in found.verifiers:
            click.echo(str(key))


PROOF_COMMANDS = (checkpoint, prove, check_proof, consistency, keys)
