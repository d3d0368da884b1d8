"""Who may read the viewer: stored token hashes, a trusted proxy's header, loopback only
without either, and the configurations refused at start-up."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from baldur_audit.consumers.web.access import Access, bearer, hash_token, is_loopback, parse_tokens
from baldur_audit.schemas.errors import ConfigError

ANY = ".".join(["0"] * 4)  # every interface (a host the policy is asked about, never bound)


def test_a_stored_hash_is_what_sha256sum_prints() -> None:
    line = hash_token("correct horse")
    shell = subprocess.run(["sha256sum"], input=b"correct horse", capture_output=True, check=True)
    assert line == "sha256:" + shell.stdout.split()[0].decode()
    assert line == "sha256:" + hashlib.sha256(b"correct horse").hexdigest()


def test_token_lines_with_names_comments_and_commas() -> None:
    text = f"# viewers\n{hash_token('a')} alice\n\n{hash_token('b')}, {hash_token('c')} ci-bot # robot\n"
    found = parse_tokens(text, "tokens.txt")
    assert [t.name for t in found] == ["alice", f"token:{hash_token('b')[7:15]}", "ci-bot"]
    policy = Access.build(tokens=found, header=None, proxies=(), host=ANY)
    assert policy.who_by_token("a") == "alice" and policy.who_by_token("c") == "ci-bot"
    assert policy.who_by_token("d") is None and policy.who_by_token("") is None
    assert policy.who_by_token("a" * 10_000) is None


@pytest.mark.parametrize("line", ["hunter2", "sha256:abc", "md5:" + "0" * 64, hash_token("x") + " bad name!"])
def test_a_malformed_token_line_is_named_but_never_echoed(line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tokens(f"{hash_token('ok')}\n{line}\n", "tokens.txt")
    assert "tokens.txt: item 2" in str(caught.value)
    assert line not in str(caught.value)


def test_the_header_counts_only_from_the_trusted_proxies() -> None:
    policy = Access.build(tokens=None, header="X-Forwarded-User", proxies=["10.0.3.7", "fd00::/8"], host=ANY)
    assert policy.mode == "header" and policy.header == "x-forwarded-user"
    assert policy.who_by_header("10.0.3.7", "dana@example.com") == "dana@example.com"
    assert policy.who_by_header("fd00::1", "dana") == "dana"
    assert policy.who_by_header("10.0.3.8", "dana") is None
    assert policy.who_by_header("10.0.3.7", None) is None
    assert policy.who_by_header("10.0.3.7", "two words") is None  # not an identity
    assert policy.who_by_header("10.0.3.7", "x" * 201) is None
    assert policy.trusts("10.0.3.7") and not policy.trusts("127.0.0.1") and not policy.trusts(None)


@pytest.mark.parametrize(
    ("tokens", "header", "proxies", "host", "says"),
    [
        ([], "X-User", ["10.0.0.1"], "127.0.0.1", "not both"),
        (None, "X-User", [], "127.0.0.1", "needs --trusted-proxy"),
        (None, None, ["10.0.0.1"], "127.0.0.1", "needs --trusted-header"),
        (None, "X User", ["10.0.0.1"], "127.0.0.1", "header name"),
        (None, "X-User", ["10.0.0.999"], "127.0.0.1", "not an address or CIDR"),
        ([], None, [], "127.0.0.1", "holds no token"),
        (None, None, [], ANY, "refusing to serve on 0.0.0.0"),
        (None, None, [], "10.1.2.3", "refusing to serve"),
        (None, None, [], "example.com", "refusing to serve"),
    ],
)
def test_ambiguous_or_unsafe_access_is_refused(
    tokens: list | None, header: str | None, proxies: list[str], host: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        Access.build(tokens=tokens, header=header, proxies=proxies, host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_without_credentials_only_loopback_is_served(host: str) -> None:
    assert is_loopback(host)
    assert Access.build(tokens=None, header=None, proxies=(), host=host).mode == "open"


def test_the_bearer_scheme() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer(None) is None and bearer("Bearer ") is None
