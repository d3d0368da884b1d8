"""The chainer hands the checkpointer the entries it has just sealed, and the tree takes their
leaves without reading them back: the stored tree and every signed checkpoint must be the very
bytes that a tree built from the ledger's rows gives, also when the tree first has to read back
entries it was not fed (sealed by a run without checkpoints)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from baldur_audit.consumers.checkpointer import GROW_EVERY, row_leaf
from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
from baldur_audit.consumers.postgres.rows import LINK
from baldur_audit.schemas.merkle import MerkleFrontier
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration


def chain(ledger: Ledger, **env: str) -> dict[str, Any]:
    done = ledger.cli(
        "chain", "--until-idle", "1", "--session-timeout", "3", "--batch-size", "4", "--json", extra_env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def tree_from_rows(ledger: Ledger) -> tuple[list[bytes], list[tuple[int, int, bytes]], list[bytes]]:
    """Leaves, perfect nodes and links of the ledger's entries, read back as the tree reads them."""
    with psycopg.connect(ledger.dsn) as conn:
        store = PostgresLedgerStore(conn)
        meta = store.read_meta()
        with store.snapshot() as snap:
            rows = list(store.iter_sealed_rows(snap))
    frontier = MerkleFrontier()
    leaves, nodes, links = [], [], []
    for row in rows:
        leaf, _, _ = row_leaf(row, topic=meta.topic, partition=meta.partition)
        leaves.append(leaf)
        nodes.extend(frontier.append(leaf))
        links.append(bytes(row[LINK]))
    return leaves, nodes, links


def test_fed_leaves_make_the_same_tree_and_checkpoints_as_the_rows(ledger: Ledger) -> None:
    ledger.produce_events(20)
    chain(ledger, BALDUR_CHECKPOINT_EVERY="0", BALDUR_CHECKPOINT_INTERVAL="0")  # no tree yet
    ledger.produce_events(45, start=20)
    chain(ledger, BALDUR_CHECKPOINT_EVERY="7")  # reads back 1..20, is fed 21..65
    ledger.produce_events(13, start=65)
    chain(ledger, BALDUR_CHECKPOINT_EVERY="5")  # a new process: fed from 66 on

    leaves, nodes, links = tree_from_rows(ledger)
    assert len(leaves) == 78
    with ledger.app() as conn:
        stored_nodes = conn.execute(
            "SELECT level, idx, hash FROM merkle_nodes ORDER BY idx, level"
        ).fetchall()
        size, frontier, head_link = conn.execute(
            "SELECT size, frontier, head_link FROM merkle_tree WHERE id = 1"
        ).fetchone()
        checkpoints = conn.execute(
            "SELECT tree_size, root, head_link FROM checkpoints ORDER BY tree_size"
        ).fetchall()
    assert size == 78 and bytes(head_link) == links[-1]
    expected = MerkleFrontier()
    for leaf in leaves:
        expected.append(leaf)
    assert bytes(frontier) == expected.to_bytes()
    assert sorted((int(level), int(idx), bytes(h)) for level, idx, h in stored_nodes) == sorted(nodes)
    assert len(checkpoints) >= 8
    for tree_size, root, cp_link in checkpoints:
        partial = MerkleFrontier()
        for leaf in leaves[:tree_size]:
            partial.append(leaf)
        assert bytes(root) == partial.root(), tree_size
        assert bytes(cp_link) == links[tree_size - 1], tree_size
    assert ledger.cli("verify", "--json").returncode == 0


def test_the_tree_grows_between_checkpoints_with_the_same_nodes(ledger: Ledger) -> None:
    """A running chainer extends the stored tree from its fed leaves every GROW_EVERY entries,
    before any checkpoint is due; the nodes it stores are the rows' own, and the checkpoints
    made afterwards sign the same roots."""
    count = GROW_EVERY * 2 + 500
    ledger.produce_events(count)
    env = {**ledger.env, "BALDUR_CHECKPOINT_EVERY": "1000000", "BALDUR_CHECKPOINT_INTERVAL": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "baldur_audit.consumers", "chain", "--session-timeout", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        size = 0
        while time.monotonic() < deadline:
            with ledger.app() as conn:
                row = conn.execute("SELECT size FROM merkle_tree WHERE id = 1").fetchone()
                size = int(row[0]) if row else 0
                checkpoints = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
            if size >= GROW_EVERY * 2:
                break
            time.sleep(0.2)
        assert size >= GROW_EVERY * 2, f"the tree did not grow: size {size}"
        assert checkpoints == 0  # none was due: the growth came between checkpoints
    finally:
        proc.terminate()
        _, errors = proc.communicate(timeout=30)
    assert proc.returncode == 0, errors

    leaves, nodes, _ = tree_from_rows(ledger)
    assert len(leaves) == count
    with ledger.app() as conn:
        stored = conn.execute("SELECT level, idx, hash FROM merkle_nodes").fetchall()
        frontier = conn.execute("SELECT frontier FROM merkle_tree WHERE id = 1").fetchone()[0]
    partial = MerkleFrontier()
    expected_nodes = []
    for leaf in leaves[:size]:
        expected_nodes.extend(partial.append(leaf))
    assert bytes(frontier) == partial.to_bytes()
    assert sorted((int(level), int(idx), bytes(h)) for level, idx, h in stored) == sorted(expected_nodes)

    chain(ledger, BALDUR_CHECKPOINT_EVERY="700")  # the rest, and checkpoints over the grown tree
    leaves, _, links = tree_from_rows(ledger)
    with ledger.app() as conn:
        checkpoints = conn.execute("SELECT tree_size, root, head_link FROM checkpoints").fetchall()
    assert checkpoints
    for tree_size, root, cp_link in checkpoints:
        check = MerkleFrontier()
        for leaf in leaves[:tree_size]:
            check.append(leaf)
        assert bytes(root) == check.root() and bytes(cp_link) == links[tree_size - 1], tree_size
    assert ledger.cli("verify", "--json").returncode == 0
