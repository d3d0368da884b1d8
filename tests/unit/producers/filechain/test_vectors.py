"""The committed file chain vectors are what the generator builds, and each case verifies
as it says (CHAIN.md §20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baldur_audit.consumers.verification.file_chain import verify_file_chain
from baldur_audit.schemas.chain import SigningKey
from tests.vectors import filechain

VECTORS = Path(__file__).resolve().parents[4] / "schemas" / "vectors" / "filechain-v1.json"
COMMITTED = json.loads(VECTORS.read_text(encoding="utf-8"))


def test_committed_vectors_are_the_generators_output() -> None:
    assert COMMITTED == json.loads(json.dumps(filechain.build()))


@pytest.mark.parametrize("case", COMMITTED["cases"], ids=lambda case: case["name"][:20])
def test_each_case_verifies_as_it_says(case: dict[str, object], tmp_path: Path) -> None:
    (tmp_path / COMMITTED["segment_name"]).write_bytes(bytes.fromhex(str(case["segment_hex"])))
    key = SigningKey.derive(bytes.fromhex(COMMITTED["key_hex"]))
    assert key.key_id == COMMITTED["key_id"]
    report = verify_file_chain(tmp_path, {key.key_id: key})
    expect = case["expect"]
    assert isinstance(expect, dict)
    assert report.intact is expect["intact"]
    if report.intact:
        assert report.report.entries == expect["entries"]
        assert report.report.head["seq"] == expect["head_seq"] and report.torn_bytes == expect["torn_bytes"]
    else:
        brk = report.report.first_break
        assert brk is not None and (brk.seq, brk.kind) == (expect["break_seq"], expect["break_kind"])
