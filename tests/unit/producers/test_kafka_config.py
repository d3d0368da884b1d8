"""The shared Kafka client configuration file: its format, what it refuses, and that errors
never echo a line (a line may hold a password)."""

from __future__ import annotations

from pathlib import Path

import confluent_kafka
import pytest

from baldur_audit.producers.kafka_config import (
    client_config_secrets,
    load_client_config,
    parse_client_config,
)
from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.errors import ConfigError

SECRET = "s3cr3t-Pa55w0rd!"


def test_a_properties_file_with_comments_and_both_separators_is_read(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# SASL over TLS\n"
        "! also a comment\n"
        "\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism: SCRAM-SHA-512\n"
        f"sasl.password={SECRET}=with=equals\n"
        "ssl.ca.location=/etc/ca.pem\n"
    )
    assert load_client_config(path) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": f"{SECRET}=with=equals",
        "ssl.ca.location": "/etc/ca.pem",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"just a line with {SECRET}\n", "line 1: expected name=value"),
        (f"security.protocol=SSL\nbootstrap.servers={SECRET}:9092\n", "line 2: bootstrap.servers is set"),
        ("group.id=mine\n", "group.id is set by baldur-audit itself"),
        ("acks=1\n", "acks is set by baldur-audit itself"),
        (f"sasl.password={SECRET}\nsasl.password=other\n", "line 2: sasl.password is set twice"),
        (f"bad name={SECRET}\n", "line 1: not a setting name"),
    ],
)
def test_bad_lines_are_refused_by_number_without_their_text(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_client_config(text, where="client.properties")
    assert message in str(raised.value)
    assert SECRET not in str(raised.value)


def test_an_unreadable_or_binary_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_client_config(tmp_path / "missing.properties")
    binary = tmp_path / "binary.properties"
    binary.write_bytes(b"sasl.password=\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_client_config(binary)


def test_secret_values_are_listed_for_scrubbing() -> None:
    settings = {
        "sasl.password": SECRET,
        "ssl.key.password": "keypass-1234",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
        "sasl.oauthbearer.client.secret": "oauth-secret",
        "security.protocol": "SASL_SSL",
        "sasl.username": "chainer",
    }
    found = set(client_config_secrets(settings))
    assert {SECRET, "keypass-1234", "-----BEGIN PRIVATE KEY-----", "oauth-secret"} <= found
    assert "SASL_SSL" not in found


def test_the_producer_library_reads_the_file_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text("socket.keepalive.enable=true\nclient.dns.lookup=use_all_dns_ips\n")
    seen: list[dict[str, object]] = []

    def capture(settings: dict[str, object]) -> confluent_kafka.Producer:
        seen.append(settings)
        return confluent_kafka.Producer(settings)

    trail = AuditTrail.from_env(
        {
            "BALDUR_AUDIT_ENABLED": "true",
            "BALDUR_AUDIT_DURABILITY": "memory",
            "BALDUR_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "BALDUR_KAFKA_CONFIG": str(path),
            "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
        },
        producer_factory=capture,
    )
    trail.close(0.1)
    assert seen and seen[0]["socket.keepalive.enable"] == "true"
    assert seen[0]["client.dns.lookup"] == "use_all_dns_ips"
    assert seen[0]["enable.idempotence"] is True  # the trail's own settings stay


def test_the_producer_library_refuses_a_bad_file_with_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text("acks=0\n")
    with pytest.raises(ConfigError, match="acks is set by baldur-audit itself"):
        AuditTrail.from_env({"BALDUR_AUDIT_ENABLED": "true", "BALDUR_KAFKA_CONFIG": str(path)})
