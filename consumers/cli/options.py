"""Options and arguments shared by the commands: durations and times as people write them
(parsed in ``consumers/times.py``, shared with the viewer), the ``--client-id`` check, the
``--json`` flag and ``--metrics-address``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from baldur_audit.schemas.checkpoint import VerifierKey
from baldur_audit.schemas.errors import ConfigError

from ..checkpoint_keys import read_verifier_keys
from ..metrics.server import parse_address
from ..settings import METRICS_ADDRESS_ENV
from ..times import parse_duration, parse_time

__all__ = [
    "client_id",
    "json_option",
    "metrics_address_option",
    "parse_duration",
    "parse_time",
    "public_key_option",
    "read_public_keys",
    "replication_factor_option",
    "explicit_replication_factor",
]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")

F = TypeVar("F", bound=Callable[..., Any])


def client_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """The ``--client-id`` callback: a Kafka client id people can read in ``status``."""
    if value is not None and not _CLIENT_ID.fullmatch(value):
        raise click.BadParameter("use 1-200 letters, digits, '.', '_' or '-'")
    return value


def replication_factor_option(help_text: str) -> Callable[[F], F]:
    """``--replication-factor`` of a topic the command may create (1 to 32, default 1)."""
    return click.option(
        "--replication-factor",
        default=1,
        show_default=True,
        type=click.IntRange(1, 32),
        help=help_text,
    )


def explicit_replication_factor(value: int) -> int | None:
    """``--replication-factor`` when the user gave it, else None: the topic then gets the
    ledger's rule (1, and min(3, brokers) in production)."""
    source = click.get_current_context().get_parameter_source("replication_factor")
    return None if source is click.core.ParameterSource.DEFAULT else value


def json_option(help_text: str) -> Callable[[F], F]:
    """The ``--json`` flag (passed as ``as_json``), with the command's own help text."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _metrics_address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Checked before anything starts: a bad address is a usage error."""
    if not value:
        return None
    try:
        parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def metrics_address_option() -> Callable[[F], F]:
    """``--metrics-address HOST:PORT`` (env ``BALDUR_METRICS_ADDRESS``) of a long-running command."""
    return click.option(
        "--metrics-address",
        envvar=METRICS_ADDRESS_ENV,
        default=None,
        metavar="HOST:PORT",
        callback=_metrics_address,
        help="Serve Prometheus metrics, /livez and /readyz on HOST:PORT (a bare PORT binds "
        f"127.0.0.1; default: off) [env {METRICS_ADDRESS_ENV}].",
    )


def public_key_option() -> Callable[[F], F]:
    """``--public-key FILE`` (repeatable, required) of the offline checkers."""
    return click.option(
        "--public-key",
        "public_keys",
        multiple=True,
        required=True,
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="File of checkpoint verifier keys (from `baldur-audit keys public`); repeatable.",
    )


def read_public_keys(paths: Sequence[str]) -> list[VerifierKey]:
    """The verifier keys in the ``--public-key`` files; raises :class:`ConfigError`."""
    verifiers: list[VerifierKey] = []
    for name in paths:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"cannot read public key file {name}: {why}") from None
        verifiers.extend(read_verifier_keys(text, name))
    return verifiers
