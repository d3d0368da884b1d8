"""Producer content made safe to show: hidden characters as markers, long values cut, and a
before → after diff of nested JSON that is bounded in depth and rows."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from baldur_audit.consumers.web.render import DiffRow, clip, compact_json, json_diff, pretty_json, segments


def test_bidi_zero_width_and_control_characters_become_markers() -> None:
    text = "a\u202eb\u200bc\u2066d\x07e\ufeff\U000e0001\nf\tg"
    assert segments(text) == [
        (False, "a"),
        (True, "\\u202e"),
        (False, "b"),
        (True, "\\u200b"),
        (False, "c"),
        (True, "\\u2066"),
        (False, "d"),
        (True, "\\u0007"),
        (False, "e"),
        (True, "\\ufeff"),
        (True, "\\U000e0001"),
        (False, "\nf\tg"),  # newlines and tabs stay
    ]
    assert segments("<script>&amp;") == [(False, "<script>&amp;")]  # escaping is the template's job


@given(st.text())
def test_markers_keep_every_visible_character(text: str) -> None:
    rebuilt = "".join(part for marker, part in segments(text) if not marker)
    hidden = [part for marker, part in segments(text) if marker]
    assert len(rebuilt) + len(hidden) == len(text)
    assert all(part.startswith("\\u") or part.startswith("\\U") for part in hidden)


def test_clip() -> None:
    assert clip("abc", 5) == ("abc", 0)
    assert clip("a" * 10, 4) == ("aaaa", 6)


def test_a_nested_diff_path_by_path() -> None:
    before = {"rules": {"velocity": {"max": 5, "window": "1m"}, "countries": ["DE", "FR"]}, "gone": 1}
    after = {
        "rules": {"velocity": {"max": 50, "window": "1m"}, "countries": ["DE", "FR", "US"]},
        "new key": None,
    }
    rows, cut = json_diff(before, after)
    assert not cut
    assert rows == [
        DiffRow("rules.velocity.max", "changed", "5", "50"),
        DiffRow("rules.velocity.window", "same", '"1m"', '"1m"'),
        DiffRow("rules.countries[0]", "same", '"DE"', '"DE"'),
        DiffRow("rules.countries[1]", "same", '"FR"', '"FR"'),
        DiffRow("rules.countries[2]", "added", None, '"US"'),
        DiffRow("gone", "removed", "1", None),
        DiffRow('["new key"]', "added", None, "null"),
    ]


def test_whole_values_created_deleted_or_of_another_shape() -> None:
    assert json_diff(None, {"a": 1})[0] == [DiffRow("(value)", "added", None, '{"a": 1}')]
    assert json_diff([1], None)[0] == [DiffRow("(value)", "removed", "[1]", None)]
    assert json_diff({"a": 1}, [1])[0] == [DiffRow("(value)", "changed", '{"a": 1}', "[1]")]
    assert json_diff(1, 1.0)[0] == [DiffRow("(value)", "changed", "1", "1.0")]
    assert json_diff(True, 1)[0][0].change == "changed"
    assert json_diff(None, None)[0] == [DiffRow("(value)", "same", "null", "null")]


def test_depth_and_rows_are_bounded_without_recursion_errors() -> None:
    deep: object = "bottom"
    for _ in range(5000):
        deep = {"k": deep}
    rows, cut = json_diff(deep, {"k": 1})
    assert len(rows) == 1 and rows[0].path == "k" and not cut
    assert len(rows[0].before or "") < 1000  # the subtree beyond the bound is written as "…"
    wide_before = {f"k{i}": i for i in range(2000)}
    wide_after = {f"k{i}": i + 1 for i in range(2000)}
    rows, cut = json_diff(wide_before, wide_after, max_rows=100)
    assert len(rows) == 100 and cut
    nested = json_diff({"a": {"b": {"c": 1}}}, {"a": {"b": {"c": 2}}}, max_depth=1)[0]
    assert nested == [DiffRow("a", "changed", '{"b": {"c": 1}}', '{"b": {"c": 2}}')]
    assert "…" in pretty_json(deep) and json.loads(compact_json({"x": "y"})) == {"x": "y"}
