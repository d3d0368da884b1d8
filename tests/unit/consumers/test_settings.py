"""The ledger side's configuration lives in one module: every ``BALDUR_*`` variable it reads is
declared in ``consumers/settings.py``, parsed there when first needed, listed in the README's
configuration table, and kept out of ``repr`` and messages when it is secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from baldur_audit.consumers import settings
from baldur_audit.consumers.settings import VARIABLES, Settings
from baldur_audit.schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
CONSUMERS = ROOT / "consumers"
NAMES = {variable.name for variable in VARIABLES}


def _sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted(CONSUMERS.rglob("*.py"))}


def test_every_variable_the_ledger_side_names_is_declared_in_settings() -> None:
    named = {
        (path.relative_to(ROOT).as_posix(), name)
        for path, text in _sources().items()
        for name in re.findall(r"BALDUR_[A-Z0-9_]+", text)
    }
    assert {name for _, name in named} - NAMES == set(), sorted(named)


def test_only_settings_and_the_cli_edge_read_the_environment() -> None:
    readers = sorted(
        path.relative_to(ROOT).as_posix()
        for path, text in _sources().items()
        if re.search(r"\bos\.(environ|getenv)\b|\bgetenv\(", text)
    )
    assert readers == ["consumers/cli/__init__.py"]  # which hands it to Settings.from_env


def test_the_readme_configuration_table_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Configuration") : readme.index("## CLI reference")]
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(BALDUR_[A-Z0-9_]+)` \| ([^|]*) \|", table, re.MULTILINE)
    }
    assert NAMES - set(rows) == set()
    for variable in VARIABLES:
        flag = rows[variable.name].strip()
        assert flag == (f"`{variable.flag}`" if variable.flag else "—"), variable.name


def test_from_env_keeps_only_the_declared_variables() -> None:
    found = Settings.from_env(
        {
            "BALDUR_CHECKPOINT_EVERY": "5",
            "HOME": "/root",
            "BALDUR_NOT_A_SETTING": "x",
            "XDG_STATE_HOME": "/s",
        },
        topic="t",
        ledger_id=None,
    )
    assert dict(found.environ) == {"BALDUR_CHECKPOINT_EVERY": "5", "XDG_STATE_HOME": "/s"}
    assert found.topic == "t" and found.checkpoint_every == 5
    assert found.state_dir == Path("/s/baldur-audit")
    assert found.effective_ledger_id == "baldur-audit:t"


@pytest.mark.parametrize(
    ("name", "value", "attribute"),
    [
        (settings.EPOCH_ENV, "0", "epoch_entries"),
        (settings.EPOCH_ENV, "1e3", "epoch_entries"),
        (settings.EVERY_ENV, "1.5", "checkpoint_every"),
        (settings.EVERY_ENV, "many", "checkpoint_every"),
        (settings.INTERVAL_ENV, "-1", "checkpoint_interval"),
        (settings.INTERVAL_ENV, "inf", "checkpoint_interval"),
        (settings.ORIGIN_ENV, "has space", "checkpoint_origin"),
    ],
)
def test_a_malformed_variable_fails_when_it_is_asked_for_and_names_itself(
    name: str, value: str, attribute: str
) -> None:
    configured = Settings(environ={name: value})  # building it does not parse anything
    with pytest.raises(ConfigError, match=name):
        getattr(configured, attribute)


def test_secrets_are_listed_for_scrubbing_and_kept_out_of_repr() -> None:
    key, old = "hex:" + "ab" * 32, "raw-old-key-of-thirty-two-bytes-x"
    configured = Settings(
        dsn="postgresql://u:pw-123456@h/d",
        environ={
            settings.SIGNING_KEY_ENV: f" {key} ",
            settings.OLD_KEYS_ENV: f"{old}, {key}",
            settings.CHECKPOINT_KEY_ENV: "hex:" + "cd" * 32,
        },
    )
    found = configured.secrets()
    assert key in found and old in found and "hex:" + "cd" * 32 in found
    shown = repr(configured)
    assert "pw-123456" not in shown and key not in shown and "ab" * 32 not in shown
    assert settings.scrub(f"bad key {key}", *found) == "bad key ***"


def test_defaults_are_the_local_stack() -> None:
    from baldur_audit.schemas import defaults

    plain = Settings()
    assert (plain.bootstrap, plain.topic, plain.dsn, plain.group) == (
        defaults.DEFAULT_BOOTSTRAP,
        defaults.DEFAULT_TOPIC,
        defaults.DEFAULT_DSN,
        defaults.DEFAULT_GROUP,
    )
    assert plain.witness_topic == f"{defaults.DEFAULT_TOPIC}.checkpoints"
    assert plain.epoch_entries is None and plain.checkpoint_dir is None and not plain.production
    assert (plain.checkpoint_every, plain.checkpoint_interval) == (10_000, 30.0)
