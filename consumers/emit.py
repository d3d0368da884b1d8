"""``baldur-audit emit``: the operator's way to record events — one from options,
or many from a JSON-lines file — through the same producer library services use
(redaction, IP masking and trace ids included).

Every line is checked before anything is sent, so bad input sends nothing.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import click

from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.errors import AuditError, InvalidEvent

LINE_KEYS = {"actor", "actor_type", "action", "target", "before", "after", "reason", "source",
             "client_ip", "trace_id", "attributes"}
REQUIRED_KEYS = ("actor", "action", "target")
MAX_LINES = 100_000


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _json_option(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        # A bare word is a JSON string: --after 30s means "30s".
        return text


def parse_lines(stream: BinaryIO) -> list[dict[str, Any]]:
    """Events from JSON lines (blank lines skipped); raises ``click.UsageError`` naming the line."""
    events = []
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise click.UsageError(f"line {number}: not valid UTF-8") from None
        if number > MAX_LINES:
            raise click.UsageError(f"more than {MAX_LINES} lines: split the file")
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, or a number too long to convert
            why = getattr(exc, "msg", "bad value")
            raise click.UsageError(f"line {number}: not valid JSON ({why})") from None
        except RecursionError:
            raise click.UsageError(f"line {number}: JSON nested too deeply") from None
        if not isinstance(item, dict):
            raise click.UsageError(f"line {number}: expected a JSON object")
        unknown = sorted(set(item) - LINE_KEYS)
        if unknown:
            raise click.UsageError(f"line {number}: unknown key {unknown[0]!r} "
                                   f"(allowed: {', '.join(sorted(LINE_KEYS))})")
        missing = [key for key in REQUIRED_KEYS if not item.get(key)]
        if missing:
            raise click.UsageError(f"line {number}: missing {missing[0]!r}")
        item["_line"] = number
        events.append(item)
    return events


@click.command()
@click.option("--actor", help="Who made the change.")
@click.option("--actor-type", default="user", show_default=True,
              type=click.Choice(["user", "service", "system"]))
@click.option("--action", help="create, update, delete, apply, rollback, trip, restart, ...")
@click.option("--target", help="The configuration key or resource that changed.")
@click.option("--before", help="Value before, as JSON (a bare word is taken as a string).")
@click.option("--after", help="Value after, as JSON (a bare word is taken as a string).")
@click.option("--reason", help="Why.")
@click.option("--source", default="cli", show_default=True,
              type=click.Choice(["api", "cli", "scheduler", "framework"]))
@click.option("--client-ip", help="Client IP (masked before sending).")
@click.option("--trace-id", help="W3C trace id, 32 hex digits.")
@click.option("--attribute", "attributes", multiple=True, metavar="KEY=VALUE",
              help="Extra string attribute (repeatable).")
@click.option("--file", "file_", type=click.File("rb"),
              help="JSON-lines file of events ('-' for stdin).")
@click.option("--timeout", default=15.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds to wait for Kafka to acknowledge.")
@click.pass_obj
def emit(ctx: Any, actor: str | None, actor_type: str, action: str | None, target: str | None,
         before: str | None, after: str | None, reason: str | None, source: str,
         client_ip: str | None, trace_id: str | None, attributes: tuple[str, ...],
         file_: BinaryIO | None, timeout: float) -> None:
    """Record events: one from options, or many from --file; prints their event ids."""
    from .cli import _fail, _guard  # the CLI's one error boundary

    with _guard(ctx):
        if file_ is not None:
            if actor or action or target:
                raise click.UsageError("use either --file or --actor/--action/--target")
            items = parse_lines(file_)
        else:
            if not (actor and action and target):
                raise click.UsageError("--actor, --action and --target are required "
                                       "(or give --file)")
            attrs = {}
            for pair in attributes:
                key, sep, value = pair.partition("=")
                if not sep or not key:
                    raise click.UsageError(f"--attribute expects KEY=VALUE, found {pair[:40]!r}")
                attrs[key] = value
            items = [{"actor": actor, "actor_type": actor_type, "action": action,
                      "target": target, "before": _json_option(before),
                      "after": _json_option(after), "reason": reason,
                      "source": source, "client_ip": client_ip, "trace_id": trace_id,
                      "attributes": attrs, "_line": None}]
        settings = ctx.settings
        failed_ids: set[str] = set()
        # A large file may fill the producer's queue: wait for room (up to --timeout) rather
        # than stop half-way.
        trail = AuditTrail(bootstrap=settings.bootstrap, topic=settings.topic,
                           max_block_ms=int(timeout * 1000),
                           on_failure=lambda event_id, _error: failed_ids.add(str(event_id)))
        ids: list[Any] = []
        refused = ""
        try:
            prepared = []
            for item in items:
                line = item.pop("_line")
                item.setdefault("source", "cli")
                try:
                    prepared.append(trail.prepare(**item))
                except InvalidEvent as exc:
                    where = f"line {line}: " if line is not None else ""
                    raise click.UsageError(f"{where}{exc}") from None
            try:
                for event in prepared:
                    ids.append(trail.publish(event))
            except AuditError as exc:  # the queue stayed full: stop, report what went
                refused = str(exc)
            finally:
                trail.flush(timeout)
        finally:
            trail.close(timeout=1.0)  # purges what is left: reported through on_failure
        delivered = [str(event_id) for event_id in ids if str(event_id) not in failed_ids]
        for event_id in delivered:  # what Kafka acknowledged is printed even on failure
            click.echo(event_id)
        if len(delivered) < len(items):
            _fail(ctx, f"error: {len(items) - len(delivered)} of {len(items)} events not "
                       f"acknowledged by Kafka at {settings.bootstrap} within {timeout:.0f} s"
                       + (f" ({refused})" if refused else ""))
        if len(ids) > 1:
            click.echo(f"recorded {len(ids)} events", err=True)


__all__ = ["emit", "parse_lines"]
