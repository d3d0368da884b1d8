"""How verify compares a stored JSON column with the sealed payload's value."""

from decimal import Decimal

import pytest

from baldur_audit.consumers.verify import exact_json_loads, json_equal


@pytest.mark.parametrize(("stored", "sealed"), [
    ("100000000000000000000000", "1e23"),
    ("1", "1.0"),
    ('{"a": [1, true, null, "x"]}', '{"a":[1,true,null,"x"]}'),
    ("0.1", "1e-1"),
])
def test_equal_values(stored: str, sealed: str) -> None:
    assert json_equal(exact_json_loads(stored), exact_json_loads(sealed))


@pytest.mark.parametrize(("stored", "sealed"), [
    ("1", "true"), ("0", "false"), ('"1"', "1"), ("[1, 2]", "[2, 1]"),
    ('{"a": 1}', '{"a": 1, "b": 2}'), ("null", "0"), ("1.0000000000000002", "1"),
    ('{"a": {"b": true}}', '{"a": {"b": 1}}'),
])
def test_different_values(stored: str, sealed: str) -> None:
    assert not json_equal(exact_json_loads(stored), exact_json_loads(sealed))


def test_numbers_load_exactly() -> None:
    assert exact_json_loads("1e23") == Decimal("1e23")
    assert isinstance(exact_json_loads("7"), Decimal)
