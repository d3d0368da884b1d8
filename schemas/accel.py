"""The optional native accelerator (``baldur_audit_native``, built from ``schemas/native/``).

The pure-Python code is the reference; the native module computes the same bytes faster or
declines (returns ``None``) and the Python path runs. ``native`` is the module when it is
installed and enabled, else ``None``: the hot paths read it on each call, so
:func:`set_enabled` takes effect at once (the CLI applies ``BALDUR_NATIVE``; tests and the
benchmark switch it to compare both paths). This is the only module that imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

try:
    import baldur_audit_native as _loaded  # type: ignore[import-not-found,import-untyped,unused-ignore]
except ImportError:  # not built here (no Rust toolchain): the reference path runs
    _loaded = None

#: One row of :meth:`Native.seal_rows`: (key index, seq, topic, partition, offset,
#: timestamp_ms, kind code, duplicate_of, value, view body).
SealRow = tuple[int, int, str, int, int, int, int, int, bytes | None, bytes]


class NativeLinker(Protocol):
    """``chain.LedgerLinker``'s per-entry link, natively."""

    @property
    def key_id(self) -> str: ...

    def link(
        self,
        prev_link: bytes,
        seq: int,
        offset: int,
        timestamp_ms: int,
        kind_code: int,
        duplicate_of: int,
        value_null: bool,
        digest: bytes,
        view_digest: bytes,
    ) -> bytes: ...


class NativeRowChecker(Protocol):
    """verify's fast check of rows read as a binary ``COPY`` stream (``schemas/native/src/rows.rs``)."""

    prev_offset: int
    next_seq: int
    unpruned_seen: bool
    pruned: int
    checked: int
    last_seq: int
    stopped: int | None

    @property
    def prev_link(self) -> bytes: ...

    @property
    def kinds(self) -> list[tuple[str, int]]: ...

    def feed(self, data: bytes | bytearray | memoryview) -> bool: ...

    def finish(self) -> bool: ...


class Native(Protocol):
    """What ``baldur_audit_native`` offers (its Rust source: ``schemas/native/src/``)."""

    def payload_digest(self, value: bytes | None) -> bytes: ...

    def decode_view(self, value: bytes, prefix: bytes) -> tuple[bytes, bytes] | None: ...

    def decode_views(self, values: list[bytes | None], prefix: bytes) -> list[tuple[bytes, bytes] | None]: ...

    def seal_rows(
        self, keys: Sequence[tuple[str, bytes]], prev_link: bytes, rows: list[SealRow]
    ) -> list[tuple[bytes, bytes, bytes]] | None: ...

    def leaf_hash(
        self,
        key_id: str,
        seq: int,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        kind_code: int,
        duplicate_of: int,
        value_null: bool,
        digest: bytes,
        view_digest: bytes,
        link: bytes,
    ) -> bytes: ...

    def entry_leaves(self, entries: list[Any]) -> list[bytes] | None: ...

    def LedgerLinker(self, secret: bytes, key_id: str, topic: str, partition: int) -> NativeLinker: ...  # noqa: N802

    def RowChecker(  # noqa: N802
        self,
        keys: Sequence[tuple[str, str, bytes]],
        kinds: Sequence[tuple[str, int]],
        rejected: int,
        duplicate: int,
        topic: str,
        partition: int,
        head_seq: int,
        anchors: Sequence[int],
        prev_link: bytes,
        prev_offset: int,
        next_seq: int,
        unpruned_seen: bool,
    ) -> NativeRowChecker: ...


#: The installed module, enabled or not (None: not built on this machine).
INSTALLED: Native | None = _loaded
#: The module the hot paths use: None when it is not installed or switched off.
native: Native | None = INSTALLED


def set_enabled(enabled: bool) -> None:
    """Use the native module (if installed) or force the pure-Python reference path."""
    global native
    native = INSTALLED if enabled else None


def enabled() -> bool:
    """Whether the native path is in use."""
    return native is not None
