"""The ``baldur-audit`` command line: the edge of the ledger side.

Each command parses options, builds the adapters through :class:`~.app.App`, calls one library
function and renders the result: one readable line (or a table) on stdout, or ``--json``.
Logs and progress go to stderr. Exit codes (:class:`~.app.ExitCode`), for cron jobs:
0 intact/consistent, 1 tampered/divergent, 2 could not check (usage, configuration,
unreachable service, unexpected error — one line, no traceback unless ``--debug``);
``chain`` exits 3 when another chainer has fenced it off.

One module per command group; this one holds the group, its global options and ``main``.
Nothing imports this package but ``__main__`` and the console script.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from baldur_audit.schemas import accel
from baldur_audit.schemas.errors import ConfigError

from ..settings import (
    BOOTSTRAP_ENV,
    DEFAULT_BOOTSTRAP,
    DEFAULT_DSN,
    DEFAULT_GROUP,
    DEFAULT_TOPIC,
    DSN_ENV,
    GROUP_ENV,
    KAFKA_CONFIG_ENV,
    LEDGER_ID_ENV,
    LOG_FORMAT_ENV,
    TOPIC_ENV,
    Settings,
)
from . import acls, checks, emit, evidence, export, ledger, log, monitor, retention, schemas, serve, ship
from .app import App, ExitCode, fail
from .logs import FORMATS, configure_logging

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--bootstrap",
    envvar=BOOTSTRAP_ENV,
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    help=f"Kafka bootstrap servers [env {BOOTSTRAP_ENV}].",
)
@click.option(
    "--kafka-config",
    envvar=KAFKA_CONFIG_ENV,
    default=None,
    metavar="FILE",
    help="librdkafka properties file for every Kafka client: security.protocol, sasl.*, ssl.* "
    f"(TLS, SASL) and tuning [env {KAFKA_CONFIG_ENV}].",
)
@click.option(
    "--topic",
    envvar=TOPIC_ENV,
    default=DEFAULT_TOPIC,
    show_default=True,
    help=f"Ledger topic [env {TOPIC_ENV}].",
)
@click.option(
    "--dsn",
    envvar=DSN_ENV,
    default=DEFAULT_DSN,
    show_default=False,
    help=f"PostgreSQL DSN [env {DSN_ENV}; default: the local "
    "stack's, postgresql://baldur@127.0.0.1:25432/baldur_audit].",
)
@click.option(
    "--group",
    envvar=GROUP_ENV,
    default=DEFAULT_GROUP,
    show_default=True,
    help=f"Chainer consumer group [env {GROUP_ENV}].",
)
@click.option(
    "--ledger-id",
    envvar=LEDGER_ID_ENV,
    default=None,
    help=f"Ledger identity bound by the genesis link [env {LEDGER_ID_ENV}; default baldur-audit:<topic>].",
)
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option(
    "--log-format",
    envvar=LOG_FORMAT_ENV,
    type=click.Choice(FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    help=f"Logs on stderr as text or one JSON object per line [env {LOG_FORMAT_ENV}].",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(
    click_ctx: click.Context,
    bootstrap: str,
    kafka_config: str | None,
    topic: str,
    dsn: str,
    group: str,
    ledger_id: str | None,
    verbose: int,
    log_format: str,
    debug: bool,
) -> None:
    """baldur-audit: a tamper-evident audit trail on Kafka and PostgreSQL."""
    app = App(
        settings=Settings.from_env(
            os.environ,
            bootstrap=bootstrap,
            topic=topic,
            dsn=dsn,
            group=group,
            ledger_id=ledger_id,
            kafka_config_file=kafka_config or None,
        ),
        debug=debug,
    )
    level = logging.WARNING - 10 * min(verbose, 2)
    configure_logging(
        level=logging.DEBUG if debug else level,
        log_format=log_format.lower(),
        secrets=app.secrets,
        debug=debug,
    )
    try:
        accel.set_enabled(app.settings.native())  # BALDUR_NATIVE: auto (default) or off
    except ConfigError as exc:
        app.fail(f"error: {exc}")
    click_ctx.obj = app


for _command in (
    *ledger.COMMANDS,
    *checks.COMMANDS,
    *monitor.COMMANDS,
    log.log_command,
    emit.emit,
    *evidence.COMMANDS,
    *retention.COMMANDS,
    *export.COMMANDS,
    *serve.COMMANDS,
    *ship.COMMANDS,
    *schemas.COMMANDS,
    *acls.COMMANDS,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``baldur-audit`` console script."""
    # Before click has parsed anything: what the environment configures is scrubbed all the same.
    secrets = App(
        settings=Settings.from_env(
            os.environ,
            dsn=os.environ.get(DSN_ENV) or DEFAULT_DSN,
            kafka_config_file=os.environ.get(KAFKA_CONFIG_ENV) or None,
        )
    ).secrets()
    try:
        cli.main(standalone_mode=False, prog_name="baldur-audit")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted", secrets=secrets)
    except click.ClickException as exc:
        fail(exc.format_message().splitlines()[0] if exc.format_message() else str(exc), secrets=secrets)
    except SystemExit:
        raise
    except Exception as exc:
        fail(f"unexpected error: {type(exc).__name__}", secrets=secrets)
    sys.exit(ExitCode.OK)
