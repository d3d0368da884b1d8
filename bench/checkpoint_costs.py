"""What checkpoints cost: tree extension per chainer batch, signing, publishing to the
witness topic and storing; `prove` latency (in process and through the CLI); and what the witness
check adds to `verify`. Runs on the local stack in a fresh topic and database, removed afterwards.

    eval "$(deploy/stack.sh env)"; .venv/bin/python -m bench.checkpoint_costs --entries 20000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import harness


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2000, help="leaves per tree extension")
    parser.add_argument("--proofs", type=int, default=200)
    args = parser.parse_args()

    from baldur_audit.consumers.chain_keys import parse_key
    from baldur_audit.consumers.checkpoint_keys import load_checkpoint_keys
    from baldur_audit.consumers.checkpointer import Checkpointer, extend_tree
    from baldur_audit.consumers.evidence.build import build_inclusion_bundle
    from baldur_audit.consumers.evidence.bundle import render
    from baldur_audit.consumers.evidence.check import check_bundle
    from baldur_audit.consumers.kafka.witness import KafkaWitness
    from baldur_audit.consumers.postgres import connect
    from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
    from baldur_audit.consumers.settings import Settings
    from baldur_audit.consumers.verification.verify import verify_ledger
    from baldur_audit.consumers.verification.witness_check import WitnessCheck
    from baldur_audit.schemas.chain import SigningKey

    result: dict[str, Any] = {"entries": args.entries, "batch": args.batch}
    res = harness.Resources()
    with tempfile.TemporaryDirectory() as state_dir:
        led = harness.open_ledger(res, "checkpoints")
        witness_topic = f"{led.topic}.checkpoints"
        res.topics.append(witness_topic)
        try:
            led.env.update(
                {
                    "BALDUR_CHECKPOINT_EVERY": "0",
                    "BALDUR_CHECKPOINT_INTERVAL": "0",
                    "BALDUR_STATE_DIR": state_dir,
                }
            )
            harness.produce_values(led.topic, harness.encode_events(args.entries))
            harness.run_cli(led, "chain", "--until-idle", "2")
            key = SigningKey.derive(parse_key(harness.KEY_SETTING))
            chain_keys = {key.key_id: key}
            settings = Settings.from_env(led.env, bootstrap=harness.BOOTSTRAP, topic=led.topic, dsn=led.dsn)
            keys = load_checkpoint_keys(settings, signing=True)

            conn = connect(led.dsn, autocommit=True)
            per_batch = []
            for size in range(args.batch, args.entries + 1, args.batch):
                started = time.perf_counter()
                extend_tree(conn, keys=chain_keys, up_to=size)
                per_batch.append(time.perf_counter() - started)
            result["tree_extend_per_batch_ms"] = _median_ms(per_batch)
            result["tree_leaves_per_second"] = round(args.batch / statistics.median(per_batch))

            witness = KafkaWitness(bootstrap=harness.BOOTSTRAP, topic=witness_topic)
            checkpointer = Checkpointer(
                dsn=led.dsn, keys=keys, chain_keys=chain_keys, witnesses=[witness], every=0, interval=0
            )
            made = [checkpointer.checkpoint() for _ in range(12)][2:]  # topic creation aside
            result["checkpoint_up_to_date_ms"] = _median_ms([m.seconds for m in made])
            checkpointer.close()

            store = PostgresLedgerStore.connect(led.dsn)
            seqs = [random.randint(1, args.entries) for _ in range(args.proofs)]  # noqa: S311
            timings, sizes = [], []
            for seq in seqs:
                started = time.perf_counter()
                with store.snapshot() as snap:
                    bundle = build_inclusion_bundle(snap, seq)
                text = render(bundle)
                timings.append(time.perf_counter() - started)
                sizes.append(len(text))
            result["prove_in_process_ms"] = _median_ms(timings)
            result["bundle_bytes_median"] = int(statistics.median(sizes))
            started = time.perf_counter()
            check_bundle(text, keys.verifiers)
            result["check_bundle_ms"] = round((time.perf_counter() - started) * 1000, 2)
            cli_times = []
            for seq in seqs[:5]:
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "baldur_audit.consumers", "prove", str(seq)],
                    env=led.env,
                    capture_output=True,
                    check=True,
                    timeout=120,
                )
                cli_times.append(time.perf_counter() - started)
            result["prove_cli_ms"] = _median_ms(cli_times)

            plain, witnessed, checks = [], [], []
            for _ in range(3):
                started = time.perf_counter()
                report = verify_ledger(store, chain_keys)
                plain.append(time.perf_counter() - started)
                check = WitnessCheck(
                    verifiers=keys.verifiers,
                    origin=keys.origin,
                    logs=[KafkaWitness(bootstrap=harness.BOOTSTRAP, topic=witness_topic)],
                )
                started = time.perf_counter()
                report = verify_ledger(store, chain_keys, witness=check)
                witnessed.append(time.perf_counter() - started)
                assert report.intact and report.witness["status"] == "matched", report.witness
                check = WitnessCheck(
                    verifiers=keys.verifiers,
                    origin=keys.origin,
                    logs=[KafkaWitness(bootstrap=harness.BOOTSTRAP, topic=witness_topic)],
                )
                started = time.perf_counter()
                check.prepare()
                with store.snapshot() as snap:
                    check.check(snap, meta=store.read_meta(), first_break=None)
                checks.append(time.perf_counter() - started)
            result["verify_without_witness_ms"] = _median_ms(plain)
            result["verify_with_witness_ms"] = _median_ms(witnessed)
            result["witness_check_alone_ms"] = _median_ms(checks)
            store.close()
            conn.close()
        finally:
            res.cleanup()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
