"""The producer vectors (schemas/vectors/producer-v1.json): the committed file is what the
generator writes, and the Python producer computes every expected output. (The Java producer
in examples/java-producer runs the same file in its own tests.)"""

from __future__ import annotations

import hashlib
import hmac
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.producers.mask import mask_client_ip
from baldur_audit.producers.pseudonym import pseudonym
from baldur_audit.producers.redact import Redactor, is_sensitive_key
from baldur_audit.producers.trace import parse_traceparent
from baldur_audit.schemas.chain import classify
from baldur_audit.schemas.codec import KNOWN_SCHEMAS
from baldur_audit.schemas.errors import InvalidEvent
from baldur_audit.schemas.event import uuid7
from tests.vectors import producer

VECTORS = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "producer-v1.json"


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


DOC = load()


def test_committed_vectors_equal_the_generator() -> None:
    assert DOC == json.loads(json.dumps(producer.build(), ensure_ascii=False))


def test_vectors_ship_with_the_package() -> None:
    shipped = resources.files("baldur_audit.schemas").joinpath("vectors/producer-v1.json")
    assert json.loads(shipped.read_text(encoding="utf-8")) == DOC


@pytest.mark.parametrize("case", DOC["sensitive_keys"], ids=lambda c: repr(c["key"]))
def test_sensitive_keys(case: dict[str, Any]) -> None:
    assert is_sensitive_key(case["key"]) is case["sensitive"]


@pytest.mark.parametrize("case", DOC["redact_text"], ids=lambda c: c["description"])
def test_redact_text(case: dict[str, Any]) -> None:
    assert Redactor().redact_text(case["text"]) == case["expected"]
    assert Redactor().redact_text(case["expected"]) == case["expected"]  # idempotent


@pytest.mark.parametrize("case", DOC["redact_value"], ids=lambda c: c["description"])
def test_redact_value(case: dict[str, Any]) -> None:
    assert Redactor().redact(case["value"]) == case["expected"]


@pytest.mark.parametrize("case", DOC["redact_keyed"], ids=lambda c: c["description"])
def test_redact_keyed(case: dict[str, Any]) -> None:
    redactor = Redactor(bytes.fromhex(DOC["redaction_key_hex"]))
    assert redactor.redact(case["value"]) == case["expected"]


def test_keyed_fingerprint_is_the_documented_hmac() -> None:
    key = bytes.fromhex(DOC["redaction_key_hex"])
    digest = hmac.new(key, b"baldur-audit/redaction/v1" + b"hunter2", hashlib.sha256).hexdigest()
    first = DOC["redact_keyed"][0]
    assert first["value"] == {"password": "hunter2"}
    assert first["expected"] == {"password": f"[REDACTED:hmac-sha256:{digest[:16]}]"}


@pytest.mark.parametrize("case", DOC["mask_client_ip"], ids=lambda c: c["description"])
def test_mask_client_ip(case: dict[str, Any]) -> None:
    assert mask_client_ip(case["input"]) == case["expected"]


def test_pseudonyms() -> None:
    key = bytes.fromhex(DOC["pseudonym_key_hex"])
    for case in DOC["pseudonyms"]:
        assert pseudonym(key, case["actor_id"]) == case["expected"]
        digest = hmac.new(key, case["actor_id"].encode("utf-8"), hashlib.sha256).hexdigest()
        assert case["expected"] == "psn1-" + digest


@pytest.mark.parametrize("case", DOC["traceparents"], ids=lambda c: c["description"])
def test_traceparents(case: dict[str, Any]) -> None:
    if case["trace_id"] is None:
        with pytest.raises(InvalidEvent):
            parse_traceparent(case["traceparent"])
    else:
        assert parse_traceparent(case["traceparent"]) == case["trace_id"]


@pytest.mark.parametrize("case", DOC["encodings"], ids=lambda c: c["description"])
def test_encodings_seal_as_events_with_their_fields(case: dict[str, Any]) -> None:
    value = bytes.fromhex(case["value_hex"])
    assert value[:10].hex() == "c301" + DOC["schema_fingerprint_hex"]
    outcome = classify(value, KNOWN_SCHEMAS)
    assert str(outcome.event_id) == case["event"]["event_id"]


def test_uuid7() -> None:
    for case in DOC["uuid7"]:
        made = uuid7(case["unix_ms"], bytes.fromhex(case["random_hex"]))
        assert str(made) == case["expected"]
        assert made.version == 7 and made.variant == "specified in RFC 4122"
        assert made.int >> 80 == case["unix_ms"]
