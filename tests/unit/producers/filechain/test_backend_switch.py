"""Which backend ``AuditTrail.from_env`` picks: the file chain unless the distributed hash
chain is switched on; a Redis URL or a DSN alone switch nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from baldur_audit.consumers.verification.file_chain import verify_file_chain
from baldur_audit.producers import AuditTrail
from baldur_audit.producers.signing_key import dev_signing_key
from baldur_audit.schemas.errors import ConfigError


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "false"},
        {"BALDUR_REDIS_URL": "redis://127.0.0.1:1/0"},
        {"BALDUR_SQL_DSN": "postgresql://nobody@127.0.0.1:1/none"},
    ],
)
def test_the_file_chain_is_the_default(tmp_path: Path, extra: dict[str, str]) -> None:
    env = {"BALDUR_AUDIT_ENABLED": "true", "BALDUR_STATE_DIR": str(tmp_path), **extra}
    with AuditTrail.from_env(env) as trail:
        trail.record(actor="alice", action="update", target="svc.timeout", after={"s": 30})
        assert trail.stats.delivered == 1 and trail.flush() == 0
    key = dev_signing_key(tmp_path)  # the development key the trail generated and used
    report = verify_file_chain(tmp_path / "chain", {key.key_id: key})
    assert report.intact and report.report.entries == 1


def test_the_file_chain_settings_are_checked(tmp_path: Path) -> None:
    env = {"BALDUR_AUDIT_ENABLED": "true", "BALDUR_STATE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="BALDUR_AUDIT_FILE_SYNC"):
        AuditTrail.from_env({**env, "BALDUR_AUDIT_FILE_SYNC": "sometimes"})
    with pytest.raises(ConfigError, match="BALDUR_AUDIT_RETENTION"):
        AuditTrail.from_env({**env, "BALDUR_AUDIT_RETENTION": "forever"})
    with pytest.raises(ConfigError, match="production"):
        AuditTrail.from_env({**env, "BALDUR_ENV": "production"})
    with pytest.raises(ConfigError, match="BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN"):
        AuditTrail.from_env({**env, "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "maybe"})
    custom = tmp_path / "elsewhere"
    with AuditTrail.from_env(
        {**env, "BALDUR_AUDIT_FILE_DIR": str(custom), "BALDUR_AUDIT_FILE_SYNC": "group"}
    ) as trail:
        trail.record(actor="alice", action="update", target="svc.timeout")
    assert any(name.endswith(".bfc") for name in (p.name for p in custom.iterdir()))
