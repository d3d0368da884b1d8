"""Exports checked offline (consumers/evidence/export_check.py): valid exports in both formats of
every entry kind, pruned entries and ranges anywhere in the tree; every flipped byte of the
manifest and of the data file refused, each failure named on its own line; dropped, added and
reordered entries; edited but re-signed content; unknown keys; and the checker's imports.
No services: the ledger is sealed in memory with the real Sealer and Merkle code, and the export
is assembled with the same format functions the writer uses."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.consumers.evidence.bundle import entry_leaf, render
from baldur_audit.consumers.evidence.export_check import ExportUnreadable, check_export
from baldur_audit.consumers.evidence.export_format import (
    COLUMNS,
    CSV_HEADER,
    DATA_NAMES,
    ENCODERS,
    csv_cells,
    csv_line,
    entry_row,
    leaf_document,
    manifest_document,
    sign_manifest,
)
from baldur_audit.schemas.chain import ChainHead, SealedEntry, Sealer, SigningKey, TopicRecord, genesis_link
from baldur_audit.schemas.checkpoint import Checkpoint, CheckpointSigner, checkpoint_time, sign_checkpoint
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
from baldur_audit.schemas.event import Actor, ChangeEvent
from baldur_audit.schemas.merkle import MerkleFrontier, entry_leaf_hash, nodes_of, range_proof
from baldur_audit.schemas.view import view_digest
from tests.support.python import run_python
from tests.support.stack import make_event

ORIGIN = "baldur-audit/baldur-audit:unit"
TOPIC = "baldur.unit"
KEY = SigningKey.derive(b"unit-test hmac key, 32 bytes long!")
SIGNER = CheckpointSigner.from_seed(ORIGIN, hashlib.sha256(b"unit checkpoint key 1").digest())
STRANGER = CheckpointSigner.from_seed(ORIGIN, hashlib.sha256(b"someone else's key").digest())
WHEN = checkpoint_time(datetime(2026, 11, 29, 12, 0, 5, 250000, tzinfo=UTC))


def awkward_event() -> ChangeEvent:
    """Text that CSV must quote: commas, quotes, CR, LF and CRLF, non-ASCII, an empty reason."""
    base = make_event(40)
    return ChangeEvent(
        event_id=base.event_id,
        occurred_at=base.occurred_at,
        actor=Actor('o"brien, jr.', "user"),
        action="update",
        target="svc.\u00e9t\u00e9",
        source="api",
        before='{"note": "a,b\\n"}',
        after='{"lines": ["x", "y"]}',
        reason='first line\r\nsecond, "quoted"\nthird\rfourth',
        trace_id=None,
        client_ip=None,
        attributes={"k": "v,w"},
    )


class Ledger:
    """A sealed ledger in memory: events, a rejected record, a null, a duplicate, awkward text."""

    def __init__(self) -> None:
        first = encode_event(make_event(0))
        values: list[bytes | None] = [
            first,
            *(encode_event(make_event(i)) for i in range(1, 5)),
            b"garbage",
            None,
            first,
            encode_event(awkward_event()),
            *(encode_event(make_event(i, actor="bob")) for i in range(5, 12)),
        ]
        head = ChainHead(0, -1, genesis_link(KEY, ledger_id="baldur-audit:unit", topic=TOPIC, partition=0))
        sealer = Sealer(key=KEY, head=head, schemas=KNOWN_SCHEMAS)
        records = [
            TopicRecord(TOPIC, 0, offset, 1_795_000_000_000 + offset, value)
            for offset, value in enumerate(values)
        ]
        self.entries: list[SealedEntry] = sealer.seal_batch(records, lambda ids: {})
        nodes: dict[tuple[int, int], bytes] = {}
        frontier = MerkleFrontier()
        self.roots: dict[int, bytes] = {}
        for entry in self.entries:
            leaf = entry_leaf_hash(entry.link_input(), key_id=entry.key_id, link=entry.link)
            for level, index, digest in frontier.append(leaf):
                nodes[(level, index)] = digest
            self.roots[frontier.size] = frontier.root()
        self.nodes = nodes_of(nodes)

    def note(self, size: int) -> str:
        checkpoint = Checkpoint(
            origin=ORIGIN,
            size=size,
            root_hash=self.roots[size],
            head_seq=size,
            head_link=self.entries[size - 1].link,
            timestamp=WHEN,
        )
        return sign_checkpoint(checkpoint, [SIGNER])

    def row(self, seq: int, *, pruned: bool = False) -> dict[str, Any]:
        entry = self.entries[seq - 1]
        return entry_row(
            seq=seq,
            kind=entry.kind.label,
            duplicate_of=entry.duplicate_of or 0,
            offset=entry.record.offset,
            timestamp_ms=entry.record.timestamp_ms,
            view=None if pruned else entry.view,
            sealed_view_digest=view_digest(entry.view),
            value_null=entry.record.value is None,
            digest=entry.digest,
            key_id=entry.key_id,
            link=entry.link,
            payload=entry.record.value if entry.kind.label == "rejected" and not pruned else None,
        )

    def export(
        self,
        folder: Path,
        *,
        fmt: str = "ndjson",
        first: int = 1,
        last: int | None = None,
        size: int | None = None,
        pruned: int = 0,
        signers: list[CheckpointSigner] | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> Path:
        """Write an export of ``first..last`` under the checkpoint of ``size`` (entries up to
        seq ``pruned`` shown pruned), as ``write_export`` writes one."""
        size = size or len(self.entries)
        last = last or size
        rows = rows or [self.row(seq, pruned=seq <= pruned) for seq in range(first, last + 1)]
        data = (CSV_HEADER if fmt == "csv" else b"") + b"".join(map(ENCODERS[fmt], rows))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DATA_NAMES[fmt]).write_bytes(data)
        leaves = [entry_leaf(leaf_document(row, topic=TOPIC, partition=0)) for row in rows]
        kinds: dict[str, int] = {}
        for row in rows:
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        document = manifest_document(
            note=self.note(size),
            origin=ORIGIN,
            topic=TOPIC,
            partition=0,
            first_seq=first,
            files=[
                {
                    "name": DATA_NAMES[fmt],
                    "format": fmt,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "entries": len(rows),
                }
            ],
            leaves=leaves,
            proof=range_proof(self.nodes, first - 1, last, size),
            kinds=kinds,
            pruned=sum(row["pruned"] for row in rows),
            since=None,
            until=None,
            created_at="2026-11-29T12:00:06.000000Z",
        )
        (folder / "manifest.json").write_text(sign_manifest(document, signers or [SIGNER]), encoding="ascii")
        return folder


LEDGER = Ledger()
KEYS = [SIGNER.verifier()]


def check(folder: Path, keys: list[Any] | None = None) -> Any:
    return check_export(folder, KEYS if keys is None else keys)


def flipped(path: Path, position: int, mask: int = 0x01) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :])


# --- valid exports ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
@pytest.mark.parametrize(
    ("first", "last", "size"), [(1, 16, 16), (3, 9, 16), (9, 9, 12), (2, 15, 15), (16, 16, 16)]
)
def test_an_export_of_any_range_is_valid(tmp_path: Path, fmt: str, first: int, last: int, size: int) -> None:
    result = check(LEDGER.export(tmp_path / "x", fmt=fmt, first=first, last=last, size=size))
    assert result.status == "valid", result.lines()
    summary = result.as_dict()
    assert (summary["first_seq"], summary["last_seq"], summary["count"]) == (first, last, last - first + 1)
    assert summary["checkpoint"]["size"] == size and summary["checkpoint"]["signed_by"] == [
        SIGNER.verifier().label
    ]
    assert summary["manifest_signed_by"] == [SIGNER.verifier().label]


def test_every_kind_awkward_text_and_pruned_entries_round_trip(tmp_path: Path) -> None:
    kinds = {e.kind.label for e in LEDGER.entries}
    assert kinds == {"event", "rejected", "duplicate"}
    for fmt in ("ndjson", "csv"):
        result = check(LEDGER.export(tmp_path / fmt, fmt=fmt, pruned=3))
        assert result.status == "valid", result.lines()
        assert result.summary["pruned"] == 3
        assert result.summary["kinds"] == {"event": 13, "duplicate": 1, "rejected": 2, "schema": 0}
    csv_text = (tmp_path / "csv" / "entries.csv").read_bytes()
    assert b'"first line\r\nsecond, ""quoted""\nthird\rfourth"' in csv_text  # one record over lines
    lines = (tmp_path / "ndjson" / "entries.ndjson").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [list(row) for row in rows] == [list(COLUMNS)] * len(rows)
    assert rows[0]["pruned"] is True and rows[0]["actor"] is None and rows[3]["actor"] == "alice"
    rejected = rows[5]
    assert (rejected["kind"], rejected["payload"], rejected["actor"]) == ("rejected", "Z2FyYmFnZQ==", None)
    assert rows[6]["value_null"] is True and rows[6]["payload"] is None
    assert rows[7]["kind"] == "duplicate" and rows[7]["duplicate_of"] == 1
    assert rows[8]["before"] == '{"note": "a,b\\n"}'  # the JSON text verbatim, not parsed


def test_csv_tells_null_from_empty_text_and_refuses_other_spellings() -> None:
    assert csv_cells('1,"",,"a""b",true,-5') == [1, "", None, 'a"b', True, -5]
    assert csv_cells("01") is None and csv_cells("x") is None and csv_cells("TRUE") is None
    row = dict.fromkeys(COLUMNS)
    row.update(seq=1, reason="", actor=None, pruned=False)
    line = csv_line(row)
    assert csv_cells(line[:-2].decode()) == list(row.values())


# --- what is refused ------------------------------------------------------------------------------


def _flip_checks(folder: Path, name: str, positions: range | list[int]) -> dict[str, int]:
    """The failed checks over every flip of ``name`` at ``positions`` (each must be invalid)."""
    path = folder / name
    original = path.read_bytes()
    checks: dict[str, int] = {}
    try:
        for position in positions:
            path.write_bytes(
                original[:position] + bytes([original[position] ^ 0x01]) + original[position + 1 :]
            )
            result = check(folder)
            assert result.status == "invalid", (name, position, result.status, result.unverifiable)
            for failure in result.failures:
                checks[failure.check] = checks.get(failure.check, 0) + 1
    finally:
        path.write_bytes(original)
    return checks


def test_every_flipped_byte_of_the_manifest_is_refused(tmp_path: Path) -> None:
    folder = LEDGER.export(tmp_path / "x", first=5, last=6, size=12)
    assert check(folder).valid
    checks = _flip_checks(folder, "manifest.json", range((folder / "manifest.json").stat().st_size))
    # Not only the canonical spelling: the signature, the key ids, the proof, the leaves, the counts.
    assert {"manifest", "manifest signature", "checkpoint", "range proof", "leaf hash"} <= set(checks), checks


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_flipped_bytes_of_the_data_are_refused_and_named(tmp_path: Path, fmt: str) -> None:
    folder = LEDGER.export(tmp_path / "x", fmt=fmt, first=4, last=10, size=12)
    size = (folder / DATA_NAMES[fmt]).stat().st_size
    checks = _flip_checks(folder, DATA_NAMES[fmt], random.Random(fmt).sample(range(size), 250))
    assert checks["file digest"] == 250
    assert {"format", "view digest", "leaf hash", "entry"} <= set(checks), checks


def test_an_edited_field_is_named_by_seq_line_and_check(tmp_path: Path) -> None:
    folder = LEDGER.export(tmp_path / "x", first=2, last=12)
    data = (folder / "entries.ndjson").read_bytes()
    position = data.index(b'"bob"') + 2
    flipped(folder / "entries.ndjson", position)
    lines = check(folder).lines()
    assert (
        "entries.ndjson line 9 (seq 10): view digest: the visible columns do not hash to view_digest"
        in lines[0]
    )
    assert any(line.startswith("entries.ndjson: file digest: ") for line in lines), lines


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_dropped_added_and_reordered_entries_are_refused(tmp_path: Path, fmt: str) -> None:
    source = LEDGER.export(tmp_path / "source", fmt=fmt, first=1, last=8, size=16)
    name = DATA_NAMES[fmt]
    ending = b"\r\n" if fmt == "csv" else b"\n"
    text = (source / name).read_bytes()
    header, body = (CSV_HEADER, text[len(CSV_HEADER) :]) if fmt == "csv" else (b"", text)
    records = [record + ending for record in body.split(ending)[:-1]]
    assert len(records) == 8
    cases = {
        "dropped": records[:3] + records[4:],
        "added": records[:3] + [records[3], records[3]] + records[4:],
        "reordered": records[:3] + [records[4], records[3]] + records[5:],
        "one more at the end": [*records, records[-1]],
        "the last one dropped": records[:-1],
    }
    for case, changed in cases.items():
        target = tmp_path / case
        shutil.copytree(source, target)
        (target / name).write_bytes(header + b"".join(changed))
        result = check(target)
        assert result.status == "invalid", case
        found = {failure.check for failure in result.failures}
        assert "file digest" in found and found & {"order", "count", "leaf hash"}, (case, result.lines())
        if case != "the last one dropped":
            assert "order" in found, (case, result.lines())


def test_a_rewritten_export_signed_by_the_key_still_fails_its_checkpoint(tmp_path: Path) -> None:
    """Whoever holds the signing key can sign a manifest over changed entries, but their leaves
    do not lead to the root of the checkpoint: the range proof fails."""
    rows = [LEDGER.row(seq) for seq in range(1, 17)]
    rows[3]["digest"] = "00" * 32
    result = check(LEDGER.export(tmp_path / "x", rows=rows))
    assert result.status == "invalid"
    assert [failure.check for failure in result.failures] == ["range proof"], result.lines()
    rows = [LEDGER.row(seq) for seq in range(1, 17)]
    del rows[5]  # an entry left out of the range, everything re-signed
    result = check(LEDGER.export(tmp_path / "y", rows=rows, last=15))
    assert result.status == "invalid" and "range proof" in {f.check for f in result.failures}, result.lines()


def test_a_pruned_entry_after_an_unpruned_one_is_refused(tmp_path: Path) -> None:
    rows = [LEDGER.row(seq, pruned=seq == 5) for seq in range(1, 17)]
    result = check(LEDGER.export(tmp_path / "x", rows=rows))
    assert [str(f) for f in result.failures] == [
        "entries.ndjson line 5 (seq 5): pruned: pruned, after seq 1, which is not: retention prunes a prefix"
    ]


def test_unknown_keys_are_unverifiable_not_invalid(tmp_path: Path) -> None:
    folder = LEDGER.export(tmp_path / "x")
    result = check(folder, [STRANGER.verifier()])
    assert result.status == "unverifiable" and not result.failures
    assert len(result.unverifiable) == 2 and "no given key signed the manifest" in result.unverifiable[0]
    other = LEDGER.export(tmp_path / "y", signers=[STRANGER])
    result = check(other)
    assert result.status == "unverifiable" and result.unverifiable == (
        f"no given key signed the manifest (signatures by: {STRANGER.verifier().label})",
    )
    assert check(other, [SIGNER.verifier(), STRANGER.verifier()]).valid
    flipped(other / "entries.ndjson", 100)  # changed and unverifiable: invalid wins
    assert check(other).status == "invalid"


def test_extra_and_missing_files_and_an_unreadable_folder(tmp_path: Path) -> None:
    folder = LEDGER.export(tmp_path / "x")
    (folder / "notes.txt").write_text("hello")
    assert [str(f) for f in check(folder).failures] == [
        "notes.txt: file: the folder holds it but the manifest does not list it"
    ]
    os.remove(folder / "notes.txt")
    os.remove(folder / "entries.ndjson")
    lines = check(folder).lines()
    assert lines[0] == "entries.ndjson: file: the manifest lists it but the folder does not hold it", lines
    with pytest.raises(ExportUnreadable, match="holds no manifest.json"):
        check(tmp_path)
    with pytest.raises(ExportUnreadable, match="is not a folder"):
        check(tmp_path / "absent")


def test_a_reformatted_or_malformed_manifest_is_refused(tmp_path: Path) -> None:
    folder = LEDGER.export(tmp_path / "x")
    document = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(document))
    assert [f.check for f in check(folder).failures] == ["manifest"]
    (folder / "manifest.json").write_text(render({**document, "count": "16"}))
    assert "count must be an integer" in check(folder).lines()[0]
    (folder / "manifest.json").write_text("[]")
    assert check(folder).lines() == ["manifest.json: manifest: it is not a JSON object"]


def test_many_failures_are_capped_with_a_count(tmp_path: Path) -> None:
    rows = [LEDGER.row(seq) for seq in range(1, 17)]
    for row in rows:
        row["actor"] = "mallory" if row["actor"] else None
    result = check_export(LEDGER.export(tmp_path / "x", rows=rows), KEYS, max_failures=3)
    assert len(result.failures) == 3 and result.more_failures > 0
    assert result.lines()[-1] == f"… and {result.more_failures} more failures"


def test_random_byte_replacements_are_never_valid(tmp_path: Path) -> None:
    source = LEDGER.export(tmp_path / "source", fmt="csv")
    rng = random.Random(7)
    for _ in range(150):
        name = rng.choice(["manifest.json", "entries.csv"])
        data = (source / name).read_bytes()
        position = rng.randrange(len(data))
        value = rng.choice([b for b in range(256) if b != data[position]])
        target = tmp_path / "t"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        (target / name).write_bytes(data[:position] + bytes([value]) + data[position + 1 :])
        assert check(target).status in ("invalid", "unverifiable"), (name, position, value)


def test_the_offline_checker_loads_the_core_and_the_evidence_formats_only() -> None:
    code = """
        import json, sys
        import baldur_audit.consumers.evidence.export_check
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("baldur_audit.")
                                or m.split(".")[0] in ("psycopg", "confluent_kafka", "click"))))
    """
    loaded = json.loads(run_python(code))
    evidence = "baldur_audit.consumers.evidence"
    allowed = {
        "baldur_audit.consumers",
        evidence,
        f"{evidence}.bundle",
        f"{evidence}.export_format",
        f"{evidence}.export_check",
    }
    assert [m for m in loaded if m not in allowed and not m.startswith("baldur_audit.schemas")] == []
