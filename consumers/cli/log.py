"""``log``: the forensic queries — what changed, by whom, when, in which trace, in the hour
before an incident — as readable lines or JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..postgres.search import LogFilter, LogPage, search_page
from ..verification.file_chain import FileChainError, file_log
from .app import App, emit_json, pass_app
from .options import json_option, parse_duration, parse_time


def _render_value(value: Any, width: int = 72) -> str:
    if value is None:
        return "∅"
    text = (
        json.dumps(value, ensure_ascii=False, sort_keys=True)
        if not isinstance(value, str)
        else json.dumps(value, ensure_ascii=False)
    )
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command(name="log")
@click.option("--target", help="Configuration key or resource (* wildcards).")
@click.option("--actor", help="Who made the change (* wildcards).")
@click.option("--action", help="create, update, delete, apply, rollback, trip, restart, ...")
@click.option("--trace-id", help="W3C trace id (32 hex digits).")
@click.option("--since", help="From this time: ISO 8601, or a duration ago such as 2h.")
@click.option("--until", "until_", metavar="TIME", help="Up to this time (exclusive).")
@click.option("--before", "before_", metavar="TIME", help="What changed right before TIME (with --window).")
@click.option("--window", default="1h", show_default=True, help="Window for --before.")
@click.option("--rejected", is_flag=True, help="Show rejected records instead of events.")
@click.option(
    "--all",
    "all_kinds",
    is_flag=True,
    help="Show every entry: events, duplicates, rejected and schema records.",
)
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Entries shown at most.",
)
@click.option(
    "--after-seq",
    type=click.IntRange(0),
    default=None,
    metavar="SEQ",
    help="Page forward: the first --limit matches after SEQ, in seq order (default: the newest).",
)
@click.option(
    "--file",
    "file_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read the local file chain in this folder instead of the ledger.",
)
@json_option("One JSON object per line.")
@pass_app
def log_command(
    app: App,
    target: str | None,
    actor: str | None,
    action: str | None,
    trace_id: str | None,
    since: str | None,
    until_: str | None,
    before_: str | None,
    window: str,
    rejected: bool,
    all_kinds: bool,
    limit: int,
    after_seq: int | None,
    file_dir: Path | None,
    as_json: bool,
) -> None:
    """Forensic queries: what changed, by whom, when, in which trace."""
    with app.guard():
        now = datetime.now(UTC)
        start = parse_time(since, now=now) if since else None
        end = parse_time(until_, now=now) if until_ else None
        if before_:
            if since or until_:
                raise click.UsageError("--before cannot be combined with --since/--until")
            end = parse_time(before_, now=now)
            try:
                start = end - parse_duration(window)
            except OverflowError:
                raise click.UsageError("--window reaches before year 1") from None
        kinds = (
            ("event", "duplicate", "rejected", "schema")
            if all_kinds
            else ("rejected",)
            if rejected
            else ("event",)
        )
        query = LogFilter(
            target=target,
            actor=actor,
            action=action,
            trace_id=trace_id,
            since=start,
            until=end,
            kinds=kinds,
            limit=limit,
            after_seq=after_seq,
        )
        if file_dir is not None:
            try:
                page = LogPage(*file_log(file_dir, query))
            except OSError as exc:
                raise FileChainError(f"cannot read {file_dir}: {exc.strerror or exc}") from None
        else:
            with app.store() as store:
                page = search_page(store, query)
        rows = page.entries
        if as_json:
            for row in rows:
                emit_json(row)
        elif not rows:
            click.echo("no entries match", err=True)
        else:
            _print(rows)
        left_out = _left_out(page, after_seq)
        if left_out:
            click.echo(left_out, err=True)


def _left_out(page: LogPage, after_seq: int | None) -> str:
    """The stderr line that says what a page left out (empty when nothing was)."""
    shown = len(page.entries)
    if shown >= page.matched:
        return ""
    if after_seq is None:
        return (
            f"showing the newest {shown} of {page.matched} matching entries; "
            "use --limit, or page through them all with --after-seq 0"
        )
    return (
        f"showing {shown} of {page.matched} matching entries after seq {after_seq}; "
        f"next page: --after-seq {page.entries[-1]['seq']}"
    )


def _print(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        when = (row["occurred_at"] or row["kafka_timestamp"]).astimezone(UTC)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S")
        if row["kind"] == "schema":
            click.echo(
                f"#{row['seq']:<6} {stamp}  SCHEMA record at offset {row['kafka_offset']} (a writer schema)"
            )
            continue
        if row["kind"] == "rejected":
            click.echo(
                f"#{row['seq']:<6} {stamp}  REJECTED offset {row['kafka_offset']}: {row['reject_reason']}"
            )
            continue
        dup = f" (duplicate of #{row['duplicate_of']})" if row["kind"] == "duplicate" else ""
        if row.get("pruned"):  # retention dropped its payload and personal columns
            click.echo(f"#{row['seq']:<6} {stamp}  [pruned] {row['kind']}{dup}")
            continue
        reason = f"  — {row['reason']}" if row["reason"] else ""
        who = "[erased]" if row.get("erased") else row.get("identity") or row["actor"]
        click.echo(
            f"#{row['seq']:<6} {stamp}  {who} ({row['actor_type']}) "
            f"{row['action']} {row['target']}: {_render_value(row['before'])} → "
            f"{_render_value(row['after'])}{reason}{dup}"
        )
