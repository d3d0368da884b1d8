"""``baldur-audit emit``: the operator's way to record events — one from options,
or many from a JSON-lines file — through the same producer library services use
(redaction, IP masking and trace ids included).

Every line is checked before anything is sent, so bad input sends nothing; lines are
checked in order (parsed, then validated as an event), so the error names the first bad
line. A line is strict JSON: no ``NaN``/``Infinity``, no duplicate keys (which one would
the ledger show?), numbers that fit (integers of at most 4300 digits, finite floats), no
byte-order mark. Error messages name the line and quote a key only when it is a short
plain word, never a value.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import click

from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.errors import AuditError, InvalidEvent
from baldur_audit.schemas.event import MAX_JSON_INT_DIGITS

from .app import App, pass_app

LINE_KEYS = {
    "actor",
    "actor_type",
    "action",
    "target",
    "before",
    "after",
    "reason",
    "source",
    "client_ip",
    "trace_id",
    "attributes",
    "event_id",
}
REQUIRED_KEYS = ("actor", "action", "target")
MAX_LINES = 100_000
#: Options that describe one event (parameter: flag): with --file they would be ignored.
EVENT_OPTIONS = {
    "actor": "--actor",
    "action": "--action",
    "target": "--target",
    "before": "--before",
    "after": "--after",
    "reason": "--reason",
    "client_ip": "--client-ip",
    "trace_id": "--trace-id",
    "attributes": "--attribute",
    "event_id": "--event-id",
}
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _quoted(text: str) -> str:
    """A key for an error message: quoted when a short plain word, else only its length."""
    return repr(text) if _PLAIN_WORD.fullmatch(text) else f"of {len(text)} characters"


class _LineError(ValueError):
    """A JSON line that parses but that the ledger must not take as it is."""


def _int(token: str) -> int:
    # The ledger's limit (CHAIN.md), said plainly; a host limit below it (PYTHONINTMAXSTRDIGITS)
    # still makes int() refuse, with Python's words.
    if len(token.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise _LineError(f"an integer of more than {MAX_JSON_INT_DIGITS} digits")
    return int(token)


def _float(token: str) -> float:
    number = float(token)
    if not math.isfinite(number):
        raise _LineError("a number too large for a 64-bit float")
    return number


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    item = dict(pairs)
    if len(item) != len(pairs):  # rare: only then look for the first repeated key
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _LineError(f"duplicate key {_quoted(key)}")
            seen.add(key)
    return item


class _Choice(click.Choice):
    """click.Choice whose error does not quote the value (it may be a misplaced secret)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        found = (
            repr(value)
            if isinstance(value, str) and _PLAIN_WORD.fullmatch(value)
            else f"a value of {len(str(value))} characters"
        )
        self.fail(f"expected one of {', '.join(map(str, self.choices))}, found {found}", param, ctx)


#: Strict JSON for lines, built once.
_LINE_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_not_json, parse_int=_int, parse_float=_float
)


def _json_option(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        # A bare word is a JSON string: --after 30s means "30s".
        return text


def parse_lines(stream: BinaryIO) -> list[dict[str, Any]]:
    """Events from JSON lines (blank lines skipped); raises ``click.UsageError`` naming the line.

    Each event carries its line number under ``_line``.
    """
    return [{**item, "_line": number} for number, item in iter_lines(stream)]


def iter_lines(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, event keys) of each non-blank line, in order; raises ``click.UsageError``
    naming the line as soon as one is not a JSON object of event keys."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise click.UsageError(f"line {number}: not valid UTF-8") from None
        if number > MAX_LINES:
            raise click.UsageError(f"more than {MAX_LINES} lines: split the file")
        if not line.strip():
            continue
        if line.startswith("\ufeff"):
            raise click.UsageError(
                f"line {number}: starts with a byte-order mark (U+FEFF): save the file as UTF-8 without BOM"
            )
        try:
            item = _LINE_DECODER.decode(line)
        except _LineError as exc:
            raise click.UsageError(f"line {number}: {exc}") from None
        except ValueError as exc:  # JSONDecodeError, NaN/Infinity
            why = getattr(exc, "msg", None) or str(exc)
            raise click.UsageError(f"line {number}: not valid JSON ({why})") from None
        except RecursionError:
            raise click.UsageError(f"line {number}: JSON nested too deeply") from None
        if not isinstance(item, dict):
            raise click.UsageError(f"line {number}: expected a JSON object")
        unknown = sorted(set(item) - LINE_KEYS)
        if unknown:
            raise click.UsageError(
                f"line {number}: unknown key {_quoted(unknown[0])} (allowed: {', '.join(sorted(LINE_KEYS))})"
            )
        missing = [key for key in REQUIRED_KEYS if not item.get(key)]
        if missing:
            raise click.UsageError(f"line {number}: missing {missing[0]!r}")
        if "actor_type" in item and item["actor_type"] is None:
            # The library fills an absent type from the request context; a line says it, or omits it.
            raise click.UsageError(f"line {number}: actor_type: expected user, service or system, not null")
        yield number, item


@click.command()
@click.option("--actor", help="Who made the change.")
@click.option("--actor-type", default="user", show_default=True, type=_Choice(["user", "service", "system"]))
@click.option("--action", help="create, update, delete, apply, rollback, trip, restart, ...")
@click.option("--target", help="The configuration key or resource that changed.")
@click.option("--before", help="Value before, as JSON (a bare word is taken as a string).")
@click.option("--after", help="Value after, as JSON (a bare word is taken as a string).")
@click.option("--reason", help="Why.")
@click.option(
    "--source", default="cli", show_default=True, type=_Choice(["api", "cli", "scheduler", "framework"])
)
@click.option("--client-ip", help="Client IP (masked before sending).")
@click.option("--trace-id", help="W3C trace id, 32 hex digits.")
@click.option(
    "--event-id",
    help="The event's own id, a UUID (default: a new UUIDv7). Sending the same id again "
    "records a duplicate, never a second event.",
)
@click.option(
    "--attribute",
    "attributes",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra string attribute (repeatable).",
)
@click.option("--file", "file_", type=click.File("rb"), help="JSON-lines file of events ('-' for stdin).")
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds to wait for Kafka to acknowledge.",
)
@pass_app
def emit(
    app: App,
    actor: str | None,
    actor_type: str,
    action: str | None,
    target: str | None,
    before: str | None,
    after: str | None,
    reason: str | None,
    source: str,
    client_ip: str | None,
    trace_id: str | None,
    event_id: str | None,
    attributes: tuple[str, ...],
    file_: BinaryIO | None,
    timeout: float,
) -> None:
    """Record events: one from options, or many from --file; prints their event ids."""
    with app.guard():
        if file_ is not None:
            given = {
                "actor": actor,
                "action": action,
                "target": target,
                "before": before,
                "after": after,
                "reason": reason,
                "client_ip": client_ip,
                "trace_id": trace_id,
                "attributes": attributes,
                "event_id": event_id,
            }
            named = [flag for name, flag in EVENT_OPTIONS.items() if given[name]]
            if named:
                raise click.UsageError(f"use either --file or event options ({named[0]} given with --file)")
            lines: Iterator[tuple[int | None, dict[str, Any]]] = iter_lines(file_)
        else:
            if not (actor and action and target):
                raise click.UsageError("--actor, --action and --target are required (or give --file)")
            attrs = {}
            for pair in attributes:
                key, sep, value = pair.partition("=")
                if not sep or not key:  # the text is not quoted: it may be a misplaced secret
                    raise click.UsageError(
                        f"--attribute expects KEY=VALUE, found an argument "
                        f"of {len(pair)} characters without "
                        f"{'a key' if sep else '='}"
                    )
                attrs[key] = value
            lines = iter(
                [
                    (
                        None,
                        {
                            "actor": actor,
                            "actor_type": actor_type,
                            "action": action,
                            "target": target,
                            "before": _json_option(before),
                            "after": _json_option(after),
                            "reason": reason,
                            "source": source,
                            "client_ip": client_ip,
                            "trace_id": trace_id,
                            "attributes": attrs,
                            "event_id": event_id,
                        },
                    )
                ]
            )
        settings = app.settings
        failed: dict[str, str] = {}  # event id -> why it was not delivered
        # A large file may fill the producer's queue: wait for room (up to --timeout) rather
        # than stop half-way.
        with _producer_logs_quiet():
            trail = AuditTrail(
                bootstrap=settings.bootstrap,
                topic=settings.topic,
                producer_config=app.kafka_config(),
                max_block_ms=int(timeout * 1000),
                on_failure=lambda event_id, error: _note(failed, str(event_id), error),
            )
            ids: list[Any] = []
            prepared = []
            refused = ""
            try:
                for line, item in lines:  # each line parsed, then validated: the first bad one fails
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
                    _flush(trail, timeout)
            finally:
                trail.close(timeout=1.0)  # purges what is left: reported through on_failure
        delivered = [str(event_id) for event_id in ids if str(event_id) not in failed]
        # What the broker answered (an authorization error, say), not what the client ran out of
        errors = [why for why in failed.values() if not why.startswith(("_MSG_TIMED_OUT", "_PURGE"))]
        for event_id in delivered:  # what Kafka acknowledged is printed even on failure
            click.echo(event_id)
        if len(delivered) < len(prepared):
            app.fail(
                f"error: {len(prepared) - len(delivered)} of {len(prepared)} events not acknowledged "
                + (
                    f"(Kafka at {settings.bootstrap} refused the producer: {trail.refusal})"
                    if trail.refusal
                    else f"by Kafka at {settings.bootstrap}: {errors[0]}"
                    if errors
                    else f"by Kafka at {settings.bootstrap} within {timeout:.0f} s"
                )
                + (f" ({refused})" if refused else "")
            )
        if len(ids) > 1:
            click.echo(f"recorded {len(ids)} events", err=True)


def _note(failed: dict[str, str], event_id: str, error: str) -> None:
    """Remember the first reason an event was not delivered."""
    failed.setdefault(event_id, error)


@contextmanager
def _producer_logs_quiet() -> Iterator[None]:
    """Without ``-v``, the producer library's own log lines (written for the services that embed
    it) stay quiet: the command reports what failed in its one line."""
    library = logging.getLogger("baldur_audit.producers")
    if library.isEnabledFor(logging.INFO):
        yield
        return
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library.setLevel(level)


def _flush(trail: AuditTrail, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for delivery, but no longer once the cluster refused the
    producer (its credentials, TLS settings or ACLs): waiting cannot change that."""
    deadline = time.monotonic() + timeout
    while trail.flush(min(0.2, max(0.0, deadline - time.monotonic()))):
        if trail.refusal is not None or time.monotonic() >= deadline:
            return


__all__ = ["emit", "iter_lines", "parse_lines"]
