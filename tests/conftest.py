"""Shared fixtures and hooks: a fresh topic and database per test on the local stack
(the helpers are in tests/support/stack.py), and how pytest-xdist splits the run.

Endpoints come from the environment (``make env`` prints them), else the local stack's
defaults. Locally a missing service skips the integration tests with a reason; under
``CI=true`` a missing service fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Ledger, fresh_ledger, require_services

#: ``make test`` runs the suite on 2 pytest-xdist workers. Tests that share a private
#: restartable service or an expensive module fixture must run on one worker, in one unit:
#: the fault scenarios (one session-wide private broker and cluster, ports 19092/15432), the
#: spool's private broker (19192), the secured broker and cluster (19392/15532) and the tamper
#: matrix's template ledger.
XDIST_UNITS = {
    "tests/faults/": "faults",
    "tests/integration/test_spool_kafka.py": "spool-broker",
    "tests/integration/test_secured_stack.py": "secured-stack",
    "tests/integration/test_acls.py": "secured-stack",
    "tests/integration/test_tamper_random.py": "tamper-template",
}


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """Load-balance test by test, except for the units above. (Not ``--dist loadgroup``:
        its ``xdist_group`` mark rewrites ``item._nodeid``, which pytest 9 no longer reads.)"""
        from xdist.scheduler import LoadScopeScheduling

        class Units(LoadScopeScheduling):  # biggest units first (loadscopereorder, default)
            def _split_scope(self, nodeid: str) -> str:
                """The scheduling unit of a test: its group, or the test itself."""
                return next(
                    (unit for prefix, unit in XDIST_UNITS.items() if nodeid.startswith(prefix)), nodeid
                )

        return Units(config, log)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh topic, a fresh database (created by the application role), `init` done."""
    require_services()
    with fresh_ledger(tmp_path) as led:
        yield led
