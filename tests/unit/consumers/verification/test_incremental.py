"""The pure parts of incremental verification: the state file (round trip, a missing file, a
damaged one, one that cannot be written), which mode a round takes, the state a round leaves
(an intact round moves on, a tampered one keeps its place and forces a full round), a round's
JSON shape, and the forward-secure epoch rule applied entry by entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baldur_audit.consumers.verification.epochs import OffSchedule
from baldur_audit.consumers.verification.incremental import (
    FULL,
    INCREMENTAL,
    CheckpointStep,
    MonitorState,
    RoundReport,
    _epoch_rule,
    choose_mode,
    load_state,
    save_state,
    state_after,
)
from baldur_audit.consumers.verification.verify import Break, Resume, VerifyReport
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.keys import EpochSchedule

GENESIS = bytes(range(32))
LINK = bytes(range(1, 33))


def state(**changes: object) -> MonitorState:
    base = MonitorState(
        ledger_id="baldur-audit:t",
        genesis_link=GENESIS,
        verified=Resume(seq=40, offset=41, link=LINK),
        checkpoint="note\n",
        full_at=1000.0,
    )
    return MonitorState(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})  # type: ignore[arg-type]


def round_report(
    *, mode: str = INCREMENTAL, first_break: Break | None = None, accept: str | None = "new\n"
) -> RoundReport:
    report = VerifyReport(
        entries=50,
        head={
            "seq": 50,
            "offset": 52,
            "link": "ab" * 32,
            "epoch": 1,
            "ledger_id": "baldur-audit:t",
            "topic": "t",
        },
        first_break=first_break,
        seconds=0.5,
        kinds={"event": 10, "rejected": 0, "duplicate": 0},
    )
    step = CheckpointStep("proved", 30, 50, "ok", accept=accept)
    return RoundReport(
        mode=mode, report=report, walked=10, from_seq=41, checkpoints=step, leaves=10, genesis_link=GENESIS
    )


def test_the_state_file_round_trips_and_is_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "monitor.json"
    assert load_state(path) is None  # no file: no state (the first round is full)
    saved = state(open_break={"seq": 3, "kind": "modified", "detail": "x", "mode": FULL})
    save_state(path, saved)
    assert load_state(path) == saved
    assert json.loads(path.read_text())["format"] == "baldur-audit monitor state 1"
    assert [p.name for p in path.parent.iterdir()] == ["monitor.json"]  # no temporary file left


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        '{"format": "something else"}',
        '{"format": "baldur-audit monitor state 1"}',
        '{"format": "baldur-audit monitor state 1", "ledger_id": "x", "genesis_link": "zz", "verified": {}}',
    ],
)
def test_a_damaged_state_file_is_a_configuration_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "monitor.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="is not a monitor state.*remove it"):
        load_state(path)


def test_a_state_file_that_cannot_be_written_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="cannot write the state file"):
        save_state(tmp_path / "taken", state())
    with pytest.raises(ConfigError, match="cannot read the state file"):
        load_state(tmp_path / "taken")


def test_which_mode_a_round_takes() -> None:
    assert choose_mode(None, now=5000.0, full_every=3600) == FULL
    assert choose_mode(state(), now=1000.0 + 3599, full_every=3600) == INCREMENTAL
    assert choose_mode(state(), now=1000.0 + 3600, full_every=3600) == FULL
    assert choose_mode(state(), now=1000.0, full_every=0) == FULL  # --full-every 0s: always full
    assert choose_mode(state(full_at=None), now=1000.0, full_every=3600) == FULL
    assert choose_mode(state(open_break={"seq": 1}), now=1000.0, full_every=3600) == FULL


def test_an_intact_round_moves_the_state_to_the_head_and_accepts_the_newest_checkpoint() -> None:
    after = state_after(state(), round_report(), now=2000.0)
    assert after.verified == Resume(seq=50, offset=52, link=bytes.fromhex("ab" * 32))
    assert after.checkpoint == "new\n" and after.open_break is None
    assert after.full_at == 1000.0  # an incremental round is not a full one
    full = state_after(state(), round_report(mode=FULL, accept=None), now=2000.0)
    assert full.full_at == 2000.0 and full.checkpoint == "note\n"  # no newer checkpoint: keep it
    first = state_after(None, round_report(mode=FULL), now=3.0)
    assert (first.ledger_id, first.genesis_link, first.full_at) == ("baldur-audit:t", GENESIS, 3.0)


def test_a_tampered_round_keeps_the_verified_position_and_records_its_break() -> None:
    brk = Break(seq=44, kind="modified", detail="column actor differs")
    after = state_after(state(), round_report(first_break=brk), now=2000.0)
    assert after.verified == state().verified and after.checkpoint == "note\n"
    assert after.open_break == {
        "seq": 44,
        "kind": "modified",
        "detail": "column actor differs",
        "mode": INCREMENTAL,
    }
    assert choose_mode(after, now=1001.0, full_every=3600) == FULL
    first = state_after(None, round_report(mode=FULL, first_break=brk), now=3.0)
    assert first.verified == Resume(seq=0, offset=-1, link=GENESIS) and first.open_break is not None


def test_a_round_has_verify_shape_plus_its_mode_and_what_it_walked() -> None:
    shape = round_report().as_dict()
    verify_keys = set(round_report().report.as_dict())
    assert verify_keys <= set(shape)
    assert shape["mode"] == INCREMENTAL and shape["walked"] == 10 and shape["from_seq"] == 41
    assert shape["entries_per_second"] == 20.0  # the entries walked, not the ledger's size
    assert shape["checkpoints"] == {
        "status": "proved",
        "accepted_size": 30,
        "newest_size": 50,
        "detail": "ok",
    }
    assert shape["leaves_checked"] == 10 and "genesis_link" not in shape


def test_the_epoch_rule_entry_by_entry() -> None:
    schedule = EpochSchedule(SigningKey.derive(b"k" * 32), epoch_entries=2)
    rule = _epoch_rule(schedule)

    def row(seq: int, key_id: str) -> tuple[object, ...]:
        return (
            seq,
            seq,
            "event",
            0,
            False,
            b"",
            b"",
            key_id,
            b"",
            b"",
            0,
            False,
            False,
            b"",
            False,
            False,
            None,
        )

    rule(row(1, schedule.expected_key_id(1)))  # type: ignore[arg-type]
    rule(row(4, schedule.expected_key_id(3)))  # type: ignore[arg-type]  # 3 and 4: epoch 1
    with pytest.raises(OffSchedule) as raised:
        rule(row(3, schedule.expected_key_id(5)))  # type: ignore[arg-type]  # a later epoch's key
    assert raised.value.seq == 3 and raised.value.kind == "modified" and "epoch 1" in raised.value.detail
