"""The chainer's chain keys: consumers/chain_keys.py (old keys, the forward-secure ratchet's state
file) and the epoch setting (no services). The pure key schedule: tests/unit/schemas/test_keys.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from baldur_audit.consumers import chain_keys as keys_config
from baldur_audit.consumers.settings import EPOCH_ENV, Settings
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.errors import ConfigError

KEY_A = SigningKey.derive(b"a" * 32)


def test_old_keys_parse_without_echoing() -> None:
    keys = keys_config.parse_old_keys(f" hex:{'61' * 32} , base64:{'Y' * 43}=,")
    assert [k.key_id for k in keys][0] == KEY_A.key_id and len(keys) == 2
    with pytest.raises(ConfigError) as caught:
        keys_config.parse_old_keys("hex:" + "61" * 32 + ",hex:zz-secret-zz")
    assert "zz-secret-zz" not in str(caught.value) and "item 2" in str(caught.value)
    assert Settings().epoch_entries is None
    assert Settings(environ={EPOCH_ENV: " 100 "}).epoch_entries == 100
    for bad in ("0", "-1", "1e3", "x"):
        with pytest.raises(ConfigError):
            _ = Settings(environ={EPOCH_ENV: bad}).epoch_entries


def test_ratchet_state_file_holds_only_the_committed_epoch_key(tmp_path: Path) -> None:
    path = tmp_path / "state" / keys_config.RATCHET_FILE
    chain_keys = keys_config.ForwardSecureChainKeys.open(path, epoch_n=2, initial=KEY_A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert chain_keys.key_for(1) == KEY_A
    # a batch crossing into epoch 1 that is not committed: the state file keeps epoch 0
    k1 = chain_keys.key_for(3)
    assert KEY_A.secret.hex() in path.read_text() and chain_keys.epoch == 0
    chain_keys.committed(2)  # entries 1-2 committed: the next entry (3) is in epoch 1
    text = path.read_text()
    assert KEY_A.secret.hex() not in text and k1.secret.hex() in text
    assert json.loads(text)["epoch"] == 1 and not list(path.parent.glob("*.tmp"))
    with pytest.raises(ConfigError, match="erased"):
        chain_keys.key_for(2)
    # a restarted chainer (no initial key any more) resumes from the file alone
    again = keys_config.ForwardSecureChainKeys.open(path, epoch_n=2, initial=None)
    assert again.key_for(3) == k1 and again.initial_key_id == KEY_A.key_id
    with pytest.raises(ConfigError, match="entries per epoch"):
        keys_config.ForwardSecureChainKeys.open(path, epoch_n=3, initial=None)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="malformed") as caught:
        keys_config.ForwardSecureChainKeys.open(path, epoch_n=2, initial=None)
    assert "not json" not in str(caught.value)


def test_failed_commit_can_be_resealed(tmp_path: Path) -> None:
    chain_keys = keys_config.ForwardSecureChainKeys.open(tmp_path / "r.json", epoch_n=2, initial=KEY_A)
    assert chain_keys.key_for(4) != KEY_A  # sealed ahead into epoch 1, never committed
    assert chain_keys.key_for(1) == KEY_A  # the chainer recovers from the stored head
