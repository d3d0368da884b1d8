"""``schemas publish`` and ``schemas list``: writer schemas carried by the log itself
(schemas/CHAIN.md §19)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from baldur_audit.producers.schema_records import publish_schema
from baldur_audit.schemas.codec import BUILT_IN_FINGERPRINTS, KNOWN_SCHEMAS, WriterSchema, resolution_problem
from baldur_audit.schemas.errors import DecodeError

from .app import App, emit_json, pass_app
from .options import json_option


@click.group()
def schemas() -> None:
    """Writer schemas: publish one to the topic, list those the ledger knows."""


@schemas.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds to wait."
)
@json_option("Print the outcome as JSON.")
@pass_app
def publish(app: App, file: Path, timeout: float, as_json: bool) -> None:
    """Publish the writer schema in FILE (an .avsc) to the ledger topic as a schema record.

    Producers that encode events with a schema the chainer may not know (another language,
    a newer version) publish it first; the chainer then reads their events through Avro
    schema resolution. A schema that does not resolve against the ChangeEvent reader schema
    is refused here (the chainer would seal it as rejected).
    """
    with app.guard():
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            app.fail(f"cannot read {file}: {type(exc).__name__}")
        try:
            schema = WriterSchema.from_json(text)
        except DecodeError as exc:
            app.fail(f"{file}: {exc.reason}")
        problem = resolution_problem(schema)
        if problem is not None:
            app.fail(
                f"{file}: writer schema {schema.fingerprint.hex()} does not resolve against "
                f"the reader schema: {problem}"
            )
        settings = app.settings
        publish_schema(
            schema,
            bootstrap=settings.bootstrap,
            topic=settings.topic,
            producer_config=app.kafka_config(),
            timeout=timeout,
        )
        result = {"fingerprint": schema.fingerprint.hex(), "topic": settings.topic, "name": _name(schema)}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"published writer schema {result['fingerprint']} ({result['name']}) to {settings.topic}")


@schemas.command(name="list")
@json_option("Print the schemas as JSON.")
@pass_app
def list_schemas(app: App, as_json: bool) -> None:
    """The writer schemas the ledger knows, with the seq from which each is known."""
    with app.guard():
        with app.store() as store:
            rows = store.writer_schema_rows()
            start = store.schema_records_from()
    found: dict[str, dict[str, Any]] = {}
    for fingerprint in sorted(BUILT_IN_FINGERPRINTS):
        found[fingerprint.hex()] = _entry(KNOWN_SCHEMAS[fingerprint], known_from=1, origin="built-in")
    for fingerprint, text, first_seq in rows:
        if fingerprint.hex() in found:
            continue
        schema = WriterSchema.from_json(text)
        # Learned from a schema record at first_seq: events after it are read with it.
        found[fingerprint.hex()] = _entry(
            schema, known_from=first_seq + 1, origin=f"schema record seq {first_seq}"
        )
    listed = list(found.values())
    result = {"schema_records_from": start, "schemas": listed}
    if as_json:
        emit_json(result)
        return
    for item in listed:
        click.echo(
            f"{item['fingerprint']}  {item['name']}  known from seq {item['known_from']} ({item['origin']})"
        )


def _name(schema: WriterSchema) -> str:
    document = json.loads(schema.schema_json)
    if not isinstance(document, dict):
        return "?"
    name, namespace = str(document.get("name", "?")), document.get("namespace")
    return name if namespace is None or "." in name else f"{namespace}.{name}"


def _entry(schema: WriterSchema, *, known_from: int, origin: str) -> dict[str, Any]:
    return {
        "fingerprint": schema.fingerprint.hex(),
        "name": _name(schema),
        "known_from": known_from,
        "origin": origin,
        "fields": [field["name"] for field in schema.plain.get("fields", [])],
    }


COMMANDS = (schemas,)
