"""The core is pure: no environment read, no clock read (that it loads no driver is checked
with the rest of the import rule in ``test_layers.py``).

A link must be a pure function of the topic (CHAIN.md), so the code that decodes, classifies
and seals must not depend on the host it runs on.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.support.python import run_python

ROOT = Path(__file__).resolve().parents[3]
# The sources that are actually imported (the package may be installed or symlinked).
SCHEMAS = Path(importlib.import_module("baldur_audit.schemas").__file__ or "").resolve().parent
CORE_MODULES = ["errors", "event", "codec", "chain"]


def _core_sources() -> dict[str, str]:
    files = sorted(SCHEMAS.glob("*.py")) + sorted((SCHEMAS / "avro").glob("*.py"))
    assert {p.stem for p in files} >= set(CORE_MODULES)
    return {str(p): p.read_text(encoding="utf-8") for p in files}


FORBIDDEN_CALLS = {
    ("os", "environ"),
    ("os", "getenv"),
    ("os", "putenv"),
    ("os", "urandom"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
    ("random", "random"),
    ("secrets", "token_bytes"),
}
FORBIDDEN_IMPORTS = {
    "os",
    "time",
    "random",
    "secrets",
    "socket",
    "subprocess",
    "confluent_kafka",
    "psycopg",
    "click",
}


def _violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FORBIDDEN_CALLS:
                found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.Import):
            found += [
                f"import {a.name} (line {node.lineno})"
                for a in node.names
                if a.name.split(".")[0] in FORBIDDEN_IMPORTS
            ]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"from {node.module} import … (line {node.lineno})")
            found += [
                f"from {node.module} import {a.name} (line {node.lineno})"
                for a in node.names
                if (node.module.split(".")[-1], a.name) in FORBIDDEN_CALLS
            ]
    return found


def test_core_source_reads_no_environment_and_no_clock() -> None:
    problems = {path: v for path, source in _core_sources().items() if (v := _violations(source))}
    assert problems == {}
    # plain-text backstop for spellings the AST check does not model
    for path, source in _core_sources().items():
        for needle in ("os.environ", "getenv(", "time.time(", "datetime.now(", "utcnow(", "date.today("):
            assert needle not in source, f"{path} contains {needle}"


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ['K']",
        "import time\nt = time.time()",
        "from datetime import datetime\nnow = datetime.now()",
        "from os import environ",
        "import psycopg",
    ],
)
def test_the_source_check_catches_violations(source: str) -> None:
    assert _violations(source)


def test_classification_does_not_depend_on_the_interpreter_environment() -> None:
    """The same bytes must classify the same on every host: PYTHONINTMAXSTRDIGITS (an
    interpreter setting) must not turn an event into a rejected entry or back."""
    probe = """
        import json, uuid
        from datetime import UTC, datetime
        from baldur_audit.schemas.chain import classify
        from baldur_audit.schemas.codec import CURRENT_SCHEMA, KNOWN_SCHEMAS, MAGIC, event_to_record
        import io, fastavro
        from baldur_audit.schemas.event import Actor, ChangeEvent
        event = ChangeEvent(event_id=uuid.UUID(int=1), occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
                            actor=Actor("a"), action="update", target="t", source="api")
        record = event_to_record(event) | {"before": "1" * 1000}
        body = io.BytesIO()
        fastavro.schemaless_writer(body, CURRENT_SCHEMA.parsed, record)
        outcome = classify(MAGIC + CURRENT_SCHEMA.fingerprint + body.getvalue(), KNOWN_SCHEMAS)
        print(json.dumps(outcome.event_id is None))
    """
    default = run_python(probe)
    limited = run_python(probe, {"PYTHONINTMAXSTRDIGITS": "640"})
    assert default == limited
