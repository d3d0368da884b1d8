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
from baldur_audit.schemas import accel
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.defaults import DEFAULT_DSN, DEFAULT_OWNER_DSN

from ..chain_keys import ForwardSecureChainKeys, genesis_key, load_chain_keys
from ..chainer import Chainer, require_chain_keys
from ..kafka.admin import KafkaTopicAdmin
from ..kafka.source import KafkaEventSource, KafkaTopicReader
from ..metrics.chainer import PrometheusChainerMetrics
from ..metrics.server import MetricsServer
from ..postgres.ledger import PostgresLedgerStore
from ..postgres.privileges import (
    Roles,
    apply_grants,
    check_roles,
    dsn_database,
    dsn_user,
    grant_plan,
    grants_script,
    require_least_privilege,
    require_roles,
    store_posture,
)
from ..retention_schedule import RetentionSchedule
from ..settings import CHAINER_ROLE_ENV, OPERATOR_ROLE_ENV, OWNER_DSN_ENV, READER_ROLE_ENV
from .app import App, emit_json, pass_app
from .options import client_id as check_client_id
from .options import (
    explicit_replication_factor,
    json_option,
    metrics_address_option,
    replication_factor_option,
)


@click.command()
@replication_factor_option("Replication factor when the topic is created (3 in production).")
@click.option(
    "--owner-dsn",
    envvar=OWNER_DSN_ENV,
    default=None,
    help=f"PostgreSQL DSN of the role that owns the ledger: migrates and grants [env {OWNER_DSN_ENV}; "
    "default: --dsn].",
)
@click.option(
    "--chainer-role",
    envvar=CHAINER_ROLE_ENV,
    default=None,
    metavar="ROLE",
    help=f"Grant the chainer's privileges to ROLE [env {CHAINER_ROLE_ENV}; default: the user of --dsn "
    "when it is not the owner].",
)
@click.option(
    "--reader-role",
    envvar=READER_ROLE_ENV,
    default=None,
    metavar="ROLE",
    help=f"Grant SELECT only to ROLE [env {READER_ROLE_ENV}].",
)
@click.option(
    "--operator-role",
    envvar=OPERATOR_ROLE_ENV,
    default=None,
    metavar="ROLE",
    help=f"Grant EXECUTE on baldur_prune and baldur_erase only to ROLE [env {OPERATOR_ROLE_ENV}].",
)
@click.option(
    "--print-grants",
    is_flag=True,
    help="Print the SQL that grants the roles their privileges (for a DBA) and exit; connects to nothing.",
)
@json_option("Print the result as JSON.")
@pass_app
def init(
    app: App,
    replication_factor: int,
    owner_dsn: str | None,
    chainer_role: str | None,
    reader_role: str | None,
    operator_role: str | None,
    print_grants: bool,
    as_json: bool,
) -> None:
    """Create or upgrade the database schema, grant the runtime roles their privileges, and
    create or validate the topic."""
    # Nothing set: the default DSN is the local stack's chainer role, whose owner is the local owner.
    owner_dsn = owner_dsn or (DEFAULT_OWNER_DSN if app.settings.dsn == DEFAULT_DSN else app.settings.dsn)
    if print_grants:
        with app.guard():
            roles = runtime_roles(app, owner_dsn, None, chainer_role, reader_role, operator_role)
            check_roles(roles, owner=dsn_user(owner_dsn))
            plan = grant_plan(roles, schema="public", database=dsn_database(owner_dsn))
            if as_json:
                emit_json({"sql": grants_script(plan), "granted": plan.granted})
            else:
                click.echo(grants_script(plan), nl=False)
        return
    with app.guard():
        app.key()
        ring = app.keyring()
        # The topic first: a ledger identity is never bound to a topic it cannot use.
        report = KafkaTopicAdmin(app.settings.bootstrap, config=app.kafka_config()).ensure_topic(
            app.settings.topic,
            replication_factor=explicit_replication_factor(replication_factor),
            production=app.settings.production,
        )
        with PostgresLedgerStore.connect(owner_dsn) as store:
            roles = runtime_roles(
                app, owner_dsn, store_posture(store).role, chainer_role, reader_role, operator_role
            )
            require_roles(store, roles)  # before anything changes
            applied = store.migrate()
            key = genesis_key(ring, store.stored_genesis_key_id())
            meta = store.ensure_ledger(
                ledger_id=app.settings.effective_ledger_id, topic=app.settings.topic, partition=0, key=key
            )
            grants = apply_grants(store, roles)
        result = {
            "migrations_applied": applied,
            "ledger_id": meta.ledger_id,
            "key_id": meta.genesis_key_id,
            "topic": report.topic,
            "topic_created": report.created,
            "topic_config": report.config,
            "warnings": list(report.warnings),
            "owner": grants["owner"],
            "granted": grants["granted"],
        }
        if as_json:
            emit_json(result)
        else:
            click.echo(
                f"ledger {meta.ledger_id} ready (migrations applied: "
                f"{applied or 'none'}); topic {report.topic} "
                f"{'created' if report.created else 'validated'}; key {meta.genesis_key_id}"
            )
            for kind, given in grants["granted"].items():
                click.echo(f"granted the {kind} privileges to role {given['role']}")
            for warning in report.warnings:
                click.echo(f"warning: {warning}")


def runtime_roles(
    app: App,
    owner_dsn: str,
    owner: str | None,
    chainer: str | None,
    reader: str | None,
    operator: str | None,
) -> Roles:
    """The roles ``init`` grants to: as given, the chainer by default the user of ``--dsn``
    when ``--owner-dsn`` is another DSN and that user is not the owner (``owner`` None: the
    owner DSN's user)."""
    if chainer is None and owner_dsn != app.settings.dsn:
        user = dsn_user(app.settings.dsn)
        if user is not None and user != (owner or dsn_user(owner_dsn)):
            chainer = user
    return Roles(chainer=chainer or None, reader=reader or None, operator=operator or None)


@click.command()
@click.option(
    "--batch-size",
    default=5000,
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
        with app.store() as probe:  # once the configuration is known to be good
            require_least_privilege(
                probe, process="chain", production=settings.production, allow_owner=settings.allow_owner_role
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
            role = store_posture(store)
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
            "role": role.as_dict(),
            "native": {"installed": accel.INSTALLED is not None, "enabled": accel.enabled()},
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
        click.echo(
            f"role {role.role}: owner {_yes(role.owner)}, superuser {_yes(role.superuser)}, "
            f"can create {_yes(role.can_create)}"
            + ("" if role.least_privilege else " (it could lift the ledger's guards)")
        )
        click.echo(f"native accelerator: {_native_state()}")


def _native_state() -> str:
    if accel.enabled():
        return "on"
    return "off (BALDUR_NATIVE=off)" if accel.INSTALLED is not None else "not installed (pure-Python path)"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


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
