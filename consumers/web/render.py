"""Producer content made safe to show: every value the viewer displays came from a producer
and may be hostile. Pure helpers, no framework: the templates escape (Jinja2 autoescape);
these make the invisible visible and the huge small.

- :func:`segments` splits text into plain runs and *markers*: bidirectional overrides,
  zero-width and other control or format characters are shown as ``\\u202e`` instead of
  acting on the page.
- :func:`clip` cuts long text (the page links to the whole value).
- :func:`json_diff` flattens two nested JSON values into before → after rows, path by path,
  bounded in depth and in rows.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DiffRow", "clip", "compact_json", "json_diff", "segments"]

#: Characters shown as markers although unicodedata does not class them Cc/Cf/Zl/Zp.
_ALWAYS_MARKED = frozenset("\u115f\u1160\u3164\uffa0\u2028\u2029")
MAX_SHOWN = 2000  # characters of a value shown inline
MAX_DEPTH = 12  # JSON levels a diff descends; deeper subtrees are compared whole
MAX_ROWS = 500  # rows of a diff shown


def _marked(char: str) -> bool:
    if char in "\n\t":
        return False
    return char in _ALWAYS_MARKED or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Cn")


def segments(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_marker, part) runs: markers spell a hidden character as ``\\uXXXX``."""
    found: list[tuple[bool, str]] = []
    plain: list[str] = []
    for char in text:
        if _marked(char):
            if plain:
                found.append((False, "".join(plain)))
                plain = []
            code = ord(char)
            found.append((True, f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"))
        else:
            plain.append(char)
    if plain:
        found.append((False, "".join(plain)))
    return found


def clip(text: str, limit: int = MAX_SHOWN) -> tuple[str, int]:
    """The first ``limit`` characters of ``text`` and how many were left out."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


MAX_JSON_LEVELS = 100  # levels written out; deeper subtrees become "…" (no RecursionError)


def _bounded(value: Any, levels: int) -> Any:
    """``value`` with every subtree below ``levels`` levels replaced by ``"…"``."""
    if not isinstance(value, (dict, list)):
        return value
    if levels <= 0:
        return "…"
    if isinstance(value, dict):
        return {str(k): _bounded(v, levels - 1) for k, v in value.items()}
    return [_bounded(v, levels - 1) for v in value]


def compact_json(value: Any) -> str:
    """One line of JSON, keys sorted, non-ASCII kept (markers make hidden characters visible)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(
        _bounded(value, MAX_JSON_LEVELS), ensure_ascii=False, sort_keys=True, separators=(", ", ": ")
    )


def pretty_json(value: Any) -> str:
    """Indented JSON, keys sorted (for a whole value on its own page)."""
    return json.dumps(_bounded(value, MAX_JSON_LEVELS), ensure_ascii=False, sort_keys=True, indent=2)


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One path of a before → after comparison: ``change`` is added, removed, changed or same."""

    path: str
    change: str
    before: str | None
    after: str | None


_MISSING = object()


def _key_path(parent: str, key: str) -> str:
    if key.isidentifier() and key.isascii():
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]] | None:
    if isinstance(value, dict):
        return ((_key_path(path, str(k)), v) for k, v in value.items())
    if isinstance(value, list):
        return ((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def json_diff(
    before: Any, after: Any, *, max_depth: int = MAX_DEPTH, max_rows: int = MAX_ROWS
) -> tuple[list[DiffRow], bool]:
    """Rows comparing ``before`` with ``after`` (None stands for no value), and whether rows
    were left out. Objects are compared key by key and lists index by index down to
    ``max_depth`` levels; iterative, so no nesting raises RecursionError."""
    rows: list[DiffRow] = []
    stack: list[tuple[str, Any, Any, int]] = [("", before, after, 0)]
    while stack:
        path, old, new, depth = stack.pop()
        if len(rows) >= max_rows:
            return rows, True
        shape_old = type(old) if isinstance(old, (dict, list)) else None
        shape_new = type(new) if isinstance(new, (dict, list)) else None
        if depth < max_depth and shape_old is not None and shape_old is shape_new and old != new:
            olds = dict(_children(old, path) or ())
            news = dict(_children(new, path) or ())
            keys = list(olds) + [k for k in news if k not in olds]
            for key in reversed(keys):  # the stack pops them in order
                stack.append((key, olds.get(key, _MISSING), news.get(key, _MISSING), depth + 1))
            continue
        label = path or "(value)"
        if old is _MISSING or (old is None and depth == 0 and new is not None):
            rows.append(DiffRow(label, "added", None, compact_json(new)))
        elif new is _MISSING or (new is None and depth == 0 and old is not None):
            rows.append(DiffRow(label, "removed", compact_json(old), None))
        elif old == new and type(old) is type(new):
            rows.append(DiffRow(label, "same", compact_json(old), compact_json(new)))
        else:
            rows.append(DiffRow(label, "changed", compact_json(old), compact_json(new)))
    return rows, False
