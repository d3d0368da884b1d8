"""The leaves the chainer feeds the checkpointer (FedLeaves): taken only where they continue the
stored tree (its size and its last link), contiguous runs only, forgotten once treed."""

from __future__ import annotations

import pytest

from baldur_audit.consumers import checkpointer
from baldur_audit.consumers.checkpointer import FedLeaves
from baldur_audit.schemas.chain import ChainHead, SealedEntry, Sealer, SigningKey, TopicRecord
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
from baldur_audit.schemas.merkle import entry_leaf_hash
from tests.support.stack import make_event

KEY = SigningKey.derive(b"unit-test hmac key, 32 bytes long!")
GENESIS = bytes(32)


def sealed(count: int) -> list[SealedEntry]:
    sealer = Sealer(key=KEY, head=ChainHead(0, -1, GENESIS), schemas=KNOWN_SCHEMAS)
    records = [
        TopicRecord("t", 0, i, 1_700_000_000_000 + i, encode_event(make_event(i))) for i in range(count)
    ]
    return sealer.seal_batch(records, lambda ids: {})


def leaf(entry: SealedEntry) -> bytes:
    return entry_leaf_hash(entry.link_input(), key_id=entry.key_id, link=entry.link)


ENTRIES = sealed(12)
LINKS = [GENESIS] + [entry.link for entry in ENTRIES]  # LINKS[seq] is entry seq's link


def test_fed_runs_continue_the_tree_only_at_its_size_and_link() -> None:
    fed = FedLeaves()
    fed.add(GENESIS, ENTRIES[:5])
    fed.add(LINKS[5], ENTRIES[5:9])
    assert fed.first_seq == 1 and fed.end_seq == 9
    leaves, link = fed.take(0, GENESIS, 9) or ([], b"")
    assert leaves == [leaf(e) for e in ENTRIES[:9]] and link == LINKS[9]
    leaves, link = fed.take(3, LINKS[3], 6) or ([], b"")
    assert leaves == [leaf(e) for e in ENTRIES[3:6]] and link == LINKS[6]
    assert fed.take(3, LINKS[2], 6) is None  # the stored tree ends in another link
    assert fed.take(9, LINKS[9], 12) is None  # nothing fed beyond seq 9
    fed.drop_through(4)
    assert fed.first_seq == 5 and fed.prev_link == LINKS[4]
    assert fed.take(2, LINKS[2], 9) is None  # below the fed run: read back
    leaves, link = fed.take(4, LINKS[4], 100) or ([], b"")
    assert leaves == [leaf(e) for e in ENTRIES[4:9]] and link == LINKS[9]


def test_a_batch_that_does_not_continue_starts_a_new_run() -> None:
    fed = FedLeaves()
    fed.add(GENESIS, ENTRIES[:3])
    fed.add(LINKS[6], ENTRIES[6:8])  # seqs 7-8: a gap (another chainer sealed 4-6)
    assert (fed.first_seq, fed.end_seq, fed.prev_link) == (7, 8, LINKS[6])
    fed.add(LINKS[7], ENTRIES[8:10])  # seq 9 after seq 8, but the link before it is not 8's
    assert (fed.first_seq, fed.end_seq) == (9, 10)
    fed.clear()
    assert fed.take(8, LINKS[8], 10) is None


def test_a_fed_run_stays_within_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpointer, "FED_LIMIT", 4)
    fed = FedLeaves()
    fed.add(GENESIS, ENTRIES[:3])
    fed.add(LINKS[3], ENTRIES[3:6])  # 6 > 4: the run restarts at seq 4
    assert (fed.first_seq, fed.end_seq, fed.prev_link) == (4, 6, LINKS[3])


def test_background_checkpoints_never_hold_up_the_caller_and_cover_waits_for_them() -> None:
    """On its own thread the checkpointer is asked about every head in order (here: a
    database it cannot reach, every attempt failing); ``cover`` runs after all of them."""
    from baldur_audit.consumers.checkpoint_keys import load_checkpoint_keys
    from baldur_audit.consumers.settings import CHECKPOINT_KEY_ENV, Settings

    now = [1000.0]
    keys = load_checkpoint_keys(Settings(environ={CHECKPOINT_KEY_ENV: "hex:" + "22" * 32}), signing=True)
    made = checkpointer.Checkpointer(
        dsn="postgresql://baldur@127.0.0.1:1/nowhere",
        keys=keys,
        chain_keys=None,
        witnesses=[],
        every=1,
        interval=0,
        clock=lambda: now[0],
    )
    made.start_background()
    try:
        made.after_batch(5)
        made.after_batch(5)  # the same head again: asked once
        made.after_batch(6)  # within the retry delay: not tried
        made.cover(6)  # waits for the thread, then tries once more itself
        assert made.stats.failed == 2 and made.stats.made == 0
        now[0] += 11  # past the retry delay (doubled by the second failure)
        made.after_batch(7)
    finally:
        made.close()  # does what it was asked first
    assert made.stats.failed == 3
