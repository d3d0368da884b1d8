"""``verify``'s cross-check of the ledger against its witnessed checkpoints (``witnesses.py``,
``kafka/witness.py``).

The database's owner controls the ledger tables but not the witnesses, so a witnessed
checkpoint shows what the ledger held: the check finds a truncated tail (the ledger ends
before a witnessed size, even with the chain head rolled back to match) and a suffix
rewritten by someone holding the HMAC key (the entry at a witnessed size no longer has the
witnessed link), and locates it between two witnessed checkpoints with O(log c) reads of the
c witnessed checkpoints — never by replaying the ledger topic. A verifier may keep the last
checkpoint it accepted in a state file and refuse a ledger that is not a consistent
extension of it (the rekor-cli model).

Why comparing links suffices: ``verify``'s walk recomputes every link with the HMAC key,
and the leaf (CHAIN.md §13) covers exactly what the link covers plus the link; so when the
walk is intact, the entry at size s has the witnessed head link if and only if entries
1..s are the witnessed ones — and so have the witnessed root. The stored tree is checked
against the signed root too, since proofs are built from it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    InvalidCheckpoint,
    UnverifiableCheckpoint,
    VerifierKey,
    open_checkpoint,
)
from baldur_audit.schemas.errors import (
    AuditError,
    ChainBreak,
    ConfigError,
    SequenceGap,
    ServiceUnavailable,
    ValueMismatch,
)
from baldur_audit.schemas.merkle import MerkleError, ProofError, consistency_proof, root, verify_consistency

from ..files import durable_write
from ..postgres import Connection
from ..postgres.ledger import ledger_end, link_at
from ..postgres.merkle import PostgresMerkleNodes, tree_size
from ..postgres.rows import LedgerMeta
from ..witnesses import WitnessLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """A checkpoint read from a witness (or the state file) whose signature verified."""

    where: str
    position: int
    checkpoint: Checkpoint
    signers: tuple[str, ...]
    note: str

    def describe(self) -> dict[str, Any]:
        """What the report shows of it."""
        cp = self.checkpoint
        return {
            "size": cp.size,
            "root": cp.root_hash.hex(),
            "head_link": cp.head_link.hex(),
            "time": cp.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "source": self.where,
            "signed_by": list(self.signers),
        }


class WitnessCheck:
    """``verify``'s cross-check of the ledger against its newest witnessed checkpoints.

    :meth:`prepare` reads the witnesses *before* ``verify`` takes its database snapshot
    (so every checkpoint read was made over entries the snapshot holds); :meth:`check`
    runs at the end of the walk and returns the ``witness`` report and a
    :class:`ChainBreak` when the ledger is not what was witnessed.
    """

    def __init__(
        self,
        *,
        verifiers: Sequence[VerifierKey],
        origin: str,
        logs: Sequence[WitnessLog],
        state_path: Path | None = None,
    ) -> None:
        self._verifiers = tuple(verifiers)
        self._origin = origin
        self._logs = tuple(logs)
        self._state_path = state_path
        self._positions: dict[str, Sequence[int]] = {}
        self._newest: list[tuple[WitnessLog, Witnessed]] = []
        self._state: Witnessed | None = None
        self._problems: list[tuple[str, str]] = []
        self._prepared = False

    # -- reading -------------------------------------------------------------------------------

    @property
    def verifiers(self) -> tuple[VerifierKey, ...]:
        """The checkpoint verifier keys this check accepts (also used for retention anchors)."""
        return self._verifiers

    def _open(self, note: bytes | str | None, where: str, position: int) -> Witnessed:
        if note is None:
            raise InvalidCheckpoint("no checkpoint there")
        checkpoint, signers = open_checkpoint(note, self._verifiers, self._origin)
        text = note.decode("utf-8") if isinstance(note, bytes) else note
        return Witnessed(where, position, checkpoint, tuple(signers), text)

    def _problem(self, exc: BaseException, where: str) -> None:
        if isinstance(exc, UnverifiableCheckpoint):
            self._problems.append(
                (
                    "unverifiable",
                    f"{where}: {exc} (configure its verifier key in BALDUR_CHECKPOINT_PUBLIC_KEYS)",
                )
            )
        elif isinstance(exc, CheckpointError | ConfigError):
            self._problems.append(("invalid", f"{where}: {exc}"))
        else:
            self._problems.append(("unavailable", f"{where}: {exc}"))

    def prepare(self) -> None:
        """Read the newest checkpoint of every witness and the state file (never raises:
        what cannot be read is reported by :meth:`check`)."""
        self._prepared = True
        for witness in self._logs:
            try:
                positions = witness.positions()
                self._positions[witness.name] = positions
                if not positions:
                    continue
                where = f"{witness.name} at {positions[-1]}"
                self._newest.append((witness, self._open(witness.read(positions[-1]), where, positions[-1])))
            except (AuditError, OSError) as exc:
                self._problem(exc, witness.name)
        if self._state_path is not None and self._state_path.exists():
            where = f"state file {self._state_path}"
            try:
                self._state = self._open(self._state_path.read_bytes(), where, -1)
            except (AuditError, OSError) as exc:
                self._problem(
                    exc if not isinstance(exc, OSError) else ServiceUnavailable(exc.strerror or str(exc)),
                    where,
                )

    def _read_open(self, witness: WitnessLog, position: int) -> Witnessed | None:
        try:
            return self._open(witness.read(position), f"{witness.name} at {position}", position)
        except (AuditError, OSError) as exc:
            log.warning("witnessed checkpoint at %s %d skipped: %s", witness.name, position, exc)
            return None

    # -- comparing -------------------------------------------------------------------------------

    def _mismatch(self, conn: Connection, cp: Checkpoint, ctx: _Ledger) -> str | None:
        """None when the ledger holds ``cp``; else "short", "link" or "tree"."""
        if cp.size > ctx.end:
            return "short"
        if cp.size == 0:
            link: bytes | None = ctx.meta.genesis_link
        else:
            link = link_at(conn, cp.size)
        if link is None and cp.size <= ctx.anchored:
            pass  # dropped behind a retention anchor: only the stored tree can still tell
        elif link is None or not hmac.compare_digest(link, cp.head_link):
            return "link"
        if cp.size and ctx.tree_size >= cp.size:
            try:
                stored = root(PostgresMerkleNodes(conn), cp.size)
            except MerkleError:
                return "tree"
            if not hmac.compare_digest(stored, cp.root_hash):
                return "tree"
        return None

    def _locate(
        self, conn: Connection, witness: WitnessLog, newest: Witnessed, reason: str, ctx: _Ledger
    ) -> ChainBreak:
        """Binary search of the witness for the last checkpoint the ledger still holds."""
        every = self._positions[witness.name]
        positions = every[: every.index(newest.position) + 1]
        lo, hi = -1, len(positions) - 1
        matched: Witnessed | None = None
        failed, failed_reason = newest, reason
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe, found = mid, self._read_open(witness, positions[mid])
            while found is None and probe - 1 > lo:
                probe -= 1
                found = self._read_open(witness, positions[probe])
            if found is None:
                lo = mid
                continue
            why = self._mismatch(conn, found.checkpoint, ctx)
            if why is None:
                lo, matched = probe, found
            else:
                hi, failed, failed_reason = probe, found, why
        return _describe_break(matched, failed, failed_reason, ctx)

    def check(
        self, conn: Connection, *, meta: LedgerMeta, first_break: ChainBreak | None
    ) -> tuple[dict[str, Any], ChainBreak | None]:
        """Compare the ledger (in ``verify``'s snapshot) with what :meth:`prepare` read.

        Returns the ``witness`` report and the break it found (None when the ledger holds
        every witnessed checkpoint). Saves the state file when everything matched.
        Raises StoreUnavailable.
        """
        if not self._prepared:
            self.prepare()
        try:
            return self._check(conn, meta=meta, first_break=first_break)
        finally:
            self.close()

    def close(self) -> None:
        """Close the witnesses' clients."""
        for witness in self._logs:
            closer = getattr(witness, "close", None)
            if closer is not None:
                closer()

    def _check(
        self, conn: Connection, *, meta: LedgerMeta, first_break: ChainBreak | None
    ) -> tuple[dict[str, Any], ChainBreak | None]:
        report: dict[str, Any] = {
            "checked": False,
            "skipped": None,
            "status": "none",
            "detail": None,
            "checkpoint": None,
            "sources": [w.name for w in self._logs],
            "state": None,
        }
        end, anchored = ledger_end(conn)
        # The stored size as it is, unchecked: the roots at the witnessed sizes are what show
        # whether its nodes (frontier included) are still the witnessed ones.
        ctx = _Ledger(meta=meta, end=max(end, anchored), anchored=anchored, tree_size=tree_size(conn))
        found: ChainBreak | None = None
        checked: list[Witnessed] = []
        for witness, newest in self._newest:
            reason = self._mismatch(conn, newest.checkpoint, ctx)
            checked.append(newest)
            if reason is not None and found is None:
                found = self._locate(conn, witness, newest, reason, ctx)
        if self._state is not None:
            report["state"] = {
                "path": str(self._state_path),
                "accepted_size": self._state.checkpoint.size,
                "saved_size": None,
            }
            reason = self._mismatch(conn, self._state.checkpoint, ctx)
            checked.append(self._state)
            if reason is not None and found is None:
                found = _describe_break(None, self._state, reason, ctx, accepted=True)
        elif self._state_path is not None:
            report["state"] = {"path": str(self._state_path), "accepted_size": None, "saved_size": None}
        if found is None and len(checked) > 1:
            found = self._prove_consistent(conn, checked, ctx)
        best = max(checked, key=lambda w: (w.checkpoint.size, w.checkpoint.timestamp), default=None)
        report["checkpoint"] = best.describe() if best else None
        report["checked"] = bool(checked)
        if found is not None:
            report["status"], report["detail"] = "mismatch", found.detail
        elif self._problems:
            worst = min(self._problems, key=lambda p: ("invalid", "unverifiable", "unavailable").index(p[0]))
            report["status"] = worst[0]
            report["detail"] = "; ".join(detail for _, detail in self._problems)
        elif checked:
            report["status"] = "matched"
            report["detail"] = (
                f"the ledger holds the witnessed checkpoint of size {best.checkpoint.size}" if best else None
            )
        else:
            report["skipped"] = "no witnessed checkpoint yet" if self._logs else "--no-witness"
            report["status"] = "none" if self._logs else "skipped"
        if (
            report["status"] in ("matched", "none", "skipped")
            and first_break is None
            and best is not None
            and self._state_path is not None
        ):
            report["state"]["saved_size"] = self._save_state(best)
        return report, found

    def _prove_consistent(
        self, conn: Connection, checked: list[Witnessed], ctx: _Ledger
    ) -> ChainBreak | None:
        """Both ends held by the ledger: also prove it from the stored tree (RFC 9162)."""
        old = min(checked, key=lambda w: w.checkpoint.size).checkpoint
        new = max(checked, key=lambda w: w.checkpoint.size).checkpoint
        if ctx.tree_size < new.size:
            return None  # the links already showed both are prefixes of this ledger
        try:
            proof = consistency_proof(PostgresMerkleNodes(conn), old.size, new.size)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except (MerkleError, ProofError) as exc:
            return ValueMismatch(
                old.size + 1,
                f"the stored merkle tree does not prove the "
                f"checkpoint of size {new.size} consistent with the "
                f"one of size {old.size}: {exc}",
            )
        return None

    def _save_state(self, best: Witnessed) -> int:
        assert self._state_path is not None
        if self._state is not None and self._state.checkpoint.size > best.checkpoint.size:
            best = self._state
        path = self._state_path
        try:
            durable_write(path, best.note.encode("utf-8"), mode=0o644, replace=True)
        except OSError as exc:
            raise ConfigError(f"cannot write the state file {path}: {exc.strerror}") from None
        return best.checkpoint.size


@dataclass(frozen=True, slots=True)
class _Ledger:
    meta: LedgerMeta
    end: int  # the last seq: of the entries, or of the newest retention anchor
    anchored: int  # entries up to here may be gone behind a retention anchor (anchors.py)
    tree_size: int


def _describe_break(
    matched: Witnessed | None, failed: Witnessed, reason: str, ctx: _Ledger, *, accepted: bool = False
) -> ChainBreak:
    m = matched.checkpoint.size if matched else 0
    x = failed.checkpoint.size
    when = failed.describe()["time"]
    what = (
        f"the checkpoint accepted earlier ({failed.where}, size {x})"
        if accepted
        else f"the checkpoint of size {x} witnessed in {failed.where} (signed {when})"
    )
    holds = f"; it holds the witnessed checkpoint of size {m}" if matched else ""
    if reason == "short":
        return SequenceGap(
            ctx.end + 1,
            None,
            f"the ledger ends at seq {ctx.end} but {what} covers {x} entries: "
            f"entries {ctx.end + 1}..{x} were deleted (with the chain head rolled "
            f"back to match){holds}",
        )
    if reason == "link":
        return ValueMismatch(
            m + 1,
            f"the ledger is not what was witnessed: entry {x} does not have the "
            f"link {what} names{holds}, so entries within seq {m + 1}..{x} were "
            "rewritten (re-linked by a holder of the HMAC key, or the entry is "
            "gone): `baldur-audit replay` names the exact seq",
        )
    return ValueMismatch(
        m + 1,
        f"the stored merkle tree does not give the root of {what} although the "
        f"entries' links match it: merkle_nodes was changed within leaves "
        f"{m + 1}..{x} (proofs built from it will not verify)",
    )
