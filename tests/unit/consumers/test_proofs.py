"""Evidence bundles checked offline (consumers/evidence/): valid bundles of every entry kind,
every single flipped byte refused, fields that are not what the payload says, key rotation and
unknown keys; plus the checkpoint keys, the directory witness and the checkpointer's guard.
No services: the ledger is sealed in memory with the real Sealer and Merkle code."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.consumers.checkpoint_keys import load_checkpoint_keys, read_verifier_keys
from baldur_audit.consumers.checkpointer import Checkpointer
from baldur_audit.consumers.cli.checks import witness_exit_code
from baldur_audit.consumers.evidence.bundle import (
    BundleInvalid,
    consistency_bundle,
    entry_document,
    entry_leaf,
    fields_view_body,
    inclusion_bundle,
    render,
)
from baldur_audit.consumers.evidence.check import check_bundle
from baldur_audit.consumers.settings import CHECKPOINT_KEY_ENV, ORIGIN_ENV, PUBLIC_KEYS_ENV, Settings
from baldur_audit.consumers.witnesses import DirectoryWitness
from baldur_audit.schemas.chain import ChainHead, SealedEntry, Sealer, SigningKey, TopicRecord, genesis_link
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    UnverifiableCheckpoint,
    checkpoint_time,
    sign_checkpoint,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.merkle import (
    MerkleFrontier,
    consistency_proof,
    entry_leaf_hash,
    inclusion_proof,
    nodes_of,
)
from baldur_audit.schemas.view import entry_view, view_digest
from tests.support.stack import make_event

ORIGIN = "baldur-audit/baldur-audit:unit"
TOPIC = "baldur.unit"
KEY = SigningKey.derive(b"unit-test hmac key, 32 bytes long!")
SIGNER = CheckpointSigner.from_seed(ORIGIN, hashlib.sha256(b"unit checkpoint key 1").digest())
OTHER = CheckpointSigner.from_seed(ORIGIN, hashlib.sha256(b"unit checkpoint key 2").digest())


def checkpoint_keys(*, signing: bool, environ: dict[str, str]) -> Any:
    """The checkpoint keys of the settings that ``environ`` gives, for the origin ORIGIN."""
    return load_checkpoint_keys(Settings(environ={ORIGIN_ENV: ORIGIN, **environ}), signing=signing)


WHEN = datetime(2026, 11, 29, 12, 0, 5, 250000, tzinfo=UTC)


class Ledger:
    """A small sealed ledger in memory: events, a rejected record, a null, a duplicate."""

    def __init__(self) -> None:
        first = encode_event(make_event(0))
        values = [
            first,
            *(encode_event(make_event(i)) for i in range(1, 6)),
            b"garbage",
            None,
            first,
            *(encode_event(make_event(i, actor="bob")) for i in range(6, 12)),
        ]
        head = ChainHead(0, -1, genesis_link(KEY, ledger_id="baldur-audit:unit", topic=TOPIC, partition=0))
        sealer = Sealer(key=KEY, head=head, schemas=KNOWN_SCHEMAS)
        records = [
            TopicRecord(TOPIC, 0, offset, 1_795_000_000_000 + offset, value)
            for offset, value in enumerate(values)
        ]
        self.entries: list[SealedEntry] = sealer.seal_batch(records, lambda ids: {})
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.roots: dict[int, bytes] = {}
        frontier = MerkleFrontier()
        for entry in self.entries:
            leaf = entry_leaf_hash(entry.link_input(), key_id=entry.key_id, link=entry.link)
            for level, index, digest in frontier.append(leaf):
                self.nodes[(level, index)] = digest
            self.roots[frontier.size] = frontier.root()

    def note(self, size: int, signers: list[CheckpointSigner] | None = None) -> str:
        checkpoint = Checkpoint(
            origin=ORIGIN,
            size=size,
            root_hash=self.roots[size],
            head_seq=size,
            head_link=self.entries[size - 1].link,
            timestamp=checkpoint_time(WHEN),
        )
        return sign_checkpoint(checkpoint, signers or [SIGNER])

    def bundle(
        self,
        seq: int,
        *,
        size: int | None = None,
        include_payload: bool = True,
        signers: list[CheckpointSigner] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        size = size or len(self.entries)
        entry = self.entries[seq - 1]
        document = entry_document(
            seq=entry.seq,
            topic=TOPIC,
            partition=0,
            offset=entry.record.offset,
            timestamp_ms=entry.record.timestamp_ms,
            kind=entry.kind.label,
            duplicate_of=entry.duplicate_of or 0,
            value_null=entry.record.value is None,
            digest=entry.digest,
            view=entry.view,
            key_id=entry.key_id,
            link=entry.link,
            payload=entry.record.value,
            include_payload=include_payload,
        )
        bundle = inclusion_bundle(
            document, self.note(size, signers), inclusion_proof(nodes_of(self.nodes), seq - 1, size), size
        )
        bundle["entry"].update(changes or {})  # after the leaf hash: what a tamperer would change
        return bundle


LEDGER = Ledger()


def check(bundle: dict[str, Any] | str | bytes, keys: list[CheckpointSigner] | None = None) -> dict[str, Any]:
    text = render(bundle) if isinstance(bundle, dict) else bundle
    return check_bundle(text, [signer.verifier() for signer in (keys or [SIGNER])]).as_dict()


# --- valid bundles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", range(1, len(LEDGER.entries) + 1))
def test_every_entry_of_every_kind_proves_with_and_without_its_payload(seq: int) -> None:
    entry = LEDGER.entries[seq - 1]
    for include in (True, False):
        report = check(LEDGER.bundle(seq, include_payload=include))
        assert report["valid"] is True and report["seq"] == seq
        assert report["entry_kind"] == entry.kind.label
        assert report["payload_checked"] is include
        assert report["checkpoint"]["size"] == len(LEDGER.entries)
        assert ("payload hashes to the sealed digest" in report["checks"]) is include
    assert {e.kind.label for e in LEDGER.entries} == {"event", "rejected", "duplicate"}


def test_an_entry_pruned_by_retention_proves_its_digests_only() -> None:
    entry = LEDGER.entries[2]
    document = entry_document(
        seq=3,
        topic=TOPIC,
        partition=0,
        offset=entry.record.offset,
        timestamp_ms=entry.record.timestamp_ms,
        kind="event",
        duplicate_of=0,
        value_null=False,
        digest=entry.digest,
        view=None,
        key_id=entry.key_id,
        link=entry.link,
        payload=None,
        include_payload=False,
        sealed_view_digest=hashlib.sha256(entry.view).digest(),
    )
    bundle = inclusion_bundle(document, LEDGER.note(15), inclusion_proof(nodes_of(LEDGER.nodes), 2, 15), 15)
    report = check(bundle)
    assert report["actor"] is None and "only the sealed digests are proven" in report["checks"][1]
    with pytest.raises(BundleInvalid, match="cannot include a payload"):
        check({**bundle, "entry": {**bundle["entry"], "payload_included": True}})
    forged = {**bundle, "entry": {**bundle["entry"], "view_digest": "00" * 32}}
    with pytest.raises(BundleInvalid, match="leaf_hash is not the hash of the entry"):
        check(forged)


def test_a_bundle_under_an_older_checkpoint_and_at_the_checkpoint_head() -> None:
    assert check(LEDGER.bundle(3, size=3))["checkpoint"]["size"] == 3
    assert check(LEDGER.bundle(5, size=9))["seq"] == 5


def test_key_rotation_either_key_verifies_and_an_unknown_key_cannot_tell() -> None:
    both = LEDGER.bundle(4, signers=[SIGNER, OTHER])
    assert check(both, [OTHER])["checkpoint"]["signed_by"] == [OTHER.verifier().label]
    assert check(both, [SIGNER])["valid"] is True
    stranger = CheckpointSigner.from_seed(ORIGIN, hashlib.sha256(b"stranger").digest())
    with pytest.raises(UnverifiableCheckpoint):
        check(LEDGER.bundle(4), [stranger])


# --- refused bundles ---------------------------------------------------------------------------------


def _flips(data: bytes, masks: tuple[int, ...]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for position in range(len(data)):
        for mask in masks:
            mutated = data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]
            with pytest.raises(BundleInvalid) as caught:
                check_bundle(mutated, [SIGNER.verifier()])
            reason = caught.value.detail.split(":")[0][:40]
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def test_every_flipped_byte_of_an_inclusion_bundle_is_refused() -> None:
    data = render(LEDGER.bundle(2)).encode("ascii")
    check_bundle(data, [SIGNER.verifier()])
    reasons = _flips(data, (0x01,))
    assert sum(reasons.values()) == len(data)
    # Not only the canonical-form check: flips are caught by the signature, the fields, the
    # payload digest and the proof too.
    assert len(reasons) >= 5, reasons


def test_random_byte_replacements_in_a_bundle_are_refused() -> None:
    data = render(LEDGER.bundle(9)).encode("ascii")
    rng = random.Random(5)
    for _ in range(400):
        position = rng.randrange(len(data))
        value = rng.choice([b for b in range(256) if b != data[position]])
        with pytest.raises((BundleInvalid, UnverifiableCheckpoint)):
            check_bundle(data[:position] + bytes([value]) + data[position + 1 :], [SIGNER.verifier()])


def test_every_flipped_byte_of_a_consistency_bundle_is_refused() -> None:
    bundle = consistency_bundle(
        LEDGER.note(5), LEDGER.note(14), consistency_proof(nodes_of(LEDGER.nodes), 5, 14)
    )
    report = check(bundle)
    assert (report["kind"], report["old"]["size"], report["new"]["size"]) == ("consistency", 5, 14)
    data = render(bundle).encode("ascii")
    assert sum(_flips(data, (0x01, 0x40)).values()) == 2 * len(data)


def test_a_consistency_bundle_backwards_or_across_ledgers_is_refused() -> None:
    backwards = consistency_bundle(LEDGER.note(14), LEDGER.note(5), [])
    with pytest.raises(BundleInvalid, match="old tree is larger"):
        check(backwards)
    other = CheckpointSigner.from_seed("baldur-audit/other", hashlib.sha256(b"o").digest())
    foreign = Checkpoint(
        origin="baldur-audit/other",
        size=14,
        root_hash=LEDGER.roots[14],
        head_seq=14,
        head_link=LEDGER.entries[13].link,
        timestamp=checkpoint_time(WHEN),
    )
    mixed = consistency_bundle(LEDGER.note(5), sign_checkpoint(foreign, [other]), [])
    with pytest.raises(BundleInvalid, match="two ledgers"):
        check(mixed, [SIGNER, other])


def _resealed(bundle: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The bundle with changed fields and a view digest and leaf hash recomputed to match:
    only the payload (and the signed root) can still tell."""
    entry = dict(bundle["entry"])
    entry["fields"] = {**entry["fields"], **fields}
    entry["view_digest"] = view_digest(
        entry_view(entry["kafka_timestamp_ms"], fields_view_body(entry["fields"]))
    ).hex()
    return {**bundle, "entry": entry}


def test_fields_that_are_not_the_payload_are_named_and_a_forged_leaf_is_not_included() -> None:
    forged = _resealed(LEDGER.bundle(3), actor="mallory")
    forged["leaf_hash"] = base64.b64encode(entry_leaf(forged["entry"])).decode("ascii")
    with pytest.raises(BundleInvalid, match=r"entry.fields.actor is not what the payload says"):
        check(forged)
    without_payload = {**forged, "entry": {**forged["entry"], "payload": None, "payload_included": False}}
    with pytest.raises(BundleInvalid, match="inclusion proof.*expected root"):
        check(without_payload)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fields": {}}, "entry.fields must hold exactly"),
        ({"fields": None}, "without fields \\(pruned\\) cannot include a payload"),
        ({"seq": True}, "entry.seq must be an integer"),
        ({"kind": ["event"]}, "entry.kind must be"),
        ({"duplicate_of": 1}, "duplicate_of must name an earlier entry"),
        ({"digest": "AB" * 32}, "entry.digest must be 64 lowercase hex"),
        ({"payload": base64.b64encode(b"other").decode()}, "payload does not hash to entry.digest"),
        ({"value_null": True}, "value_null disagrees"),
        ({"kafka_time": "2026-01-01T00:00:00.000Z"}, "kafka_time is not"),
        ({"key_id": "hk1-\ud800"}, "not valid Unicode"),
        ({"writer_schema": "{}"}, "writer_schema is not an Avro schema"),
    ],
)
def test_structural_and_consistency_errors_say_what_failed(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BundleInvalid, match=message):
        check(LEDGER.bundle(3, changes=change))


def test_reformatted_json_and_claimed_keys_are_refused() -> None:
    bundle = LEDGER.bundle(3)
    with pytest.raises(BundleInvalid, match="canonical form"):
        check(json.dumps(bundle))
    with pytest.raises(BundleInvalid, match="repeats the key"):
        check('{"format": 1, "format": 2}')
    claims = {**bundle, "checkpoint": {**bundle["checkpoint"], "key_ids": [OTHER.verifier().label]}}
    with pytest.raises(BundleInvalid, match="key_ids do not name the note's signatures"):
        check(claims, [OTHER])
    stripped = dict(bundle)
    stripped["checkpoint"] = {
        "note": bundle["checkpoint"]["note"].replace(
            bundle["checkpoint"]["note"].split("\n")[2], base64.b64encode(bytes(32)).decode()
        ),
        "key_ids": bundle["checkpoint"]["key_ids"],
    }
    with pytest.raises(BundleInvalid, match="invalid signature by known key"):
        check(stripped)


# --- keys, witnesses, the checkpointer's guard -----------------------------------------------


def test_checkpoint_keys_from_the_environment_never_echo_a_secret(tmp_path: Path) -> None:
    seed, zeros = "hex:" + "11" * 32, "base64:" + base64.b64encode(bytes(32)).decode()
    keys = checkpoint_keys(
        signing=True,
        environ={
            CHECKPOINT_KEY_ENV: f" {seed} , {zeros}",
            PUBLIC_KEYS_ENV: str(OTHER.verifier()),
            "BALDUR_STATE_DIR": str(tmp_path),
        },
    )
    assert len(keys.signers) == 2 and keys.verifiers[2] == OTHER.verifier()
    expected = CheckpointSigner.from_seed(ORIGIN, bytes.fromhex("11" * 32)).verifier()
    assert keys.signers[0].verifier() == expected
    for bad in ("hex:1234", "11" * 32, "base64:!!!!", "PRIVATE+KEY+x+00000000+AAAA"):
        with pytest.raises(ConfigError) as caught:
            checkpoint_keys(signing=True, environ={CHECKPOINT_KEY_ENV: bad})
        assert bad not in str(caught.value) and CHECKPOINT_KEY_ENV in str(caught.value)
    with pytest.raises(ConfigError, match="refusing to sign checkpoints in production"):
        checkpoint_keys(signing=True, environ={"BALDUR_ENV": "production"})
    assert checkpoint_keys(signing=False, environ={"BALDUR_ENV": "production"}).verifiers == ()


def test_the_development_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    environ = {"BALDUR_STATE_DIR": str(tmp_path)}
    assert checkpoint_keys(signing=False, environ=environ).signers == ()
    made = checkpoint_keys(signing=True, environ=environ)
    again = checkpoint_keys(signing=False, environ=environ)
    assert made.verifiers == again.verifiers and len(made.signers) == 1
    assert stat.S_IMODE(os.stat(tmp_path / "dev-checkpoint-key").st_mode) == 0o600


def test_verifier_key_files_allow_comments_and_name_the_bad_line() -> None:
    text = f"# keys\n{SIGNER.verifier()}\n\n{OTHER.verifier()}  # old\n"
    assert read_verifier_keys(text, "k.pub") == [SIGNER.verifier(), OTHER.verifier()]
    with pytest.raises(ConfigError, match="k.pub line 2"):
        read_verifier_keys(f"{SIGNER.verifier()}\nnot-a-key\n", "k.pub")
    with pytest.raises(ConfigError, match="holds no verifier key"):
        read_verifier_keys("# nothing\n", "k.pub")


def test_the_directory_witness_writes_each_size_once(tmp_path: Path) -> None:
    witness = DirectoryWitness(tmp_path / "notes")
    checkpoint = Checkpoint.parse(LEDGER.note(5).split("\n\n")[0] + "\n")
    first = witness.publish(checkpoint, LEDGER.note(5))
    assert first.endswith("5.note") and "kept the existing" in witness.publish(checkpoint, "other")
    (tmp_path / "notes" / "junk.note").write_text("x")
    assert witness.positions() == [5]
    assert witness.read(5) == LEDGER.note(5).encode()
    assert stat.S_IMODE(os.stat(tmp_path / "notes" / "5.note").st_mode) == 0o444
    (tmp_path / "a-file").write_text("x")  # a folder that cannot be made is an error, not a "kept"
    with pytest.raises(ConfigError, match="cannot write checkpoint"):
        DirectoryWitness(tmp_path / "a-file").publish(checkpoint, "note")
    assert witness_exit_code({"status": "mismatch"}) == 1
    assert witness_exit_code({"status": "unverifiable"}) == 2 and witness_exit_code(None) == 0


def test_a_failing_checkpoint_is_logged_retried_later_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    keys = checkpoint_keys(signing=False, environ={CHECKPOINT_KEY_ENV: "hex:" + "22" * 32})
    checkpointer = Checkpointer(
        dsn="postgresql://baldur:s3cret-pw@127.0.0.1:1/nowhere",
        keys=keys,
        chain_keys=None,
        witnesses=[],
        every=1,
        interval=0,
        clock=lambda: now[0],
    )
    checkpointer.after_batch(5)
    checkpointer.after_batch(6)  # within the retry delay: not even tried
    assert checkpointer.stats.failed == 1
    now[0] += 6
    checkpointer.after_batch(7)
    assert checkpointer.stats.failed == 2 and checkpointer.stats.made == 0
    assert "s3cret-pw" not in caplog.text and "checkpoint failed, retrying in" in caplog.text
    checkpointer.close()
    with pytest.raises(ConfigError, match="no checkpoint signing key"):
        Checkpointer(dsn="", keys=replace(keys, signers=()), chain_keys=None, witnesses=[])
