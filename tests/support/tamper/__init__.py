"""The randomized tamper matrix: a catalogue of the changes a database superuser
can make to a sealed ledger, and a runner that applies one seeded change to a copy of a base
ledger and asks ``verify`` and ``replay`` whether they see it and where.

One base ledger per run (``base.py``: a fresh topic and database, ~300 records:
events with varied values, duplicates, rejected records, transactional batches that leave
offset gaps, an aborted transaction), sealed by the real chainer. Each trial copies its
database (``CREATE DATABASE … TEMPLATE``), tampers with the copy as the superuser with the
append-only triggers bypassed (``columns.py``, ``catalogue.py``), runs
verify and replay in-process with the same functions, keys and evidence the CLI uses (the
topic and the chainer group's committed offset are shared and unchanged), and drops the copy.
Trial ``i`` of seed ``s`` draws from ``random.Random(f"{s}:{i}:{class}")``, and the base
ledger's content from ``s``: a trial is reproduced by its seed and index alone.

Every tamper computes the *first affected seq* itself, and names the tools that must
locate it exactly (``Damage.seen_by``). A change that leaves the stored data as it was, or
that no entry's meaning depends on, is *benign*: both tools must then stay quiet.

What each tool can see, as this catalogue expects it:

* ``verify`` (the database and the key): any change to an entry's covered fields, its
  payload or digest, its visible columns, its seq or key id, deleted, inserted or swapped
  rows, a head that is not the last entry, a stored schema that is not its fingerprint,
  and an edited ledger identity. It cannot see a tail deleted together with the head
  rolled back to match, nor a suffix resealed by someone holding the key: both leave a
  valid chain.
* ``replay`` (the topic, the key, and the chainer group's committed offset): every entry
  that differs from what the topic's records seal to, a missing or extra entry, and a
  truncated tail (with or without the head rolled back), including the key holder's
  rewrite. It does not read the head row, the stored writer schemas, or the stored
  genesis link, key id and partition, so damage confined to those is verify's alone; and
  a deleted tail is *truncated* to it only while the group's committed offset is beyond
  the ledger (or the missing records are older than ``--max-lag``).
* ``replay --classify-all`` (every record decoded again, as the chainer did) sees all that
  replay sees and one rewrite more: a key holder's change of an entry's visible columns over
  its unchanged payload, resealed from there with the key (``tamper_reseal_visible``).
  Default replay is digest first and takes a record whose bytes, position and rebuilt link
  match as the entry shows it. That case is outside the random catalogue (the matrix runs
  default replay); tests/integration/test_replay_gaps.py checks both modes.
* The known gaps (``KNOWN_GAPS`` in ``base.py``, each pinned by a strict-xfail
  regression test): verify does not see a reworded reject reason (replay does), neither
  sees a prefix pruned by hand (content hidden, never changed), and default replay (like
  verify) does not see visible columns resealed over unchanged payloads (``--classify-all``
  does).

Usable from a script (``python -m tests.campaigns.tamper_matrix``) as well as from pytest.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from baldur_audit.consumers.cli.app import App
from baldur_audit.consumers.kafka.source import KafkaTopicReader
from baldur_audit.consumers.settings import Settings
from baldur_audit.consumers.verification.epochs import with_epoch_check
from baldur_audit.consumers.verification.replay import replay_compare
from baldur_audit.consumers.verification.verify import verify_ledger
from baldur_audit.schemas.errors import AuditError
from tests.support.stack import with_dbname
from tests.support.tamper.base import (
    BOTH,
    KNOWN_GAPS,
    NOBODY,
    REPLAY,
    TOOLS,
    VERIFY,
    BaseLedger,
    Damage,
    Tampering,
    base_ledger,
)
from tests.support.tamper.catalogue import CATALOGUE, CLASSES, TamperClass

__all__ = ["CATALOGUE", "CLASSES", "BaseLedger", "base_ledger", "run_trials", "summarize", "render_table"]

TRIALS_ENV = "BALDUR_TAMPER_TRIALS"
SEED_ENV = "BALDUR_TAMPER_SEED"
QUICK_TRIALS = 40
MAX_LAG_SECONDS = 300.0  # the CLI's default --max-lag
COPIES_AHEAD = 2  # trial copies made in the background ahead of the running trial


def trials_from_env(default: int = QUICK_TRIALS) -> int:
    """How many trials to run: ``BALDUR_TAMPER_TRIALS`` (``make faults`` sets 250)."""
    return int(os.environ.get(TRIALS_ENV, default))


def seed_from_env(default: int = 1) -> int:
    """The run's seed: ``BALDUR_TAMPER_SEED`` (the base ledger and every trial derive from it)."""
    return int(os.environ.get(SEED_ENV, default))


# -- running trials -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """What one tool said about one trial."""

    status: str  # intact | broken | error (could not check) | crash (unexpected exception)
    seq: int | None = None
    kind: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return {"status": self.status, "seq": self.seq, "kind": self.kind, "detail": self.detail}


def cli_app(base: BaseLedger, dsn: str) -> App:
    """The app ``baldur-audit`` builds for this ledger, at the copy's DSN, with the test
    key preset (this process's environment does not carry the ledger's key)."""
    led = base.ledger
    settings = Settings.from_env(
        os.environ, bootstrap=led.bootstrap, topic=led.topic, dsn=dsn, group=led.env["BALDUR_CHAINER_GROUP"]
    )
    return App(settings=settings, debug=False, _key=base.key)


def run_verify(dsn: str, base: BaseLedger) -> Finding:
    """``baldur-audit verify`` in-process: the CLI's keys and epoch check around the same
    ``verify_ledger``. No checkpoint is ever witnessed for the base ledger, so the CLI's
    witness check would report "none" and is left out: this is the chain walk alone."""
    try:
        app = cli_app(base, dsn)
        keys, schedule = app.verification_keys()
        with app.store() as store:
            report = verify_ledger(store, keys)
        if schedule is not None:
            with app.store() as store:
                report = with_epoch_check(store, report, schedule)
    except AuditError as exc:
        return Finding("error", detail=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a crash is a defect: recorded, never hidden
        return Finding("crash", detail=f"{type(exc).__name__}: {exc}")
    brk = report.first_break
    if brk is None:
        return Finding("intact")
    return Finding("broken", brk.seq, brk.kind, brk.detail)


def replay_report(dsn: str, base: BaseLedger, *, classify_all: bool = False) -> Any:
    """``baldur-audit replay`` in-process: the CLI's reader, keys (ring and per-entry key
    schedule), committed-offset evidence and default --max-lag around ``replay_compare``
    (digest first, or ``--classify-all``); its report, or the AuditError it raised."""
    led = base.ledger
    group = led.env["BALDUR_CHAINER_GROUP"]

    def committed() -> int | None:
        try:
            return base.admin.group_state(group, led.topic)["committed_offset"]
        except AuditError:
            return None

    app = cli_app(base, dsn)
    reader = KafkaTopicReader(bootstrap=led.bootstrap, topic=led.topic)
    try:
        with app.store() as store:
            return replay_compare(
                store,
                reader,
                app.keyring().current,
                committed_offset=committed,
                **app.replay_keys(store),
                max_lag_seconds=MAX_LAG_SECONDS,
                classify_all=classify_all,
            )
    finally:
        reader.close()


def run_replay(dsn: str, base: BaseLedger, *, classify_all: bool = False) -> Finding:
    """:func:`replay_report` as a finding (a crash is recorded, never hidden)."""
    try:
        report = replay_report(dsn, base, classify_all=classify_all)
    except AuditError as exc:
        return Finding("error", detail=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a crash is a defect: recorded, never hidden
        return Finding("crash", detail=f"{type(exc).__name__}: {exc}")
    div = report.first_divergence
    if div is None:
        return Finding("intact")
    return Finding("broken", div.seq, div.kind, div.detail)


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One trial: the tamper, what it damaged, and what each tool said."""

    index: int
    seed: int
    tamper: str
    damage: Damage
    findings: dict[str, Finding]
    seconds: float

    def detected(self, tool: str) -> bool:
        """The tool did not report intact."""
        return self.findings[tool].status != "intact"

    def located(self, tool: str) -> bool:
        """The tool named exactly the first affected seq."""
        found = self.findings[tool]
        return found.status == "broken" and found.seq == self.damage.first_seq

    def problems(self) -> list[str]:
        """Every way this trial falls short of the catalogue's expectation (empty: as expected)."""
        damage, found = self.damage, self.findings
        issues = [f"{tool} crashed: {found[tool].detail}" for tool in TOOLS if found[tool].status == "crash"]
        if damage.first_seq is None:
            issues += [
                f"{tool} reported benign change: {found[tool]}"
                for tool in TOOLS
                if found[tool].status != "intact"
            ]
            return issues
        # A known gap (pinned by its own regression test) excuses the tools that miss it.
        missed = damage.gap.missed_by if damage.gap is not None else NOBODY
        if not any(self.detected(tool) for tool in TOOLS) and missed != BOTH:
            issues.append("undetected by both verify and replay")
        expected = [tool for tool in sorted(damage.seen_by) if tool not in missed]
        if damage.exact:
            issues += [
                f"{tool} did not locate seq {damage.first_seq}: {found[tool]}"
                for tool in expected
                if not self.located(tool)
            ]
        else:
            issues += [
                f"{tool} vouched for the ledger: {found[tool]}"
                for tool in expected
                if not self.detected(tool)
            ]
        issues += [
            f"{tool} located the wrong seq (expected {damage.first_seq}): {found[tool]}"
            for tool in sorted(damage.seen_by)
            if tool in missed and found[tool].status == "broken" and not self.located(tool)
        ]
        issues += [
            f"{tool} located the wrong seq (expected {damage.first_seq}): {found[tool]}"
            for tool in TOOLS
            if tool not in damage.seen_by and found[tool].status == "broken" and not self.located(tool)
        ]
        return issues

    def reproducer(self) -> str:
        """How to run this trial again."""
        return (
            f"python -m tests.campaigns.tamper_matrix --seed {self.seed} --only {self.tamper} "
            f"--index {self.index}"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return {
            "index": self.index,
            "seed": self.seed,
            "tamper": self.tamper,
            "variant": self.damage.variant,
            "what": self.damage.what,
            "first_seq": self.damage.first_seq,
            "seen_by": sorted(self.damage.seen_by),
            **{tool: self.findings[tool].as_dict() for tool in TOOLS},
            "problems": self.problems(),
            "seconds": round(self.seconds, 3),
        }


def trial_plan(trials: int, *, only: Sequence[str] = ()) -> list[tuple[int, TamperClass]]:
    """Trial indexes and their classes: round robin over the catalogue (or ``only``), so
    every class is covered once the run has as many trials as there are classes."""
    classes = [CLASSES[name] for name in only] if only else list(CATALOGUE)
    return [(index, classes[index % len(classes)]) for index in range(trials)]


def trial_rng(seed: int, index: int, tamper: str) -> random.Random:
    """The trial's own random source: a pure function of the run seed, index and class."""
    return random.Random(f"{seed}:{index}:{tamper}")


def create_copy(base: BaseLedger, index: int) -> str:
    """A copy of the base database for trial ``index`` (``CREATE DATABASE … TEMPLATE``:
    nothing may be connected to the base meanwhile); returns its name."""
    name = f"{base.ledger.dbname}_t{index}"
    with psycopg.connect(with_dbname(base.ledger.admin_dsn, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(base.ledger.dbname)
            )
        )
    return name


def drop_copy(base: BaseLedger, name: str) -> None:
    """Drop a trial's copy (connections still open to it are ended)."""
    with psycopg.connect(with_dbname(base.ledger.admin_dsn, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def apply_tamper(base: BaseLedger, dbname: str, tamper: TamperClass, rng: random.Random) -> Damage:
    """Apply one tamper to database ``dbname`` in one transaction, as the superuser with the
    append-only triggers off (then any follow-up as the application role). A change the
    database's constraints refuse is rolled back and reported as benign (the constraint is
    the defence)."""
    led = base.ledger
    with psycopg.connect(with_dbname(led.admin_dsn, dbname), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        tampering = Tampering(base, conn, rng)
        try:
            with conn.transaction():
                damage = tamper.apply(tampering)
        except psycopg.errors.IntegrityError as exc:
            return Damage("refused", f"refused by the database: {type(exc).__name__}", None, NOBODY)
    for follow_up in tampering.follow_ups:
        follow_up(with_dbname(led.dsn, dbname))
    gap = KNOWN_GAPS.get(damage.variant)
    return damage if gap is None or damage.first_seq is None else dataclasses.replace(damage, gap=gap)


def run_on_copy(base: BaseLedger, dbname: str, index: int, tamper: TamperClass, *, seed: int) -> TrialResult:
    """Tamper with the copy ``dbname``, then run verify and replay on it."""
    started = time.monotonic()
    damage = apply_tamper(base, dbname, tamper, trial_rng(seed, index, tamper.name))
    dsn = with_dbname(base.ledger.dsn, dbname)
    # Both only read the copy: replay (which mostly waits on Kafka) runs beside verify.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tamper-replay") as side:
        replayed = side.submit(run_replay, dsn, base)
        findings = {VERIFY: run_verify(dsn, base)}
        findings[REPLAY] = replayed.result()
    return TrialResult(
        index=index,
        seed=seed,
        tamper=tamper.name,
        damage=damage,
        findings=findings,
        seconds=time.monotonic() - started,
    )


def run_trial(base: BaseLedger, index: int, tamper: TamperClass, *, seed: int) -> TrialResult:
    """One trial on its own: copy, tamper, verify and replay, drop the copy."""
    dbname = create_copy(base, index)
    try:
        return run_on_copy(base, dbname, index, tamper, seed=seed)
    finally:
        drop_copy(base, dbname)


def run_trials(
    base: BaseLedger,
    trials: int,
    *,
    seed: int,
    only: Sequence[str] = (),
    indexes: Sequence[int] = (),
    progress: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run the planned trials (or just ``indexes`` of the plan) in order. The next trial's
    copy is made, and the last one's dropped, in the background while a trial runs."""
    plan = [
        (index, tamper) for index, tamper in trial_plan(trials, only=only) if not indexes or index in indexes
    ]
    results: list[TrialResult] = []
    drops: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="tamper-copy") as pool:
        upcoming = deque(pool.submit(create_copy, base, index) for index, _ in plan[:COPIES_AHEAD])
        for position, (index, tamper) in enumerate(plan):
            dbname = upcoming.popleft().result()
            if position + COPIES_AHEAD < len(plan):
                upcoming.append(pool.submit(create_copy, base, plan[position + COPIES_AHEAD][0]))
            try:
                result = run_on_copy(base, dbname, index, tamper, seed=seed)
            finally:
                drops.append(pool.submit(drop_copy, base, dbname))
            results.append(result)
            if progress is not None:
                progress(result)
    for dropped in drops:
        dropped.result()  # surface a failed drop
    return results


# -- the table ------------------------------------------------------------------------------


def summarize(results: Sequence[TrialResult]) -> list[dict[str, Any]]:
    """Per tamper class: trials, damaging ones, and how often each tool detected/located them."""
    rows = []
    for tamper in CATALOGUE:
        mine = [r for r in results if r.tamper == tamper.name]
        if not mine:
            continue
        damaging = [r for r in mine if r.damage.first_seq is not None]
        row: dict[str, Any] = {
            "tamper": tamper.name,
            "trials": len(mine),
            "damaging": len(damaging),
            "benign": len(mine) - len(damaging),
        }
        for tool in TOOLS:
            row[f"{tool}_detected"] = sum(r.detected(tool) for r in damaging)
            row[f"{tool}_located"] = sum(r.located(tool) for r in damaging)
            row[f"{tool}_false_alarms"] = sum(r.detected(tool) for r in mine if r.damage.first_seq is None)
        row["quiet"] = sum(not any(map(r.detected, TOOLS)) for r in mine if r.damage.first_seq is None)
        row["known_gaps"] = sum(
            r.damage.gap is not None and not all(map(r.detected, r.damage.gap.missed_by)) for r in mine
        )
        row["unexpected"] = sum(bool(r.problems()) for r in mine)
        row["expected"] = tamper.expected
        rows.append(row)
    return rows


def render_table(summary: Sequence[dict[str, Any]]) -> str:
    """The per-class table as text: detected/located counts over the damaging trials."""
    columns = (
        "trials",
        "damaging",
        "verify_detected",
        "verify_located",
        "replay_detected",
        "replay_located",
        "benign",
        "quiet",
        "known_gaps",
        "unexpected",
    )
    titles = (
        "trials",
        "damage",
        "verify det",
        "verify loc",
        "replay det",
        "replay loc",
        "benign",
        "quiet",
        "known gap",
        "unexpected",
    )
    head = f"{'tamper class':<26}" + "".join(f"{title:>11}" for title in titles)
    lines = [head, "-" * len(head)]
    totals = dict.fromkeys(columns, 0)
    for row in summary:
        lines.append(f"{row['tamper']:<26}" + "".join(f"{row[c]:>11}" for c in columns))
        for column in columns:
            totals[column] += row[column]
    lines += ["-" * len(head), f"{'total':<26}" + "".join(f"{totals[c]:>11}" for c in columns)]
    return "\n".join(lines)
