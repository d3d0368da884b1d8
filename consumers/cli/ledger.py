"""Running the ledger: ``init`` (schema, identity, topic), ``chain`` (the chaining consumer)
and ``status`` (head, lag, the chainer group)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from baldur_audit.producers.filechain import FileChainError, chain_status
from baldur_audit.schemas.chain import SigningKey

from ..chain_keys import ForwardSecureChainKeys, genesis_key, load_chain_keys
from ..chainer import Chainer, require_chain_keys
from ..kafka.admin import KafkaTopicAdmin
from ..kafka.source import KafkaEventSource, KafkaTopicReader
from ..metrics.chainer import PrometheusChainerMetrics
from ..metrics.server import MetricsServer
from ..retention_schedule import RetentionSchedule
from .app import App, emit_json, pass_app
from .options import client_id as check_client_id
from .options import json_option, metrics_address_option, replication_factor_option


@click.command()
@replication_factor_option("Replication factor when the topic is created (3 in production).")
@json_option("Print the result as JSON.")
@pass_app
def init(app: App, replication_factor: int, as_json: bool) -> None:
    """Create or upgrade the database schema and create or validate the topic."""
    with app.guard():
        app.key()
        ring = app.keyring()
        # The topic first: a ledger identity is never bound to a topic it cannot use.
        report = KafkaTopicAdmin(app.settings.bootstrap, config=app.kafka_config()).ensure_topic(
            app.settings.topic, replication_factor=replication_factor
        )
        with app.store() as store:
            applied = store.migrate()
            key = genesis_key(ring, store.stored_genesis_key_id())
            meta = store.ensure_ledger(
                ledger_id=app.settings.effective_ledger_id, topic=app.settings.topic, partition=0, key=key
            )
        result = {
            "migrations_applied": applied,
            "ledger_id": meta.ledger_id,
            "key_id": meta.genesis_key_id,
            "topic": report.topic,
            "topic_created": report.created,
            "topic_config": report.config,
            "warnings": list(report.warnings),
        }
        if as_json:
            emit_json(result)
        else:
            click.echo(
                f"ledger {meta.ledger_id} ready (migrations applied: "
                f"{applied or 'none'}); topic {report.topic} "
                f"{'created' if report.created else 'validated'}; key {meta.genesis_key_id}"
            )


@click.command()
@click.option(
    "--batch-size",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Records sealed per database transaction at most.",
)
@click.option(
    "--until-idle",
    type=click.FloatRange(0.0),
    default=None,
    metavar="SECONDS",
    help="Exit 0 once caught up and idle this long (default: run until stopped).",
)
@click.option(
    "--session-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(1.0, 300.0),
    metavar="SECONDS",
    help="Consumer-group session timeout: how soon a standby takes over a dead chainer.",
)
@click.option(
    "--client-id",
    default=None,
    metavar="NAME",
    type=click.STRING,
    callback=check_client_id,
    help="This chainer's Kafka client id, as `status` and kafka-consumer-groups show it "
    "(default: baldur-chainer-HOST-PID).",
)
@metrics_address_option()
@json_option("Print run statistics as JSON at the end.")
@pass_app
def chain(
    app: App,
    batch_size: int,
    until_idle: float | None,
    session_timeout: float,
    client_id: str | None,
    metrics_address: str | None,
    as_json: bool,
) -> None:
    """Run the chaining consumer: seal every topic record into the ledger."""
    metrics: PrometheusChainerMetrics | None = None
    with app.guard(), ExitStack() as cleanup:
        if metrics_address:
            # Serving first: a liveness probe answers while the chainer starts.
            metrics = PrometheusChainerMetrics()
            server = MetricsServer(address=metrics_address, registry=metrics.registry, ready=metrics.ready)
            server.start()
            cleanup.callback(server.close)
        chain_keys = load_chain_keys(app.settings)
        key = chain_keys.current
        if isinstance(chain_keys, ForwardSecureChainKeys):
            app.hold_only(key)  # the chainer holds the current epoch key only
        settings = app.settings
        kafka_config = app.kafka_config()
        with app.store() as probe:
            probe.read_meta()  # fail fast, in one line, if `init` has not run
            require_chain_keys(probe, chain_keys)

        def source_factory(**callbacks: Any) -> KafkaEventSource:
            return KafkaEventSource(
                bootstrap=settings.bootstrap,
                topic=settings.topic,
                group=settings.group,
                session_timeout_ms=int(session_timeout * 1000),
                client_id=client_id or f"baldur-chainer-{socket.gethostname()}-{os.getpid()}",
                config=kafka_config,
                **callbacks,
            )

        chainer = Chainer(
            store_factory=app.store,
            source_factory=source_factory,
            key=key,
            chain_keys=chain_keys,
            batch_size=batch_size,
            until_idle=until_idle,
            checkpointer=app.checkpointer(app.keyring()),
            observer=metrics,
            retention=retention_schedule(app, lambda: chain_keys.current),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: chainer.stop())
        stats = chainer.run()
        if as_json:
            emit_json(stats.as_dict())
        else:
            figures = stats.as_dict()
            click.echo(
                f"sealed {stats.sealed} records ({stats.events} events, {stats.rejected} "
                f"rejected, {stats.duplicates} duplicates) in {figures['seconds']} s; "
                f"head at seq {stats.head_seq}, offset {stats.head_offset}"
            )


def retention_schedule(app: App, key: Callable[[], SigningKey]) -> RetentionSchedule | None:
    """The chainer's scheduled retention from ``BALDUR_AUDIT_RETENTION`` (None: unset); in
    entries mode the anchors are signed with the first checkpoint signing key too."""
    period = app.settings.retention
    if period is None:
        return None
    mode = app.settings.retention_mode
    signer = app.checkpoint_keys(signing=True).signers[0] if mode == "entries" else None
    return RetentionSchedule(period=period, mode=mode, key=key, signer=signer)


@click.command()
@click.option(
    "--file",
    "file_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The local file chain in this folder: head seq, segments, size, last append.",
)
@json_option("Print the status as JSON.")
@pass_app
def status(app: App, file_dir: Path | None, as_json: bool) -> None:
    """Chain head, topic end offset, lag and the chainer group's members."""
    if file_dir is not None:
        with app.guard():
            _file_status(file_dir, as_json)
        return
    with app.guard():
        settings = app.settings
        with app.store() as store:
            meta = store.read_meta()
            head = store.read_head()
            rejected = store.rejected_by_reason()  # an unknown writer schema is an alarm
        reader = KafkaTopicReader(
            bootstrap=settings.bootstrap, topic=settings.topic, config=app.kafka_config()
        )
        try:
            _, end = reader.watermarks()
        finally:
            reader.close()
        admin = KafkaTopicAdmin(settings.bootstrap, config=app.kafka_config())
        group = admin.group_state(settings.group, settings.topic)
        result = {
            "ledger_id": meta.ledger_id,
            "topic": meta.topic,
            "head": {"seq": head.seq, "offset": head.offset, "epoch": head.epoch},
            "topic_end_offset": end,
            "lag": max(end - (head.offset + 1), 0),
            "group": group,
            "rejected_by_reason": rejected,
        }
        if as_json:
            emit_json(result)
            return
        members = (
            ", ".join(
                f"{m['client_id']}@{m['host']}" + (" (active)" if m["assignment"] else " (standby)")
                for m in group["members"]
            )
            or "none"
        )
        click.echo(
            f"head seq {head.seq} offset {head.offset} (epoch {head.epoch}); topic end "
            f"{end}; lag {result['lag']}; group {group['group']} {group['state']}, "
            f"committed {group['committed_offset']}, members: {members}"
        )
        for reason, count in rejected.items():
            click.echo(f"rejected: {count} x {reason}")


def _file_status(directory: Path, as_json: bool) -> None:
    try:
        found = chain_status(directory)
    except OSError as exc:
        raise FileChainError(f"cannot read {directory}: {exc.strerror or exc}") from None
    if as_json:
        emit_json(found.as_dict())
        return
    last = (
        "never"
        if found.last_append_ms is None
        else datetime.fromtimestamp(found.last_append_ms / 1000, UTC).isoformat(timespec="milliseconds")
    )
    click.echo(
        f"file chain {found.directory}: head seq {found.head_seq}, {found.segments} segments, "
        f"{found.bytes} bytes, last append {last}"
        + (f", from the retention anchor at seq {found.anchor.seq}" if found.anchor else "")
        + (f", torn tail of {found.torn_bytes} bytes" if found.torn_bytes else "")
    )


COMMANDS = (init, chain, status)
