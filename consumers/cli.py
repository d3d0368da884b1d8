"""The ``baldur-audit`` command line.

Each command parses options, builds the adapters, calls one function and
renders the result: one readable line (or a table) on stdout, or ``--json``.
Logs and progress go to stderr. Exit codes, for cron jobs: 0 intact/consistent,
1 tampered/divergent, 2 could not check (usage, configuration, unreachable
service, unexpected error — one line, no traceback unless ``--debug``);
``chain`` exits 3 when another chainer has fenced it off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.errors import AuditError, Fenced
from baldur_audit.schemas.keys import EpochSchedule, Keyring, RecordedSchedule

from . import config
from . import keyring as keys_config
from .chainer import Chainer
from .query import LogFilter, parse_duration, parse_time, search_entries
from .replay import rebuild_ledger, replay_compare
from .source import KafkaEventSource, KafkaTopicReader
from .store import PostgresLedgerStore
from .topic import KafkaTopicAdmin
from .verify import verify_ledger
from .witness import checkpointer_from_env, witness_check_from_env, witness_exit_code

log = logging.getLogger("baldur_audit")

EXIT_OK, EXIT_FAILED, EXIT_UNCHECKED, EXIT_FENCED = 0, 1, 2, 3


@dataclass(slots=True)
class Context:
    """What every command gets: settings, and the secrets to scrub from messages."""

    settings: config.Settings
    debug: bool
    _key: SigningKey | None = None
    _ring: Keyring | None = None

    def key(self) -> SigningKey:
        """The chain signing key (loaded once; a missing one in production is fatal)."""
        if self._key is None:
            self._key = config.load_signing_key()
        return self._key

    def keyring(self) -> Keyring:
        """Keys by key id: the signing key (current) and ``BALDUR_SECRETS_AUDIT_OLD_KEYS``."""
        if self._ring is None:
            self._ring = Keyring(self.key(), keys_config.parse_old_keys(
                os.environ.get(keys_config.OLD_KEYS_ENV, "")))
        return self._ring

    def store(self) -> PostgresLedgerStore:
        """A connection to the ledger database."""
        return PostgresLedgerStore.connect(self.settings.dsn)

    def secrets(self) -> list[str | bytes | None]:
        """Everything that must never be printed."""
        found: list[str | bytes | None] = [config.dsn_password(self.settings.dsn),
                                           self.settings.dsn]
        if self._key is not None:
            found.append(self._key.secret)
        for env in (config.KEY_ENV, "BALDUR_SECRETS_CHECKPOINT_KEY"):
            raw = os.environ.get(env)
            if raw:
                found.extend([raw.strip(), *raw.replace(",", " ").split()])
        raw_old = os.environ.get(keys_config.OLD_KEYS_ENV)
        if raw_old:
            found.extend([raw_old.strip(), *raw_old.replace(",", " ").split()])
        if self._ring is not None:
            found.extend(key.secret for key in self._ring.values())
        return found


def _verification_keys(ctx: Context) -> tuple[dict[str, SigningKey], EpochSchedule | None]:
    """The keys ``verify`` needs (all epoch keys with forward security) and the epoch rule."""
    ring = ctx.keyring()
    epoch_n = keys_config.epoch_entries(os.environ)
    if epoch_n is None:
        return dict(ring), None
    with ctx.store() as store:
        last_seq = store.read_head().seq
    return dict(keys_config.verification_keys(ring, epoch_n=epoch_n, last_seq=last_seq)), \
        EpochSchedule(ring.current, epoch_entries=epoch_n)


def _replay_keys(ctx: Context, store: PostgresLedgerStore) -> dict[str, Any]:
    """``replay_compare``'s key arguments: each entry rebuilt with the key it names (rotation)
    or with its epoch's key (forward security)."""
    ring = ctx.keyring()
    epoch_n = keys_config.epoch_entries(os.environ)
    if epoch_n is None:
        changes, last_seq = keys_config.key_changes(store)
        return {"ring": ring, "key_for": RecordedSchedule(changes, ring, last_seq=last_seq).key_for}
    schedule = EpochSchedule(ring.current, epoch_entries=epoch_n)
    return {"ring": {**ring, ring.current.key_id: ring.current}, "key_for": schedule.key_for}


def _fail(ctx: Context | None, message: str, code: int = EXIT_UNCHECKED) -> NoReturn:
    secrets = ctx.secrets() if ctx is not None else [os.environ.get(config.KEY_ENV)]
    one_line = " ".join(config.scrub(message, *secrets).split())
    click.echo(f"baldur-audit: {one_line}", err=True)
    sys.exit(code)


@contextmanager
def _guard(ctx: Context) -> Iterator[None]:
    """The one place where exceptions become exit codes and one-line messages."""
    try:
        yield
    except Fenced as exc:
        _fail(ctx, f"stopped: another chainer took over the chain ({exc}); this one wrote "
                   "nothing more", EXIT_FENCED)
    except AuditError as exc:
        if ctx.debug:
            log.exception("failed")
        _fail(ctx, f"error: {exc}")
    except KeyboardInterrupt:
        _fail(ctx, "interrupted")
    except click.ClickException:
        raise
    except Exception as exc:  # the CLI boundary: no traceback for users
        if ctx.debug:
            log.exception("unexpected error")
        _fail(ctx, f"unexpected error: {type(exc).__name__}: {exc}")


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def _progress(label: str, total: int | None) -> Callable[[int], None] | None:
    """A progress reporter on stderr, shown only on a terminal."""
    if not sys.stderr.isatty():
        return None
    bar = click.progressbar(length=total or 0, label=label, file=sys.stderr,
                            show_pos=True, show_eta=bool(total))
    bar.__enter__()
    return bar.update


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--bootstrap", envvar="BALDUR_KAFKA_BOOTSTRAP", default=config.DEFAULT_BOOTSTRAP,
              show_default=True, help="Kafka bootstrap servers [env BALDUR_KAFKA_BOOTSTRAP].")
@click.option("--topic", envvar="BALDUR_AUDIT_TOPIC", default=config.DEFAULT_TOPIC,
              show_default=True, help="Ledger topic [env BALDUR_AUDIT_TOPIC].")
@click.option("--dsn", envvar="BALDUR_SQL_DSN", default=config.DEFAULT_DSN,
              show_default=False, help="PostgreSQL DSN [env BALDUR_SQL_DSN; default: the local "
                                       "stack's, postgresql://baldur@127.0.0.1:25432/baldur_audit].")
@click.option("--group", envvar="BALDUR_CHAINER_GROUP", default=config.DEFAULT_GROUP,
              show_default=True, help="Chainer consumer group [env BALDUR_CHAINER_GROUP].")
@click.option("--ledger-id", envvar="BALDUR_LEDGER_ID", default=None,
              help="Ledger identity bound by the genesis link [env BALDUR_LEDGER_ID; "
                   "default baldur-audit:<topic>].")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(click_ctx: click.Context, bootstrap: str, topic: str, dsn: str, group: str,
        ledger_id: str | None, verbose: int, debug: bool) -> None:
    """baldur-audit: a tamper-evident audit trail on Kafka and PostgreSQL."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=logging.DEBUG if debug else level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click_ctx.obj = Context(settings=config.Settings(bootstrap=bootstrap, topic=topic, dsn=dsn,
                                                     group=group, ledger_id=ledger_id),
                            debug=debug)


pass_context = click.make_pass_decorator(Context)


@cli.command()
@click.option("--replication-factor", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Replication factor when the topic is created (3 in production).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def init(ctx: Context, replication_factor: int, as_json: bool) -> None:
    """Create or upgrade the database schema and create or validate the topic."""
    with _guard(ctx):
        key = ctx.key()
        ring = ctx.keyring()
        # The topic first: a ledger identity is never bound to a topic it cannot use.
        report = KafkaTopicAdmin(ctx.settings.bootstrap).ensure_topic(
            ctx.settings.topic, replication_factor=replication_factor)
        with ctx.store() as store:
            applied = store.migrate()
            key = keys_config.init_key(store, ring)
            meta = store.ensure_ledger(ledger_id=ctx.settings.effective_ledger_id,
                                       topic=ctx.settings.topic, partition=0, key=key)
        result = {"migrations_applied": applied, "ledger_id": meta.ledger_id,
                  "key_id": meta.genesis_key_id, "topic": report.topic,
                  "topic_created": report.created, "topic_config": report.config,
                  "warnings": list(report.warnings)}
        if as_json:
            _emit_json(result)
        else:
            click.echo(f"ledger {meta.ledger_id} ready (migrations applied: "
                       f"{applied or 'none'}); topic {report.topic} "
                       f"{'created' if report.created else 'validated'}; key {meta.genesis_key_id}")


def _client_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _CLIENT_ID.fullmatch(value):
        raise click.BadParameter("use 1-200 letters, digits, '.', '_' or '-'")
    return value


_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


@cli.command()
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1, 100_000),
              help="Records sealed per database transaction at most.")
@click.option("--until-idle", type=click.FloatRange(0.0), default=None, metavar="SECONDS",
              help="Exit 0 once caught up and idle this long (default: run until stopped).")
@click.option("--session-timeout", default=10.0, show_default=True,
              type=click.FloatRange(1.0, 300.0), metavar="SECONDS",
              help="Consumer-group session timeout: how soon a standby takes over a dead chainer.")
@click.option("--client-id", default=None, metavar="NAME", type=click.STRING,
              callback=_client_id,
              help="This chainer's Kafka client id, as `status` and kafka-consumer-groups show it "
                   "(default: baldur-chainer-HOST-PID).")
@click.option("--json", "as_json", is_flag=True, help="Print run statistics as JSON at the end.")
@pass_context
def chain(ctx: Context, batch_size: int, until_idle: float | None, session_timeout: float,
          client_id: str | None, as_json: bool) -> None:
    """Run the chaining consumer: seal every topic record into the ledger."""
    with _guard(ctx):
        chain_keys = keys_config.chain_keys_from_env()
        key = chain_keys.current
        if isinstance(chain_keys, keys_config.ForwardSecureChainKeys):
            ctx._ring = Keyring(key)  # the chainer holds the current epoch key only
        settings = ctx.settings
        with ctx.store() as probe:
            probe.read_meta()  # fail fast, in one line, if `init` has not run
            keys_config.require_chain_keys(probe, chain_keys)

        def source_factory(**callbacks: Any) -> KafkaEventSource:
            return KafkaEventSource(bootstrap=settings.bootstrap, topic=settings.topic,
                                    group=settings.group,
                                    session_timeout_ms=int(session_timeout * 1000),
                                    client_id=client_id or f"baldur-chainer-"
                                    f"{socket.gethostname()}-{os.getpid()}", **callbacks)

        chainer = Chainer(store_factory=ctx.store, source_factory=source_factory, key=key,
                          chain_keys=chain_keys,
                          batch_size=batch_size, until_idle=until_idle,
                          checkpointer=checkpointer_from_env(settings, ctx.keyring()))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: chainer.stop())
        stats = chainer.run()
        if as_json:
            _emit_json(stats.as_dict())
        else:
            figures = stats.as_dict()
            click.echo(f"sealed {stats.sealed} records ({stats.events} events, {stats.rejected} "
                       f"rejected, {stats.duplicates} duplicates) in {figures['seconds']} s; "
                       f"head at seq {stats.head_seq}, offset {stats.head_offset}")


@cli.command()
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep the last accepted checkpoint here; refuse a ledger that does not extend it.")
@click.option("--no-witness", is_flag=True, help="Do not read the witnessed checkpoints.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def verify(ctx: Context, state: Path | None, no_witness: bool, as_json: bool) -> None:
    """Walk the ledger and recompute every link (exit 0 intact, 1 tampered, 2 could not check)."""
    with _guard(ctx):
        keys, schedule = _verification_keys(ctx)
        witness = None if no_witness and state is None else \
            witness_check_from_env(ctx.settings, state=state, use_witness=not no_witness)
        with ctx.store() as store:
            report = verify_ledger(store, keys, progress=_progress("verifying", None),
                                   witness=witness)
        if schedule is not None:
            with ctx.store() as store:
                report = keys_config.with_epoch_check(store, report, schedule)
        if as_json:
            _emit_json(report.as_dict())
        elif report.intact:
            click.echo(f"intact: {report.entries} entries, head seq {report.head['seq']} "
                       f"offset {report.head['offset']} "
                       f"({report.as_dict()['entries_per_second']} entries/s)"
                       + (f"; witness: {report.witness['status']}: "
                          f"{report.witness['detail'] or report.witness['skipped']}"
                          if report.witness else "")
                       + (f"; from the retention anchor at seq {report.retention['anchor']['seq']}"
                          if report.retention and report.retention["anchor"] else ""))
        else:
            brk = report.first_break
            assert brk is not None
            click.echo(f"TAMPERED: first break at seq {brk.seq}: {brk.kind}: {brk.detail}")
    brk = report.first_break
    if brk is None:
        sys.exit(witness_exit_code(report.witness))
    sys.exit(EXIT_UNCHECKED if brk.kind == "unverifiable" else EXIT_FAILED)


@cli.command()
@click.option("--rebuild", is_flag=True,
              help="Write a fresh ledger from the topic into the (empty) database at --dsn.")
@click.option("--max-lag", default="5m", show_default=True, metavar="DURATION",
              help="Unsealed records older than this count as a truncated tail.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def replay(ctx: Context, rebuild: bool, max_lag: str, as_json: bool) -> None:
    """Rebuild the chain from the topic and compare it with the ledger (exit 0/1/2)."""
    with _guard(ctx):
        lag = parse_duration(max_lag)  # options first: a usage error needs no key
        key = ctx.keyring().current
        settings = ctx.settings
        reader = KafkaTopicReader(bootstrap=settings.bootstrap, topic=settings.topic)
        try:
            with ctx.store() as store:
                if rebuild:
                    report = rebuild_ledger(store, reader, key,
                                            ledger_id=settings.effective_ledger_id,
                                            topic=settings.topic,
                                            progress=_progress("rebuilding", None))
                else:
                    admin = KafkaTopicAdmin(settings.bootstrap)

                    def committed() -> int | None:
                        try:
                            return admin.group_state(settings.group, settings.topic)[
                                "committed_offset"]
                        except AuditError:
                            return None

                    report = replay_compare(store, reader, key, committed_offset=committed,
                                            **_replay_keys(ctx, store),
                                            max_lag_seconds=lag.total_seconds(),
                                            progress=_progress("replaying", None))
        finally:
            reader.close()
        if as_json:
            _emit_json(report.as_dict())
        elif rebuild:
            click.echo(f"rebuilt: sealed {report.topic_records} topic records into a fresh ledger")
        elif report.consistent:
            click.echo(f"consistent: {report.topic_records} topic records, "
                       f"{report.ledger_entries} ledger entries"
                       + (f", {report.unsealed} not sealed yet" if report.unsealed else ""))
        else:
            div = report.first_divergence
            assert div is not None
            click.echo(f"DIVERGENT: first divergence at seq {div.seq} (offset {div.offset}): "
                       f"{div.kind}: {div.detail}")
    div = report.first_divergence
    sys.exit(EXIT_OK if div is None else
             EXIT_UNCHECKED if div.kind == "unverifiable" else EXIT_FAILED)


def _render_value(value: Any, width: int = 72) -> str:
    if value is None:
        return "∅"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) \
        if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command(name="log")
@click.option("--target", help="Configuration key or resource (* wildcards).")
@click.option("--actor", help="Who made the change (* wildcards).")
@click.option("--action", help="create, update, delete, apply, rollback, trip, restart, ...")
@click.option("--trace-id", help="W3C trace id (32 hex digits).")
@click.option("--since", help="From this time: ISO 8601, or a duration ago such as 2h.")
@click.option("--until", "until_", metavar="TIME", help="Up to this time (exclusive).")
@click.option("--before", "before_", metavar="TIME",
              help="What changed right before TIME (with --window).")
@click.option("--window", default="1h", show_default=True, help="Window for --before.")
@click.option("--rejected", is_flag=True, help="Show rejected records instead of events.")
@click.option("--all", "all_kinds", is_flag=True, help="Show events, duplicates and rejected.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def log_command(ctx: Context, target: str | None, actor: str | None, action: str | None,
                trace_id: str | None, since: str | None, until_: str | None,
                before_: str | None, window: str, rejected: bool, all_kinds: bool, limit: int,
                as_json: bool) -> None:
    """Forensic queries: what changed, by whom, when, in which trace."""
    with _guard(ctx):
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
        kinds = ("event", "duplicate", "rejected") if all_kinds else \
            ("rejected",) if rejected else ("event",)
        query = LogFilter(target=target, actor=actor, action=action, trace_id=trace_id,
                          since=start, until=end, kinds=kinds, limit=limit)
        with ctx.store() as store:
            rows = search_entries(store, query)
        if as_json:
            for row in rows:
                _emit_json(row)
            return
        if not rows:
            click.echo("no entries match", err=True)
            return
        for row in rows:
            when = (row["occurred_at"] or row["kafka_timestamp"]).astimezone(UTC)
            stamp = when.strftime("%Y-%m-%d %H:%M:%S")
            if row["kind"] == "rejected":
                click.echo(f"#{row['seq']:<6} {stamp}  REJECTED offset {row['kafka_offset']}: "
                           f"{row['reject_reason']}")
                continue
            dup = f" (duplicate of #{row['duplicate_of']})" if row["kind"] == "duplicate" else ""
            if row.get("pruned"):  # retention dropped its payload and personal columns
                click.echo(f"#{row['seq']:<6} {stamp}  [pruned] {row['kind']}{dup}")
                continue
            reason = f"  — {row['reason']}" if row["reason"] else ""
            who = "[erased]" if row.get("erased") else row.get("identity") or row["actor"]
            click.echo(f"#{row['seq']:<6} {stamp}  {who} ({row['actor_type']}) "
                       f"{row['action']} {row['target']}: {_render_value(row['before'])} → "
                       f"{_render_value(row['after'])}{reason}{dup}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Chain head, topic end offset, lag and the chainer group's members."""
    with _guard(ctx):
        settings = ctx.settings
        with ctx.store() as store:
            meta = store.read_meta()
            head = store.read_head()
        reader = KafkaTopicReader(bootstrap=settings.bootstrap, topic=settings.topic)
        try:
            _, end = reader.watermarks()
        finally:
            reader.close()
        group = KafkaTopicAdmin(settings.bootstrap).group_state(settings.group, settings.topic)
        result = {"ledger_id": meta.ledger_id, "topic": meta.topic,
                  "head": {"seq": head.seq, "offset": head.offset, "epoch": head.epoch},
                  "topic_end_offset": end, "lag": max(end - (head.offset + 1), 0),
                  "group": group}
        if as_json:
            _emit_json(result)
            return
        members = ", ".join(f"{m['client_id']}@{m['host']}"
                            + (" (active)" if m["assignment"] else " (standby)")
                            for m in group["members"]) or "none"
        click.echo(f"head seq {head.seq} offset {head.offset} (epoch {head.epoch}); topic end "
                   f"{end}; lag {result['lag']}; group {group['group']} {group['state']}, "
                   f"committed {group['committed_offset']}, members: {members}")


from .cli_proofs import PROOF_COMMANDS  # noqa: E402  (checkpoints and evidence bundles)
from .cli_retention import RETENTION_COMMANDS  # noqa: E402  (prune, erase, identities)
from .emit import emit  # noqa: E402  (the command lives in its own module)

cli.add_command(emit)
for _command in (*PROOF_COMMANDS, *RETENTION_COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``baldur-audit`` console script."""
    try:
        cli.main(standalone_mode=False, prog_name="baldur-audit")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail(None, "aborted")
    except click.ClickException as exc:
        _fail(None, exc.format_message().splitlines()[0] if exc.format_message() else str(exc))
    except SystemExit:
        raise
    except Exception as exc:
        _fail(None, f"unexpected error: {type(exc).__name__}")
    sys.exit(EXIT_OK)
