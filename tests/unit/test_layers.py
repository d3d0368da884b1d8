"""The architecture's one rule, checked: imports point down only.

    schemas  <-  producers  <-  consumers.{settings, files, chain_keys, checkpoint_keys, times}
                            <-  consumers.{postgres, kafka, metrics}   (the adapters)
                            <-  consumers.{chainer, checkpointer, witnesses, retention,
                                           verification, evidence}
                            <-  consumers.web                          (the viewer and its API)
                            <-  consumers.cli                          (imported by nobody)

Each technology has one boundary: only ``consumers/postgres/`` imports psycopg, only
``consumers/kafka/`` and ``producers/`` import confluent_kafka, only ``consumers/metrics/`` and
``producers/metrics.py`` (optionally) import prometheus_client, only ``consumers/cli/`` imports
click, only ``consumers/web/`` imports starlette, uvicorn and jinja2. There is no import cycle
inside the package, and what an auditor runs offline (``consumers/evidence/check.py`` and
``export_check.py``) and the pure core load no driver when imported. Every import counts,
also one inside a function or under ``TYPE_CHECKING``: that is where cycles hide.
"""

from __future__ import annotations

import ast
import json
import os
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.python import run_python

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "schemas": "baldur_audit.schemas",
    "producers": "baldur_audit.producers",
    "consumers": "baldur_audit.consumers",
}
C = "baldur_audit.consumers"

#: The floors, bottom first: a module may import its own floor and the floors below.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("baldur_audit.schemas",),
    ("baldur_audit.producers",),
    (f"{C}.settings", f"{C}.files", f"{C}.chain_keys", f"{C}.checkpoint_keys", f"{C}.times"),
    (f"{C}.postgres", f"{C}.kafka", f"{C}.metrics"),
    (
        f"{C}.chainer",
        f"{C}.checkpointer",
        f"{C}.witnesses",
        f"{C}.retention",
        f"{C}.retention_schedule",
        f"{C}.verification",
        f"{C}.evidence",
    ),
    (f"{C}.web",),  # the viewer and its API: reads through postgres/, evidence/ and verification
    (f"{C}.cli", f"{C}.__main__"),
)
#: Third-party packages and the only places that may import them.
BOUNDARIES = {
    "psycopg": (f"{C}.postgres",),
    "psycopg_binary": (f"{C}.postgres",),
    "confluent_kafka": (f"{C}.kafka", "baldur_audit.producers"),
    "prometheus_client": (f"{C}.metrics", "baldur_audit.producers.metrics"),
    "click": (f"{C}.cli",),
    "starlette": (f"{C}.web",),
    "uvicorn": (f"{C}.web",),
    "jinja2": (f"{C}.web",),
    "redis": ("baldur_audit.producers.buffer",),
    "baldur_audit_native": ("baldur_audit.schemas.accel",),
}
DRIVERS = ("psycopg", "psycopg_binary", "confluent_kafka", "prometheus_client", "click")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def floor_of(module: str) -> int | None:
    """The floor of a package module (None: the package roots, which hold no code)."""
    for level, prefixes in enumerate(FLOORS):
        if any(_within(module, prefix) for prefix in prefixes):
            return level
    return None


@dataclass(frozen=True)
class Import:
    """``importer`` imports ``target`` (a module name) at ``line``."""

    importer: str
    target: str
    line: int


def modules_of(tree: Mapping[str, Path]) -> dict[str, Path]:
    """Module name → source file for every ``.py`` file under the given package folders."""
    found: dict[str, Path] = {}
    for package, folder in tree.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports_of(name: str, path: Path, known: Iterable[str]) -> list[Import]:
    """Every import in one module (anywhere in it), relative ones resolved; ``from X import
    y`` counts ``X.y`` when that is a module of the package."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(Import(name, module, node.lineno))
            found += [
                Import(name, f"{module}.{alias.name}", node.lineno)
                for alias in node.names
                if f"{module}.{alias.name}" in known
            ]
    return found


def violations(tree: Mapping[str, Path]) -> list[str]:
    """Every way the tree breaks the rule, one line each (empty: it keeps it)."""
    modules = modules_of(tree)
    root = Path(os.path.commonpath([str(folder.parent) for folder in tree.values()]))
    graph: dict[str, set[str]] = {name: set() for name in modules}
    problems = []
    for name, path in modules.items():
        for imp in imports_of(name, path, modules):
            if imp.target == name:  # a package's own ``from . import x`` names itself
                continue
            where = f"{path.relative_to(root)}:{imp.line}"
            top = imp.target.split(".")[0]
            if top in BOUNDARIES and not any(_within(name, p) for p in BOUNDARIES[top]):
                problems.append(
                    f"{where}: {name} imports {top}, which only {', '.join(BOUNDARIES[top])} may import"
                )
            if imp.target not in modules:
                continue
            graph[name].add(imp.target)
            mine, theirs = floor_of(name), floor_of(imp.target)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(
                    f"{where}: {name} (floor {mine}) imports {imp.target} "
                    f"(floor {theirs}): imports point down only"
                )
            if _within(imp.target, f"{C}.cli") and not (_within(name, f"{C}.cli") or name == f"{C}.__main__"):
                problems.append(f"{where}: {name} imports the CLI, which nothing imports")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-import),
    found with Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def source_tree() -> dict[str, Path]:
    return {package: ROOT / folder for folder, package in PACKAGES.items()}


# -- the package keeps the rule ------------------------------------------------------------------


def test_the_package_keeps_the_import_rule() -> None:
    assert violations(source_tree()) == []


#: The CLI's shared modules; a command module imports these, never another command module.
CLI_SHARED = (f"{C}.cli.app", f"{C}.cli.options", f"{C}.cli.logs")


def test_no_command_module_imports_another() -> None:
    """Each command module stands alone on the CLI's shared modules (hatch's cli/ layout)."""
    modules = modules_of(source_tree())
    commands = [name for name in modules if name.startswith(f"{C}.cli.") and name not in CLI_SHARED]
    crossing = [
        f"{found.importer}:{found.line} imports {found.target}"
        for name in commands
        for found in imports_of(name, modules[name], modules)
        if found.target in commands and found.target != name
    ]
    assert crossing == []


def test_every_consumers_module_has_a_floor() -> None:
    unplaced = [
        name for name in modules_of(source_tree()) if floor_of(name) is None and name not in PACKAGES.values()
    ]
    assert unplaced == []


# -- the check can fail ----------------------------------------------------------------------------


def _fake_tree(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in {
        "schemas/__init__.py": "",
        "producers/__init__.py": "",
        "consumers/__init__.py": "",
        **files,
    }.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return {package: tmp_path / folder for folder, package in PACKAGES.items()}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "consumers/verification/__init__.py": "",
                "consumers/verification/verify.py": "import psycopg\n",
            },
            "imports psycopg, which only baldur_audit.consumers.postgres may import",
        ),
        (
            {"consumers/chainer.py": "def f():\n    from confluent_kafka import Consumer\n"},
            "imports confluent_kafka",
        ),
        ({"producers/trail.py": "import click\n"}, "imports click"),
        (
            {
                "consumers/settings.py": "from .postgres import ledger\n",
                "consumers/postgres/__init__.py": "",
                "consumers/postgres/ledger.py": "",
            },
            "(floor 2) imports baldur_audit.consumers.postgres.ledger (floor 3)",
        ),
        (
            {"schemas/chain.py": "from baldur_audit.producers import trail\n", "producers/trail.py": ""},
            "(floor 0) imports baldur_audit.producers.trail (floor 1)",
        ),
        (
            {
                "consumers/retention.py": "from .cli import app\n",
                "consumers/cli/__init__.py": "",
                "consumers/cli/app.py": "",
            },
            "imports the CLI",
        ),
        (
            {
                "consumers/cli/__init__.py": "",
                "consumers/cli/app.py": "from . import ledger\n",
                "consumers/cli/ledger.py": "from .app import App\n",
            },
            "import cycle: ",
        ),
        (
            {
                "consumers/kafka/__init__.py": "",
                "consumers/kafka/source.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from ..chainer import Chainer\n",
                "consumers/chainer.py": "",
            },
            "(floor 3) imports baldur_audit.consumers.chainer (floor 4)",
        ),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = violations(_fake_tree(tmp_path, files))
    assert any(expected in problem for problem in found), found


def test_a_clean_fake_tree_passes(tmp_path: Path) -> None:
    tree = _fake_tree(
        tmp_path,
        {
            "consumers/postgres/__init__.py": "import psycopg\nfrom ..settings import scrub\n",
            "consumers/settings.py": "from baldur_audit.schemas import errors\n",
            "schemas/errors.py": "",
            "consumers/cli/__init__.py": "import click\nfrom . import app\n",
            "consumers/cli/app.py": "from ..postgres import connect\n",
            "consumers/__main__.py": "from .cli import main\n",
        },
    )
    assert violations(tree) == []


# -- what loads at run time ------------------------------------------------------------------------


def _loaded_after_import(module: str) -> list[str]:
    """The drivers and package modules that importing ``module`` loads, in a fresh process."""
    code = f"""
        import json, sys
        import {module}
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split(".")[0] in {list(DRIVERS)!r}
                                or m.startswith("baldur_audit."))))
    """
    return list(json.loads(run_python(code)))


def _schemas_modules() -> list[str]:
    return [name for name in modules_of(source_tree()) if _within(name, "baldur_audit.schemas")]


@pytest.mark.parametrize("module", _schemas_modules())
def test_the_pure_core_loads_no_driver_and_nothing_above_it(module: str) -> None:
    loaded = _loaded_after_import(module)
    assert [m for m in loaded if not _within(m, "baldur_audit.schemas") and m != "baldur_audit"] == []


@pytest.mark.parametrize(
    ("checker", "formats"),
    [("check", ("bundle",)), ("export_check", ("bundle", "export_format"))],
)
def test_the_offline_checkers_load_the_core_and_their_formats_only(
    checker: str, formats: tuple[str, ...]
) -> None:
    """What an auditor runs offline (check-proof, check-export) loads no driver and no adapter."""
    loaded = _loaded_after_import(f"{C}.evidence.{checker}")
    allowed = {"baldur_audit", C, f"{C}.evidence", *(f"{C}.evidence.{name}" for name in (*formats, checker))}
    assert [m for m in loaded if m not in allowed and not _within(m, "baldur_audit.schemas")] == []


def test_the_producer_library_needs_neither_psycopg_nor_click() -> None:
    loaded = _loaded_after_import("baldur_audit.producers")
    assert [
        m for m in loaded if m.split(".")[0] in ("psycopg", "psycopg_binary", "click") or _within(m, C)
    ] == []


def test_the_runtime_probe_sees_a_driver() -> None:
    """Guards the probes above against passing vacuously: a driver import is visible."""
    assert "click" in _loaded_after_import("click")
