"""Signed checkpoints: a C2SP tlog-checkpoint body in a C2SP signed note, Ed25519 signatures.

A checkpoint commits to the Merkle tree of the ledger (``merkle.py``) at one size and to
the chain head at that size, so an auditor holding only a public verifier key can check an
entry's inclusion proof and a consistency proof between two checkpoints. The note and key
formats are those of golang.org/x/mod/sumdb/note, so its tools and libraries interoperate.

Pure, except :meth:`CheckpointSigner.generate`, which draws a new key from the operating
system (key-generation tooling only). ``CHAIN.md`` ("Checkpoint") is normative.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import AuditError, ConfigError

ED25519 = 0x01  # signature type byte of C2SP signed-note (and x/mod/sumdb/note algEd25519)
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
HASH_BYTES = 32
#: Go's sumdb/note refuses more than 100; C2SP signed-note requires accepting at least 16.
MAX_SIGNATURES = 100
#: Room for 16 post-quantum cosignatures (~6.2 kB of base64 each) beside ours.
MAX_NOTE_BYTES = 256 * 1024
ORIGIN_PREFIX = "baldur-audit/"
EM_DASH = "\u2014"
_SIG_PREFIX = EM_DASH + " "
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z")
_HEX8 = re.compile(r"[0-9a-f]{8}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CheckpointError(AuditError):
    """Base of checkpoint and signed-note failures."""


class InvalidCheckpoint(CheckpointError):
    """The note is malformed, a known key's signature on it is wrong, or its body is not a
    valid checkpoint (or not of the expected origin): reject it (tampered or broken)."""


class UnverifiableCheckpoint(CheckpointError):
    """The note is well-formed but no known key signed it: it cannot be checked.

    ``signatures`` lists the ``name+keyhash`` of every signature found (none verified).
    """

    def __init__(self, signatures: Sequence[str]) -> None:
        self.signatures = tuple(signatures)
        found = ", ".join(self.signatures) or "none"
        super().__init__(f"no known key signed the note (signatures by: {found})")


# --- names and keys --------------------------------------------------------------------------


def is_valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode whitespace, no ``+``, no control characters, and
    encodable as UTF-8 (C2SP signed-note; sumdb/note ``isValidName``)."""
    if not isinstance(name, str) or not name or "+" in name:
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte Ed25519 key id: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Canonical standard padded base64 only; None otherwise."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public Ed25519 note verifier: key name, 4-byte key hash, 32-byte public key."""

    name: str
    key_hash: bytes
    public_key: bytes

    def __str__(self) -> str:
        """``<name>+<8 hex key hash>+<base64(0x01 || public key)>``."""
        return f"{self.name}+{self.key_hash.hex()}+{_b64(bytes([ED25519]) + self.public_key)}"

    @property
    def label(self) -> str:
        """``name+keyhash``, how errors and reports name the key."""
        return f"{self.name}+{self.key_hash.hex()}"

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_verifier_key(text: str) -> VerifierKey:
    """A verifier key from its text form ``<name>+<hash>+<base64 key>``.

    Strict: lowercase 8-digit hex hash that must match the name and key, canonical
    base64 of exactly ``0x01 || 32 bytes``. Raises :class:`ConfigError`.
    """
    if not isinstance(text, str):
        raise ConfigError("a verifier key must be text")
    name, _, rest = text.partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    raw = _unb64(key_b64)
    if not is_valid_name(name) or not _HEX8.fullmatch(hash_hex) or raw is None:
        raise ConfigError("malformed verifier key (expected <name>+<8 hex digits>+<base64 key>)")
    if len(raw) != 1 + PUBLIC_KEY_BYTES or raw[0] != ED25519:
        raise ConfigError(
            f"verifier key {name}+{hash_hex} is not an Ed25519 key "
            f"(type byte 0x01 and {PUBLIC_KEY_BYTES} bytes)"
        )
    public_key = raw[1:]
    if key_hash(name, public_key) != bytes.fromhex(hash_hex):
        raise ConfigError(f"verifier key {name}+{hash_hex}: the key hash does not match the name and key")
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise ConfigError(f"verifier key {name}+{hash_hex} is not a valid Ed25519 key") from None
    return VerifierKey(name, bytes.fromhex(hash_hex), public_key)


def load_seed(text: str) -> bytes:
    """A 32-byte Ed25519 private seed from ``hex:…`` or ``base64:…`` text (surrounding
    whitespace ignored). Raises :class:`ConfigError`, never echoing the value."""
    text = text.strip() if isinstance(text, str) else ""
    try:
        if text.startswith("hex:"):
            seed = bytes.fromhex(text[4:])
        elif text.startswith("base64:"):
            seed = base64.b64decode(text[7:], validate=True)
        else:
            raise ConfigError("checkpoint signing key must be written hex:… or base64:…")
    except (ValueError, binascii.Error):
        raise ConfigError("checkpoint signing key is malformed (expected hex:… or base64:…)") from None
    if len(seed) != SEED_BYTES:
        raise ConfigError(
            f"checkpoint signing key must be a {SEED_BYTES}-byte Ed25519 seed, found {len(seed)} bytes"
        )
    return seed


class CheckpointSigner:
    """An Ed25519 note signer under a key name. The private key never appears in its
    repr, str or any error."""

    __slots__ = ("name", "key_hash", "public_key", "_private")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not is_valid_name(name):
            raise ConfigError(
                "a checkpoint key name must be non-empty, without spaces, '+' or control characters"
            )
        self.name = name
        self._private = private_key
        self.public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_hash = key_hash(name, self.public_key)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> CheckpointSigner:
        """The signer of the 32-byte Ed25519 ``seed``; raises :class:`ConfigError`."""
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise ConfigError(f"an Ed25519 seed must be {SEED_BYTES} bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def generate(cls, name: str) -> CheckpointSigner:
        """A new random key (the one impure function of the core: key generation only)."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_note_key(cls, text: str) -> CheckpointSigner:
        """A signer from sumdb/note's ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>``.

        Raises :class:`ConfigError` (never echoing the key) if malformed or if the hash
        does not match the derived public key.
        """
        parts = text.strip().split("+", 4) if isinstance(text, str) else []
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise ConfigError("malformed note signer key (expected PRIVATE+KEY+<name>+<hash>+<key>)")
        _, _, name, hash_hex, key_b64 = parts
        raw = _unb64(key_b64)
        if (
            not is_valid_name(name)
            or not _HEX8.fullmatch(hash_hex)
            or raw is None
            or len(raw) != 1 + SEED_BYTES
            or raw[0] != ED25519
        ):
            raise ConfigError("malformed note signer key (expected PRIVATE+KEY+<name>+<hash>+<key>)")
        signer = cls.from_seed(name, raw[1:])
        if signer.key_hash.hex() != hash_hex:
            raise ConfigError(f"note signer key {name}+{hash_hex}: the key hash does not match")
        return signer

    def verifier(self) -> VerifierKey:
        """The public verifier of this signer."""
        return VerifierKey(self.name, self.key_hash, self.public_key)

    def verifier_key(self) -> str:
        """The verifier key text to give auditors: ``<name>+<hash>+<base64 key>``."""
        return str(self.verifier())

    def signature_line(self, text: str) -> str:
        """``— <name> <base64(key hash || Ed25519 signature of text)>`` and a newline."""
        signature = self._private.sign(text.encode("utf-8"))
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_hash + signature)}\n"

    def sign(self, checkpoint: Checkpoint) -> str:
        """The checkpoint as a note signed by this key alone."""
        return sign_note(checkpoint.body(), [self])

    def sign_bytes(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (retention anchors, CHAIN.md §17)."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"CheckpointSigner(name={self.name!r}, key_hash={self.key_hash.hex()!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a CheckpointSigner holds a private key and cannot be pickled")


# --- signed notes ----------------------------------------------------------------------------


def sign_note(text: str, signers: Sequence[CheckpointSigner]) -> str:
    """``text``, a blank line and one signature line per signer (in order).

    Raises :class:`InvalidCheckpoint` if ``text`` is not a note text (must end in a
    newline, UTF-8, no control characters but newline) or ``signers`` is empty.
    """
    _check_note_chars(text, "note text")
    if not text.endswith("\n"):
        raise InvalidCheckpoint("a note text must end with a newline")
    if not signers:
        raise InvalidCheckpoint("a note needs at least one signer")
    return text + "\n" + "".join(signer.signature_line(text) for signer in signers)


def _check_note_chars(text: str, what: str) -> None:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidCheckpoint(f"{what} is not valid UTF-8") from None
    if len(encoded) > MAX_NOTE_BYTES:
        raise InvalidCheckpoint(f"{what} is larger than {MAX_NOTE_BYTES} bytes")
    for position, ch in enumerate(text):
        if ord(ch) < 0x20 and ch != "\n":
            raise InvalidCheckpoint(f"{what} holds control character U+{ord(ch):04X} at character {position}")


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note whose signatures were checked: its text, the names that verified it (in
    note order), and the ``name+hash`` of signatures by keys not given."""

    text: str
    signers: tuple[str, ...]
    unknown: tuple[str, ...]


def _verifier_map(verifiers: Iterable[str | VerifierKey]) -> dict[tuple[str, bytes], VerifierKey]:
    known: dict[tuple[str, bytes], VerifierKey] = {}
    for item in verifiers:
        key = item if isinstance(item, VerifierKey) else parse_verifier_key(item)
        slot = (key.name, key.key_hash)
        if slot in known and known[slot] != key:
            raise ConfigError(f"two different verifier keys are named {key.label}")
        known[slot] = key
    return known


def open_note(note: str | bytes, verifiers: Iterable[str | VerifierKey]) -> OpenedNote:
    """Parse a signed note strictly and check its signatures (C2SP signed-note).

    Signatures by keys not in ``verifiers`` (name and key hash) are ignored; a known
    key's signature that does not verify rejects the whole note. Raises
    :class:`InvalidCheckpoint` (malformed, bad signature), :class:`UnverifiableCheckpoint`
    (no known key signed it) or :class:`ConfigError` (a bad verifier key).
    """
    known = _verifier_map(verifiers)
    if isinstance(note, bytes | bytearray):
        if len(note) > MAX_NOTE_BYTES:
            raise InvalidCheckpoint(f"note is larger than {MAX_NOTE_BYTES} bytes")
        try:
            note = bytes(note).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCheckpoint("note is not valid UTF-8") from None
    if not isinstance(note, str):
        raise InvalidCheckpoint("a note must be text")
    _check_note_chars(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise InvalidCheckpoint("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise InvalidCheckpoint("note must end with a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise InvalidCheckpoint(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    message = text.encode("utf-8")
    signers: list[str] = []
    unknown: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX):
            raise InvalidCheckpoint(f"signature line {number} does not start with an em dash and a space")
        name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        raw = _unb64(encoded) if space else None
        if not is_valid_name(name) or raw is None or len(raw) < 5:
            raise InvalidCheckpoint(f"signature line {number} is malformed")
        slot = (name, raw[:4])
        label = f"{name}+{raw[:4].hex()}"
        verifier = known.get(slot)
        if verifier is None:
            if label not in unknown:
                unknown.append(label)
            continue
        if slot in seen:
            continue
        seen.add(slot)
        if not verifier.verifies(message, raw[4:]):
            raise InvalidCheckpoint(f"invalid signature by known key {label}")
        signers.append(name)
    if not signers:
        raise UnverifiableCheckpoint(unknown)
    return OpenedNote(text=text, signers=tuple(signers), unknown=tuple(unknown))


# --- checkpoints -----------------------------------------------------------------------------


def default_origin(ledger_id: str) -> str:
    """``baldur-audit/<ledger_id>``, the origin (and key name) of a ledger's checkpoints.

    Raises :class:`ConfigError` if the ledger id would make an invalid name (whitespace,
    ``+``, control characters): configure an explicit origin for such a ledger.
    """
    origin = ORIGIN_PREFIX + ledger_id
    if not ledger_id or not is_valid_name(origin):
        raise ConfigError(
            "the ledger id cannot be part of a checkpoint origin (it must be "
            "non-empty, without spaces, '+' or control characters): "
            "configure the origin explicitly"
        )
    return origin


def checkpoint_time(moment: datetime) -> datetime:
    """``moment`` in UTC truncated to whole milliseconds, as a checkpoint carries it."""
    if moment.tzinfo is None:
        raise InvalidCheckpoint("a checkpoint time must be timezone-aware")
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _format_time(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def _parse_decimal(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text) or int(text) >= 1 << 64:
        raise InvalidCheckpoint(
            f"checkpoint {what} is not a decimal number below 2**64 without leading zeros"
        )
    return int(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A signed tree head of the ledger (CHAIN.md, "Checkpoint").

    ``size`` leaves (entries seq 1..size), Merkle ``root_hash``, the chain head at that
    size (``head_seq`` equals ``size``; ``head_link`` is the genesis link when 0) and the
    time it was made, UTC with millisecond precision (see :func:`checkpoint_time`).
    Raises :class:`InvalidCheckpoint` for values the text format cannot carry.
    """

    origin: str
    size: int
    root_hash: bytes
    head_seq: int
    head_link: bytes
    timestamp: datetime

    def __post_init__(self) -> None:
        if not is_valid_name(self.origin):
            raise InvalidCheckpoint(
                "checkpoint origin must be non-empty, without spaces, '+' or control characters"
            )
        for what, value in (("size", self.size), ("head seq", self.head_seq)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
                raise InvalidCheckpoint(f"checkpoint {what} must be an integer in [0, 2**64)")
        if self.head_seq != self.size:
            raise InvalidCheckpoint(f"checkpoint head seq {self.head_seq} differs from tree size {self.size}")
        for what, digest in (("root hash", self.root_hash), ("head link", self.head_link)):
            if not isinstance(digest, bytes) or len(digest) != HASH_BYTES:
                raise InvalidCheckpoint(f"checkpoint {what} must be {HASH_BYTES} bytes")
        moment = self.timestamp
        if (
            not isinstance(moment, datetime)
            or moment.tzinfo is None
            or moment.utcoffset() != timedelta(0)
            or moment.microsecond % 1000
        ):
            raise InvalidCheckpoint(
                "checkpoint time must be UTC with millisecond precision (see checkpoint_time)"
            )

    def body(self) -> str:
        """The note text: origin, size, root, ``head <seq> <link>``, ``time <…Z>``, each
        followed by a newline."""
        return (
            f"{self.origin}\n{self.size}\n{_b64(self.root_hash)}\n"
            f"head {self.head_seq} {_b64(self.head_link)}\n"
            f"time {_format_time(self.timestamp)}\n"
        )

    @property
    def timestamp_ms(self) -> int:
        """The checkpoint time in milliseconds since the Unix epoch."""
        return (self.timestamp - _EPOCH) // timedelta(milliseconds=1)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint whose :meth:`body` is exactly ``text``; raises
        :class:`InvalidCheckpoint` for anything else."""
        if not text.endswith("\n"):
            raise InvalidCheckpoint("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) != 5:
            raise InvalidCheckpoint(f"checkpoint text must have 5 lines, found {len(lines)}")
        origin, size_text, root_text, head_text, time_text = lines
        size = _parse_decimal(size_text, "tree size")
        root_hash = _unb64(root_text)
        if root_hash is None or len(root_hash) != HASH_BYTES:
            raise InvalidCheckpoint("checkpoint root hash is not canonical base64 of 32 bytes")
        head = head_text.split(" ")
        if len(head) != 3 or head[0] != "head":
            raise InvalidCheckpoint("checkpoint line 4 must be 'head <seq> <base64 link>'")
        head_seq = _parse_decimal(head[1], "head seq")
        head_link = _unb64(head[2])
        if head_link is None or len(head_link) != HASH_BYTES:
            raise InvalidCheckpoint("checkpoint head link is not canonical base64 of 32 bytes")
        keyword, _, stamp = time_text.partition(" ")
        match = _TIME.fullmatch(stamp)
        if keyword != "time" or match is None:
            raise InvalidCheckpoint("checkpoint line 5 must be 'time YYYY-MM-DDTHH:MM:SS.mmmZ'")
        year, month, day, hour, minute, second, milli = (int(g) for g in match.groups())
        try:
            moment = datetime(year, month, day, hour, minute, second, milli * 1000, tzinfo=UTC)
        except ValueError:
            raise InvalidCheckpoint("checkpoint time is not a valid date and time") from None
        checkpoint = cls(
            origin=origin,
            size=size,
            root_hash=root_hash,
            head_seq=head_seq,
            head_link=head_link,
            timestamp=moment,
        )
        if checkpoint.body() != text:  # one text per checkpoint: no alternative spellings
            raise InvalidCheckpoint("checkpoint text is not in canonical form")
        return checkpoint


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[CheckpointSigner]) -> str:
    """The checkpoint as a note signed by every signer (several during a key rotation)."""
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(
    note_text: str | bytes, verifiers: Iterable[str | VerifierKey], origin: str | None = None
) -> tuple[Checkpoint, list[str]]:
    """Verify a checkpoint note; returns the checkpoint and the names of the known keys
    that signed it.

    Accepts when at least one known key verifies (signatures by unknown keys are
    ignored). Raises :class:`InvalidCheckpoint` (malformed, a known key's bad signature,
    a body that is not a checkpoint, another origin than ``origin``),
    :class:`UnverifiableCheckpoint` (no known key signed it) or :class:`ConfigError`.
    """
    opened = open_note(note_text, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise InvalidCheckpoint(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    return checkpoint, list(opened.signers)
