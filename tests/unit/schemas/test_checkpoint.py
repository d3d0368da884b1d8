"""Signed checkpoints: the C2SP signed-note and tlog-checkpoint formats against published notes
and keys (golang.org/x/mod/sumdb/note, transparency-dev/formats, C2SP), the committed vectors,
an independent reading of CHAIN.md §15, and strict refusal of every malformed or altered note."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from baldur_audit.schemas.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    InvalidCheckpoint,
    UnverifiableCheckpoint,
    VerifierKey,
    checkpoint_time,
    default_origin,
    key_hash,
    load_seed,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
)
from baldur_audit.schemas.errors import AuditError, ConfigError
from baldur_audit.schemas.merkle import EMPTY_ROOT
from tests.vectors import checkpoint as checkpoint_vectors

VECTORS_PATH = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "checkpoint-v1.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
PROPS = settings(max_examples=40, deadline=None)

# --- published notes and keys -----------------------------------------------------------------
# golang/mod, sumdb/note/note_test.go @ 02c991387e35f9e4c0a9b7ce137717055f8d716d
# (TestNewVerifier, TestNewSigner, TestSign, TestOpen).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
)
# transparency-dev/formats, log/note_test.go @ 5242c17862d31acd165afafa140ecc973a621469
# (TestSumDBNoteParsing): a real checkpoint of sum.golang.org and its verifier key, whose
# base64 holds '+' characters.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    "\u2014 sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4n"
    "PRYfvimWEPWL+o3GeoWwOoAw=\n"
)
# C2SP/C2SP, tlog-checkpoint.md @ 2793893976c835db049c194d8f2c4f946dcb70ba: the example
# checkpoint (its public key is not published).
C2SP_NOTE = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN"
    "7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


def test_signer_reproduces_the_go_key_and_signature() -> None:
    signer = CheckpointSigner.from_note_key(PETER_SKEY)
    assert signer.verifier_key() == PETER_VKEY
    assert sign_note(GO_TEXT, [signer]) == GO_TEXT + "\n" + PETER_SIG  # TestSign's want
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    assert CheckpointSigner.from_seed("PeterNeumann", seed).verifier_key() == PETER_VKEY


def test_go_notes_open_like_sumdb_note() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    opened = open_note(note, [PETER_VKEY])
    assert (opened.text, opened.signers, opened.unknown) == (
        GO_TEXT,
        ("PeterNeumann",),
        ("EnochRoot+af0cfe78",),
    )
    assert open_note(note, [PETER_VKEY, ENOCH_VKEY]).signers == ("PeterNeumann", "EnochRoot")
    with pytest.raises(UnverifiableCheckpoint) as caught:
        open_note(note, [])
    assert caught.value.signatures == ("PeterNeumann+c74f20a3", "EnochRoot+af0cfe78")
    # repeated signatures by one key are counted once
    doubled = GO_TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG
    assert open_note(doubled, [PETER_VKEY]).signers == ("PeterNeumann",)


def test_go_bad_notes_are_refused() -> None:
    """TestOpen's invalid encodings, too many signatures and the corrupted signature."""
    with pytest.raises(InvalidCheckpoint, match="invalid signature by known key PeterNeumann"):
        open_note(GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [PETER_VKEY])
    with pytest.raises(InvalidCheckpoint, match="more than 100"):
        open_note(GO_TEXT + "\n" + PETER_SIG * 101, [PETER_VKEY])
    assert open_note(GO_TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [PETER_VKEY]).signers
    for bad in (
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFY"
        "C2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ):
        with pytest.raises(InvalidCheckpoint):
            open_note(bad, [PETER_VKEY])
    with pytest.raises(InvalidCheckpoint, match="UTF-8"):
        open_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), [PETER_VKEY])


def test_go_verifier_key_manglings_are_refused() -> None:
    """TestNewVerifier: every proper substring and every single-byte increment is refused."""
    assert str(parse_verifier_key(PETER_VKEY)) == PETER_VKEY
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(ConfigError):
                    parse_verifier_key(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(ConfigError):
            parse_verifier_key(mangled)
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        PETER_VKEY.replace("c74f20a3", "C74F20A3"),
    ):
        with pytest.raises(ConfigError):
            parse_verifier_key(bad)


def test_go_signer_key_manglings_are_refused() -> None:
    for i in range(0, len(PETER_SKEY), 3):
        mangled = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(ConfigError) as caught:
            CheckpointSigner.from_note_key(mangled)
        assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(caught.value)
    with pytest.raises(ConfigError):
        CheckpointSigner.from_note_key(PETER_SKEY[:-4])


def test_a_real_sumdb_checkpoint_verifies() -> None:
    opened = open_note(SUMDB_NOTE, [SUMDB_VKEY])
    assert opened.signers == ("sum.golang.org",)
    origin, size, root_b64 = opened.text.splitlines()
    assert (origin, int(size), len(base64.b64decode(root_b64))) == ("go.sum database tree", 6476701, 32)
    with pytest.raises(InvalidCheckpoint):  # not our checkpoint format (no head/time lines)
        open_checkpoint(SUMDB_NOTE, [SUMDB_VKEY])
    with pytest.raises(InvalidCheckpoint, match="invalid signature"):
        open_note(SUMDB_NOTE.replace("6476701", "6476702"), [SUMDB_VKEY])


def test_the_c2sp_example_is_well_formed_but_unverifiable() -> None:
    with pytest.raises(UnverifiableCheckpoint) as caught:
        open_note(C2SP_NOTE, [PETER_VKEY, SUMDB_VKEY])
    assert caught.value.signatures[0].startswith("example.com/behind-the-sofa+")


# --- the committed vectors ----------------------------------------------------------------------


def test_committed_vectors_equal_the_generator() -> None:
    assert VECTORS == checkpoint_vectors.build()


def test_vectors_ship_with_the_package() -> None:
    for name in ("checkpoint-v1.json", "merkle-v1.json"):
        shipped = resources.files("baldur_audit.schemas").joinpath(f"vectors/{name}")
        committed = VECTORS_PATH.parent / name
        assert json.loads(shipped.read_text(encoding="utf-8")) == json.loads(
            committed.read_text(encoding="utf-8")
        )


def spec_key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


def test_vector_keys_match_an_independent_reading_of_the_spec() -> None:
    for key in VECTORS["keys"]:
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["seed_hex"]))
        public = private.public_key().public_bytes_raw()
        assert key["public_key_hex"] == public.hex()
        assert key["key_hash_hex"] == spec_key_hash(key["name"], public).hex()
        encoded_key = base64.b64encode(bytes([1]) + public).decode()
        assert key["verifier_key"] == f"{key['name']}+{key['key_hash_hex']}+{encoded_key}"
    assert [bytes.fromhex(k["seed_hex"]) for k in VECTORS["keys"]] == checkpoint_vectors.seeds()


def test_vector_checkpoints_match_an_independent_reading_of_the_spec() -> None:
    tree = VECTORS["tree"]
    keys = VECTORS["keys"]
    for case in VECTORS["checkpoints"]:
        size = case["size"]
        lines = case["body"].split("\n")
        assert lines[-1] == "" and len(lines) == 6
        assert lines[0] == keys[0]["name"] == "baldur-audit/baldur-audit:baldur.audit.events"
        assert lines[1] == str(size)
        assert base64.b64decode(lines[2]).hex() == tree["roots_hex"][size]
        assert lines[3].startswith(f"head {size} ") and len(base64.b64decode(lines[3].split()[2])) == 32
        assert lines[4].startswith("time 2025-11-29T") and lines[4].endswith("Z")
        for note, signers in (
            (case["note_signed_by_key_1"], keys[:1]),
            (case["note_signed_by_keys_1_and_2"], keys),
        ):
            body, _, block = note.partition("\n\n")
            assert body + "\n" == case["body"]
            sig_lines = block.splitlines()
            assert len(sig_lines) == len(signers)
            for line, key in zip(sig_lines, signers, strict=True):
                dash, name, encoded = line.split(" ")
                raw = base64.b64decode(encoded, validate=True)
                assert (dash, name, raw[:4].hex()) == ("\u2014", key["name"], key["key_hash_hex"])
                Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["public_key_hex"])).verify(
                    raw[4:], case["body"].encode()
                )
            checkpoint, names = open_checkpoint(
                note, [k["verifier_key"] for k in signers], origin=keys[0]["name"]
            )
            assert checkpoint.body() == case["body"] and names == [k["name"] for k in signers]
    empty = next(c for c in VECTORS["checkpoints"] if c["size"] == 0)
    assert base64.b64decode(empty["body"].split("\n")[2]) == EMPTY_ROOT


def test_the_spec_example_is_the_committed_vector() -> None:
    spec = (VECTORS_PATH.parents[1] / "CHAIN.md").read_text(encoding="utf-8")
    example = next(c for c in VECTORS["checkpoints"] if c["size"] == 5)["note_signed_by_key_1"]
    assert "```\n" + example + "```\n" in spec
    assert f"`{VECTORS['keys'][0]['verifier_key']}`" in spec


# --- signing and opening our checkpoints ----------------------------------------------------------

SEED_1, SEED_2, SEED_3 = (hashlib.sha256(b"test key %d" % i).digest() for i in (1, 2, 3))
ORIGIN = default_origin("baldur-audit:baldur.audit.events")
OLD = CheckpointSigner.from_seed(ORIGIN, SEED_1)
NEW = CheckpointSigner.from_seed(ORIGIN, SEED_2)
STRANGER = CheckpointSigner.from_seed("witness.example/w1", SEED_3)


def sample(size: int = 42, *, origin: str = ORIGIN) -> Checkpoint:
    return Checkpoint(
        origin=origin,
        size=size,
        root_hash=hashlib.sha256(b"root").digest(),
        head_seq=size,
        head_link=hashlib.sha256(b"link").digest(),
        timestamp=datetime(2026, 11, 29, 12, 0, 0, 123000, tzinfo=UTC),
    )


def test_sign_and_open_round_trip() -> None:
    checkpoint = sample()
    note = OLD.sign(checkpoint)
    assert note.startswith(checkpoint.body() + "\n\u2014 " + ORIGIN + " ")
    assert checkpoint.body().endswith(
        "\nhead 42 " + base64.b64encode(checkpoint.head_link).decode() + "\ntime 2026-11-29T12:00:00.123Z\n"
    )
    assert open_checkpoint(note, [OLD.verifier_key()], origin=ORIGIN) == (checkpoint, [ORIGIN])
    assert open_checkpoint(note.encode("utf-8"), [OLD.verifier()]) == (checkpoint, [ORIGIN])
    assert checkpoint.timestamp_ms == 1795953600123


def test_key_rotation_both_keys_sign_during_the_changeover() -> None:
    checkpoint = sample()
    note = sign_checkpoint(checkpoint, [OLD, NEW])
    assert OLD.key_hash != NEW.key_hash and OLD.name == NEW.name
    assert open_checkpoint(note, [OLD.verifier_key()])[1] == [ORIGIN]  # an auditor with the old key
    assert open_checkpoint(note, [NEW.verifier_key()])[1] == [ORIGIN]  # one with the new key
    assert open_checkpoint(note, [OLD.verifier_key(), NEW.verifier_key()])[1] == [ORIGIN, ORIGIN]
    with pytest.raises(UnverifiableCheckpoint):
        open_checkpoint(OLD.sign(checkpoint), [NEW.verifier_key()])


def test_unknown_signers_are_ignored_but_not_enough() -> None:
    checkpoint = sample()
    cosigned = sign_checkpoint(checkpoint, [STRANGER, OLD])
    assert open_checkpoint(cosigned, [OLD.verifier_key()]) == (checkpoint, [ORIGIN])
    with pytest.raises(UnverifiableCheckpoint) as caught:
        open_checkpoint(STRANGER.sign(checkpoint), [OLD.verifier_key(), NEW.verifier_key()])
    assert caught.value.signatures == (f"witness.example/w1+{STRANGER.key_hash.hex()}",)
    assert isinstance(caught.value, CheckpointError) and isinstance(caught.value, AuditError)


def test_same_name_other_key_hash_is_an_unknown_key() -> None:
    """C2SP: signatures that share a name (not the key id) with a known key are ignored."""
    impostor = CheckpointSigner.from_seed(ORIGIN, SEED_3)
    with pytest.raises(UnverifiableCheckpoint):
        open_checkpoint(impostor.sign(sample()), [OLD.verifier_key()])
    # a line claiming the known key's id but signed by another key is an invalid signature
    line = impostor.signature_line(sample().body())
    raw = base64.b64decode(line.split(" ")[2])
    forged = line.split(" ")[0] + " " + ORIGIN + " " + base64.b64encode(OLD.key_hash + raw[4:]).decode()
    with pytest.raises(InvalidCheckpoint, match="invalid signature"):
        open_checkpoint(sample().body() + "\n" + forged + "\n", [OLD.verifier_key()])


def test_a_bad_signature_by_a_known_key_rejects_the_note_even_with_a_good_one() -> None:
    checkpoint = sample()
    good = sign_checkpoint(checkpoint, [OLD])
    bad_line = NEW.signature_line(sample(size=43).body())
    with pytest.raises(InvalidCheckpoint):
        open_checkpoint(good + bad_line, [OLD.verifier_key(), NEW.verifier_key()])
    assert open_checkpoint(good + bad_line, [OLD.verifier_key()])[1] == [ORIGIN]  # NEW unknown here


def test_origin_must_match_when_given() -> None:
    note = OLD.sign(sample())
    with pytest.raises(InvalidCheckpoint, match="origin"):
        open_checkpoint(note, [OLD.verifier_key()], origin="baldur-audit/other")


def flips(note: bytes) -> list[tuple[int, bytes]]:
    out = []
    for position in range(len(note)):
        for bit in range(8):
            changed = bytearray(note)
            changed[position] ^= 1 << bit
            out.append((position, bytes(changed)))
    return out


def test_every_flipped_bit_of_a_signed_note_is_refused() -> None:
    note = OLD.sign(sample()).encode("utf-8")
    verifiers = [OLD.verifier_key(), NEW.verifier_key()]
    assert open_checkpoint(note, verifiers)
    outcomes: dict[str, int] = {}
    for _, changed in flips(note):
        with pytest.raises(CheckpointError) as caught:
            open_checkpoint(changed, verifiers)
        outcomes[type(caught.value).__name__] = outcomes.get(type(caught.value).__name__, 0) + 1
    # a flip in the name or key id makes the signature an unknown key's: unverifiable
    assert set(outcomes) == {"InvalidCheckpoint", "UnverifiableCheckpoint"}
    assert sum(outcomes.values()) == 8 * len(note)


def test_a_flipped_bit_in_a_two_key_note_leaves_at_most_the_other_signature() -> None:
    """C2SP: a damaged line whose key identity changed is an unknown key's and is ignored;
    the note then stands on the other signature alone. Anything else is refused."""
    note = sign_checkpoint(sample(), [OLD, NEW]).encode("utf-8")
    body_end = note.index(b"\n\n") + 2
    second_line = note.index(b"\n", body_end) + 1
    for position, changed in flips(note):
        try:
            _, names = open_checkpoint(changed, [OLD.verifier_key(), NEW.verifier_key()])
        except CheckpointError:
            continue
        assert position >= body_end and names == [ORIGIN]  # only one key verified
        which = OLD if position >= second_line else NEW  # the undamaged line's key
        assert open_checkpoint(changed, [which.verifier_key()])[1] == [ORIGIN]


@PROPS
@given(
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    link=st.binary(min_size=32, max_size=32),
    millis=st.integers(-62135596800000, 253402300799999),
    origin=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Z", "C"], exclude_characters="+"),
        min_size=1,
        max_size=40,
    ),
)
def test_any_checkpoint_round_trips(size: int, root: bytes, link: bytes, millis: int, origin: str) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    checkpoint = Checkpoint(
        origin=origin, size=size, root_hash=root, head_seq=size, head_link=link, timestamp=moment
    )
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    signer = CheckpointSigner.from_seed(origin, SEED_1)
    assert open_checkpoint(signer.sign(checkpoint), [signer.verifier_key()], origin=origin) == (
        checkpoint,
        [origin],
    )


# --- strict parsing -------------------------------------------------------------------------------

GOOD_BODY = sample().body()


def with_body(body: str) -> str:
    return body + "\n" + OLD.signature_line(body)


@pytest.mark.parametrize(
    "body",
    [
        GOOD_BODY.replace("\n42\n", "\n042\n"),
        GOOD_BODY.replace("\n42\n", "\n+42\n"),
        GOOD_BODY.replace("\n42\n", "\n 42\n"),
        GOOD_BODY.replace("head 42", "head 042"),
        GOOD_BODY.replace("head 42", "head 41"),  # head seq must equal the size
        GOOD_BODY.replace("head 42", "head  42"),
        GOOD_BODY.replace("head 42", "Head 42"),
        GOOD_BODY.replace("time ", "time  "),
        GOOD_BODY.replace(".123Z", ".123+00:00"),
        GOOD_BODY.replace(".123Z", "Z"),
        GOOD_BODY.replace(".123Z", ".1234Z"),
        GOOD_BODY.replace("2026-11-29T", "2026-02-30T"),
        GOOD_BODY.replace("2026-11-29T12", "2026-11-29T24"),
        GOOD_BODY.replace("2026-11-29T", "2026-11-29 "),
        GOOD_BODY + "extra line\n",
        GOOD_BODY.replace("time 2026-11-29T12:00:00.123Z\n", ""),
        "\n".join(GOOD_BODY.split("\n")[:3]) + "\n",
        GOOD_BODY.replace(ORIGIN, ORIGIN + " with spaces"),
        GOOD_BODY.replace(ORIGIN, "a+b"),
        GOOD_BODY.replace(ORIGIN + "\n", "\n"),
        GOOD_BODY.replace("=\nhead", "\nhead"),  # unpadded root
        GOOD_BODY.replace("\n42\n", "\n18446744073709551616\n").replace(
            "head 42", "head 18446744073709551616"
        ),
    ],
)
def test_non_canonical_or_malformed_bodies_are_invalid(body: str) -> None:
    with pytest.raises(InvalidCheckpoint):
        open_checkpoint(with_body(body), [OLD.verifier_key()])


def test_non_canonical_base64_is_invalid() -> None:
    root_b64 = GOOD_BODY.split("\n")[2]
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(root_b64[-2])
    sibling = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[last ^ 1]
    altered = GOOD_BODY.replace(root_b64, root_b64[:-2] + sibling + "=")
    assert base64.b64decode(altered.split("\n")[2]) == base64.b64decode(root_b64)  # same bytes
    with pytest.raises(InvalidCheckpoint, match="root hash"):
        open_checkpoint(with_body(altered), [OLD.verifier_key()])
    line = OLD.signature_line(GOOD_BODY)
    for bad_line in (
        line.replace(" ", "  ", 1),
        line[:-2] + "\n",
        line.replace("\u2014", "-"),
        line.replace("\u2014 ", "\u2014"),
        "\u2014 " + ORIGIN + "\n",
        "\u2014 " + ORIGIN + " AAAA\n",
    ):
        with pytest.raises(InvalidCheckpoint):
            open_checkpoint(GOOD_BODY + "\n" + bad_line, [OLD.verifier_key()])


@pytest.mark.parametrize(
    "note",
    [
        with_body(GOOD_BODY).replace("\n", "\r\n"),
        with_body(GOOD_BODY).replace("\n", "\r\n", 1),
        with_body(GOOD_BODY)[:-1],
        with_body(GOOD_BODY) + "\n",
        "\n" + with_body(GOOD_BODY),
        with_body(GOOD_BODY).replace("\n\n", "\n"),
        with_body(GOOD_BODY).replace("2026", "2026\t"),
        with_body(GOOD_BODY) + "\u2014 x AAAAAAA=\n" * MAX_SIGNATURES,
        "",
        "\n\n",
    ],
)
def test_malformed_notes_are_invalid(note: str) -> None:
    with pytest.raises(InvalidCheckpoint):
        open_checkpoint(note, [OLD.verifier_key()])


def test_non_utf8_and_oversize_notes_are_invalid() -> None:
    note = with_body(GOOD_BODY)
    with pytest.raises(InvalidCheckpoint, match="UTF-8"):
        open_checkpoint(note.encode("utf-8").replace(b"\xe2\x80\x94", b"\xe2\x80"), [OLD.verifier_key()])
    with pytest.raises(InvalidCheckpoint, match="UTF-8"):
        open_checkpoint(note.replace("head", "\udc80head"), [OLD.verifier_key()])
    padding = "\u2014 witness.example/w " + base64.b64encode(bytes(4000)).decode() + "\n"
    big = note + padding * (MAX_NOTE_BYTES // len(padding) + 1)
    assert len(big.encode()) > MAX_NOTE_BYTES
    for form in (big, big.encode("utf-8")):
        with pytest.raises(InvalidCheckpoint, match="larger"):
            open_checkpoint(form, [OLD.verifier_key()])
    sixteen_cosignatures = note + padding * 16  # C2SP: at least 16 signatures MUST be accepted
    assert open_checkpoint(sixteen_cosignatures, [OLD.verifier_key()])[1] == [ORIGIN]


def test_a_verifier_list_with_two_keys_under_one_id_is_a_config_error() -> None:
    vkey = parse_verifier_key(OLD.verifier_key())
    twin = VerifierKey(vkey.name, vkey.key_hash, NEW.public_key)
    with pytest.raises(ConfigError, match="two different"):
        open_checkpoint(OLD.sign(sample()), [vkey, twin])
    assert open_checkpoint(OLD.sign(sample()), [vkey, vkey, OLD.verifier_key()])[1] == [ORIGIN]


# --- construction, keys and secrets -----------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"head_seq": 41},
        {"size": -1, "head_seq": -1},
        {"size": 2**64, "head_seq": 2**64},
        {"size": True, "head_seq": True},
        {"root_hash": b"short"},
        {"head_link": b"x" * 33},
        {"origin": ""},
        {"origin": "has space"},
        {"origin": "a+b"},
        {"origin": "tab\there"},
        {"timestamp": datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)},
        {"timestamp": datetime(2026, 1, 1)},
        {"timestamp": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1)))},
    ],
)
def test_checkpoints_the_format_cannot_carry_are_refused(changes: dict[str, Any]) -> None:
    values = {
        "origin": ORIGIN,
        "size": 1,
        "root_hash": bytes(32),
        "head_seq": 1,
        "head_link": bytes(32),
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
    } | changes
    with pytest.raises(InvalidCheckpoint):
        Checkpoint(**values)


def test_checkpoint_time_truncates_to_milliseconds_in_utc() -> None:
    moment = datetime(2026, 1, 1, 13, 0, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
    assert checkpoint_time(moment) == datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert checkpoint_time(moment).utcoffset() == timedelta(0)
    with pytest.raises(InvalidCheckpoint):
        checkpoint_time(datetime(2026, 1, 1))
    early = Checkpoint(
        origin=ORIGIN,
        size=0,
        root_hash=EMPTY_ROOT,
        head_seq=0,
        head_link=bytes(32),
        timestamp=datetime(9, 1, 2, tzinfo=UTC),
    )
    assert "\ntime 0009-01-02T00:00:00.000Z\n" in early.body()
    assert Checkpoint.parse(early.body()) == early


def test_default_origin() -> None:
    assert (
        default_origin("baldur-audit:baldur.audit.events") == "baldur-audit/baldur-audit:baldur.audit.events"
    )
    for bad in ("", "has space", "a+b", "new\nline", "nbsp\u00a0"):
        with pytest.raises(ConfigError):
            default_origin(bad)


def test_load_seed_forms() -> None:
    assert load_seed("hex:" + SEED_1.hex()) == SEED_1
    assert load_seed("  base64:" + base64.b64encode(SEED_1).decode() + "\n") == SEED_1
    secret = "c0ffee" * 10 + "ab"  # 31 bytes
    for bad in (
        SEED_1.hex(),
        "hex:" + secret,
        "hex:zz" + secret,
        "base64:@@" + secret,
        "base64:" + base64.b64encode(SEED_1[:31]).decode(),
        "hex:" + (SEED_1 + b"!").hex(),
    ):
        with pytest.raises(ConfigError) as caught:
            load_seed(bad)
        assert secret not in str(caught.value) and SEED_1.hex() not in str(caught.value)


def test_private_keys_never_show() -> None:
    signer = CheckpointSigner.from_seed(ORIGIN, SEED_1)
    for text in (repr(signer), str(signer), signer.verifier_key(), repr(signer.verifier())):
        assert SEED_1.hex() not in text and base64.b64encode(SEED_1).decode() not in text
    assert repr(signer) == f"CheckpointSigner(name={ORIGIN!r}, key_hash={signer.key_hash.hex()!r})"
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(AttributeError):
        signer.__dict__  # noqa: B018  # slots: no stray attribute holds key material


def test_generated_keys_differ_and_work() -> None:
    first, second = CheckpointSigner.generate(ORIGIN), CheckpointSigner.generate(ORIGIN)
    assert first.public_key != second.public_key
    assert open_checkpoint(first.sign(sample()), [first.verifier_key()])[1] == [ORIGIN]


@pytest.mark.parametrize(
    "call",
    [
        lambda: CheckpointSigner.from_seed("", SEED_1),
        lambda: CheckpointSigner.from_seed("a b", SEED_1),
        lambda: CheckpointSigner.from_seed(ORIGIN, SEED_1[:31]),
        lambda: CheckpointSigner.from_seed(ORIGIN, "not bytes"),
        lambda: parse_verifier_key(42),
        lambda: parse_verifier_key(OLD.verifier_key() + "="),
        lambda: parse_verifier_key(
            "x+" + key_hash("x", bytes(31)).hex() + "+" + base64.b64encode(b"\x01" + bytes(31)).decode()
        ),
    ],
)
def test_bad_keys_are_config_errors(call: Any) -> None:
    with pytest.raises(ConfigError):
        call()


def test_sign_note_refuses_what_it_could_not_open() -> None:
    for text, signers in (("no newline", [OLD]), ("a\rb\n", [OLD]), ("ok\n", [])):
        with pytest.raises(InvalidCheckpoint):
            sign_note(text, signers)
