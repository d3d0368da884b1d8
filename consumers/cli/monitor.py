"""``monitor``: the scheduled verifier as a long-running process — a round every ``--every``,
incremental (only what was added since the last round) except every ``--full-every``, when
it walks the whole ledger as ``verify`` does; the verdicts as Prometheus metrics, and one
line (or JSON object) per round on stdout. ``--once`` runs one round and exits with
``verify``'s codes, for a CronJob.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from baldur_audit.schemas.errors import AuditError, StoreUnavailable

from ..metrics.monitor import MonitorMetrics
from ..metrics.server import MetricsServer
from ..postgres.privileges import require_least_privilege
from ..postgres.verify_results import record_verify_result
from ..settings import scrub
from ..verification.incremental import (
    FULL,
    RoundReport,
    choose_mode,
    load_state,
    save_state,
    state_after,
    verify_round,
)
from .app import App, ExitCode, break_exit_code, emit_json, pass_app, witness_exit_code
from .options import json_option, metrics_address_option, parse_duration

log = logging.getLogger(__name__)

#: The state file's name in the state folder when ``--state`` is not given.
STATE_FILE = "monitor-state.json"
RESULT_OF_EXIT = {ExitCode.OK: "intact", ExitCode.FAILED: "tampered"}


class Stopped(Exception):
    """A round abandoned because the process was asked to stop."""


class _Rounds:
    """Runs rounds for :func:`monitor`: builds what a round needs from the app each time (a
    round that cannot check is reported and the next one starts afresh)."""

    def __init__(
        self,
        app: App,
        *,
        state_path: Path,
        full_every: float,
        witness: bool,
        as_json: bool,
        metrics: MonitorMetrics,
        stop: threading.Event,
    ) -> None:
        self.app = app
        self.state_path = state_path
        self.full_every = full_every
        self.witness = witness
        self.as_json = as_json
        self.metrics = metrics
        self.stop = stop
        self.count = 0

    def _progress(self, _entries: int) -> None:
        if self.stop.is_set():
            raise Stopped

    def run(self) -> ExitCode | None:
        """One round; its exit status as ``verify`` would give it (None: abandoned)."""
        self.count += 1
        started = time.monotonic()
        mode = FULL
        app = self.app
        try:
            state = load_state(self.state_path)
            mode = choose_mode(state, now=time.time(), full_every=self.full_every)
            keys, schedule = app.verification_keys()
            checkpoint_keys = app.checkpoint_keys(signing=False)
            witness = app.witness_check(state=None, use_witness=True) if self.witness else None
            with app.store() as store:
                rnd = verify_round(
                    store,
                    keys,
                    mode=mode,
                    state=state,
                    verifiers=checkpoint_keys.verifiers,
                    origin=checkpoint_keys.origin,
                    witness=witness,
                    schedule=schedule,
                    progress=self._progress,
                )
            report = rnd.report
            brk = report.first_break
            code = witness_exit_code(report.witness) if brk is None else break_exit_code(brk.kind)
            result = RESULT_OF_EXIT.get(code, "unchecked")
            saved = None
            if result != "unchecked":
                saved = state_after(state, rnd, now=time.time())
                save_state(self.state_path, saved)
        except Stopped:
            log.info("round %d (%s) abandoned: stopping", self.count, mode)
            return None
        except Exception as exc:  # the round's boundary: report, and try again next round
            self._unchecked(mode, exc, time.monotonic() - started)
            return ExitCode.UNCHECKED
        self._checked(rnd, result, code, saved.verified.seq if saved and result == "intact" else None)
        self._record(rnd, result)
        return code

    def _record(self, rnd: RoundReport, result: str) -> None:
        """The round's result in ``verify_results`` (the viewer's banner); a failure is logged."""
        report, brk = rnd.report, rnd.report.first_break
        try:
            with self.app.store() as store:
                record_verify_result(
                    store,
                    tool="monitor",
                    mode=rnd.mode,
                    status=result,
                    entries=rnd.walked,
                    head_seq=report.head.get("seq"),
                    break_seq=brk.seq if brk is not None else None,
                    break_kind=brk.kind if brk is not None else None,
                    detail=brk.detail if brk is not None else None,
                )
        except AuditError as exc:
            log.warning(
                "could not record round %d's result: %s", self.count, scrub(str(exc), *self.app.secrets())
            )

    def _checked(self, rnd: RoundReport, result: str, code: ExitCode, verified_seq: int | None) -> None:
        report = rnd.report
        brk = report.first_break
        witness_status = report.witness["status"] if report.witness else None
        accepted = rnd.checkpoints.accept
        self.metrics.observe(
            mode=rnd.mode,
            result=result,
            seconds=report.seconds,
            walked=rnd.walked,
            first_break_seq=brk.seq if brk is not None else 0,
            witness_status=witness_status,
            verified_seq=verified_seq,
            checkpoint_size=(rnd.checkpoints.newest_size or 0) if accepted and result == "intact" else None,
        )
        summary = (
            f"{rnd.mode} round {self.count}: walked {rnd.walked} entries from seq {rnd.from_seq} "
            f"in {report.seconds:.2f} s; head seq {report.head['seq']}"
        )
        if result == "tampered":
            assert brk is not None
            log.error("TAMPERED: first break at seq %d: %s: %s (%s)", brk.seq, brk.kind, brk.detail, summary)
        elif result == "unchecked":
            why = (
                f"{brk.kind} at seq {brk.seq}: {brk.detail}"
                if brk is not None
                else f"witness {witness_status}: {report.witness['detail'] if report.witness else ''}"
            )
            log.warning("could not check: %s (%s)", why, summary)
        else:
            log.info("intact: %s", summary)
        if self.as_json:
            emit_json(
                {"round": self.count, "at": datetime.now(UTC), "result": result, "exit_code": int(code)}
                | rnd.as_dict()
            )
            return
        if brk is not None and result == "tampered":
            line = f"TAMPERED: first break at seq {brk.seq}: {brk.kind}: {brk.detail}"
        elif result == "unchecked":
            line = "could not check: " + (
                f"{brk.kind} at seq {brk.seq}: {brk.detail}"
                if brk is not None
                else f"witness {witness_status}: {report.witness['detail'] if report.witness else ''}"
            )
        else:
            line = f"intact: {report.entries} entries"
        witness = f"; witness: {witness_status}" if witness_status else ""
        click.echo(f"{line} ({summary}; checkpoints: {rnd.checkpoints.status}{witness})")

    def _unchecked(self, mode: str, exc: BaseException, seconds: float) -> None:
        if isinstance(exc, AuditError):
            reason = str(exc)
        else:
            reason = f"unexpected error: {type(exc).__name__}: {exc}"
            if self.app.debug:
                log.exception("round %d failed", self.count)
        reason = " ".join(scrub(reason, *self.app.secrets()).split())
        log.warning("round %d (%s) could not check: %s; retrying next round", self.count, mode, reason)
        self.metrics.observe(
            mode=mode,
            result="unchecked",
            seconds=seconds,
            store_problem=reason if isinstance(exc, StoreUnavailable) else None,
        )
        document: dict[str, Any] = {
            "round": self.count,
            "at": datetime.now(UTC),
            "result": "unchecked",
            "exit_code": int(ExitCode.UNCHECKED),
            "mode": mode,
            "error": reason,
        }
        if self.as_json:
            emit_json(document)
        else:
            click.echo(f"could not check ({mode} round {self.count}): {reason}")


@click.command()
@click.option(
    "--every",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Start a round this often (e.g. 30s, 5m, 1h).",
)
@click.option(
    "--full-every",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="Walk the whole ledger when the last intact full round is this old (0s: every round); "
    "other rounds walk only the new entries.",
)
@metrics_address_option()
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Where rounds keep the last verified entry and accepted checkpoint [default: {STATE_FILE} "
    "in the state folder].",
)
@click.option("--once", is_flag=True, help="Run one round and exit 0 intact, 1 tampered, 2 could not check.")
@click.option("--no-witness", is_flag=True, help="Do not read the witnessed checkpoints.")
@json_option("Print one JSON object per round.")
@pass_app
def monitor(
    app: App,
    every: str,
    full_every: str,
    metrics_address: str | None,
    state: Path | None,
    once: bool,
    no_witness: bool,
    as_json: bool,
) -> None:
    """Verify the ledger every --every: incremental rounds, a full one every --full-every."""
    code: ExitCode | None = ExitCode.OK
    with app.guard(), ExitStack() as cleanup:
        interval = parse_duration(every).total_seconds()
        full_after = parse_duration(full_every).total_seconds()
        if interval <= 0:
            app.fail("--every must be longer than 0s")
        stop = threading.Event()
        metrics = MonitorMetrics()
        if metrics_address:
            server = MetricsServer(address=metrics_address, registry=metrics.registry, ready=metrics.ready)
            server.start()
            cleanup.callback(server.close)

        def request_stop(signum: int, _frame: Any) -> None:
            stop.set()
            for again in (signal.SIGTERM, signal.SIGINT):
                signal.signal(again, signal.SIG_DFL)  # a second signal ends the process at once

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, request_stop)
        rounds = _Rounds(
            app,
            state_path=state or app.settings.state_dir / STATE_FILE,
            full_every=full_after,
            witness=not no_witness,
            as_json=as_json,
            metrics=metrics,
            stop=stop,
        )
        if once:
            code = rounds.run()
        else:
            role_checked = False
            while not stop.is_set():
                started = time.monotonic()
                role_checked = role_checked or _check_role(app)
                rounds.run()
                stop.wait(max(interval - (time.monotonic() - started), 0.0))
            log.info("stopped after %d rounds", rounds.count)
    if once:
        if code is None:
            app.fail("interrupted")
        sys.exit(code)


def _check_role(app: App) -> bool:
    """The start check of the role (refuses in production as an owner); False while the
    database cannot be reached (the round reports that, and the next round checks again)."""
    try:
        with app.store() as probe:
            require_least_privilege(
                probe,
                process="monitor",
                production=app.settings.production,
                allow_owner=app.settings.allow_owner_role,
            )
    except StoreUnavailable:
        return False
    return True


COMMANDS = (monitor,)
