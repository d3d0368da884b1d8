"""``acls``: the least Kafka ACLs for the ledger's principals, printed, or created with
``--apply`` through the admin API (``kafka/acls.py`` says who needs what and why)."""

from __future__ import annotations

from collections.abc import Sequence

import click

from baldur_audit.schemas.errors import ConfigError

from ..kafka.acls import Grant, KafkaAcls, kafka_acls_commands, least_acls, principal
from .app import App, emit_json, pass_app
from .options import json_option

#: What the printed set deliberately leaves to an administrator.
NOTES = (
    "init (CREATE on the ledger topic, DESCRIBE_CONFIGS) runs with an administrator's "
    "credentials: no principal here is granted it",
    "no principal gets ALTER, ALTER_CONFIGS or DELETE on a topic (retention.ms, DeleteRecords), "
    "nor anything on the cluster",
)


def _principals(_ctx: click.Context, _param: click.Parameter, values: Sequence[str]) -> tuple[str, ...]:
    """Checked before anything connects: a bad principal is a usage error."""
    try:
        return tuple(principal(value) for value in values)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _table(grants: Sequence[Grant], status: dict[tuple[str, ...], str]) -> list[str]:
    rows = [
        (
            *((status[g.key()],) if status else ()),
            g.principal,
            g.role,
            f"{g.resource}:{g.name}",
            g.operation,
            g.why,
        )
        for g in grants
    ]
    header = (*(("status",) if status else ()), "principal", "role", "resource", "operation", "why")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header) - 1)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in (header, *rows)
    ]


@click.command("acls")
@click.option(
    "--producer",
    "producers",
    multiple=True,
    metavar="PRINCIPAL",
    callback=_principals,
    help="A principal that produces audit events, e.g. User:payments (repeatable).",
)
@click.option(
    "--chainer",
    "chainers",
    multiple=True,
    metavar="PRINCIPAL",
    callback=_principals,
    help="The chainer's principal (it also runs `checkpoint`) (repeatable).",
)
@click.option(
    "--reader",
    "readers",
    multiple=True,
    metavar="PRINCIPAL",
    callback=_principals,
    help="A principal of replay, verify, status, monitor or serve (repeatable).",
)
@click.option("--topic", "topic", default=None, help="The ledger topic [default: the global --topic].")
@click.option(
    "--witness-topic",
    default=None,
    help="The witness topic [default: BALDUR_WITNESS_TOPIC, else <topic>.checkpoints].",
)
@click.option("--group", "group", default=None, help="The chainer group [default: the global --group].")
@click.option(
    "--apply",
    "apply_",
    is_flag=True,
    help="Create the missing ACLs through the admin API, with the Kafka client configuration "
    "(--kafka-config) of a principal that may alter the cluster's ACLs.",
)
@click.option(
    "--commands",
    "as_commands",
    is_flag=True,
    help="Print the set as kafka-acls.sh commands (add --command-config FILE for a secured cluster).",
)
@json_option("Print the ACL set (and with --apply what was created) as JSON.")
@pass_app
def acls(
    app: App,
    producers: tuple[str, ...],
    chainers: tuple[str, ...],
    readers: tuple[str, ...],
    topic: str | None,
    witness_topic: str | None,
    group: str | None,
    apply_: bool,
    as_commands: bool,
    as_json: bool,
) -> None:
    """Print (or --apply) the least Kafka ACLs of the ledger's producers, chainer and readers."""
    if not (producers or chainers or readers):
        raise click.UsageError("name at least one principal: --producer, --chainer or --reader")
    settings = app.settings
    with app.guard():
        ledger_topic = topic or settings.topic
        witness = witness_topic or (f"{topic}.checkpoints" if topic else settings.witness_topic)
        chainer_group = group or settings.group
        grants = least_acls(
            topic=ledger_topic,
            witness_topic=witness,
            group=chainer_group,
            producers=producers,
            chainers=chainers,
            readers=readers,
        )
        status: dict[tuple[str, ...], str] = {}
        if apply_:
            report = KafkaAcls(settings.bootstrap, config=app.kafka_config()).apply(grants)
            status.update((g.key(), "created") for g in report.created)
            status.update((g.key(), "present") for g in report.present)
        commands = kafka_acls_commands(grants, bootstrap=settings.bootstrap)
    if as_json:
        emit_json(
            {
                "topic": ledger_topic,
                "witness_topic": witness,
                "group": chainer_group,
                "applied": apply_,
                "acls": [g.as_dict() | ({"status": status[g.key()]} if status else {}) for g in grants],
                "created": sum(1 for s in status.values() if s == "created"),
                "present": sum(1 for s in status.values() if s == "present"),
                "kafka_acls_commands": commands,
                "notes": list(NOTES),
            }
        )
        return
    if as_commands:
        for line in commands:
            click.echo(line)
        return
    for line in _table(grants, status):
        click.echo(line)
    if apply_:
        created = sum(1 for s in status.values() if s == "created")
        click.echo(f"{created} ACLs created, {len(grants) - created} already present")
    for note in NOTES:
        click.echo(f"note: {note}")


COMMANDS = (acls,)
