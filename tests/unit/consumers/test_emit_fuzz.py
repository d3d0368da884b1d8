"""Fuzzing ``baldur-audit emit`` (bad input): its options and ``--file`` JSON lines,
through the real entry point (``consumers.cli.main``) in click's CliRunner isolation, with
the trail's Kafka producer replaced by an in-memory one — no services.

The promise under test: a file with any bad line exits 2 with one line on stderr naming the
first bad line, no traceback, and nothing sent; a file of good lines sends one event per
line, each decoding to what the line said after redaction and masking; secrets appear
nowhere in the output.
"""

from __future__ import annotations

import functools
import json
import string
import sys
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from baldur_audit.consumers import cli
from baldur_audit.consumers.cli import emit as emit_module
from baldur_audit.producers import AuditTrail
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from tests.support.fuzz import (
    ANY_TEXT,
    BAD_LINE_MAKERS,
    NON_BLANK,
    SECRET,
    JsonlFile,
    MemoryProducers,
    dumps,
    expected_fields,
    fuzz,
    good_item,
    jsonl_file,
    sealed_fields,
    secret_carrier,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    sent: list[bytes]


def run_cli(*args: str, stdin: bytes = b"") -> Run:
    """``baldur-audit --bootstrap 127.0.0.1:1 ARGS`` as ``main()`` runs it, in isolation."""
    producers = MemoryProducers()
    trail = functools.partial(AuditTrail, producer_factory=producers)
    argv = ["baldur-audit", "--bootstrap", "127.0.0.1:1", "--topic", "fuzz.emit", *args]
    with (
        CliRunner().isolation(input=stdin) as (out, err, _),
        mock.patch.object(emit_module, "AuditTrail", trail),
        mock.patch.object(sys, "argv", argv),
    ):
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return Run(code, stdout, stderr, producers.values_since(0))


def assert_one_line_error(done: Run) -> str:
    assert done.code == 2, done
    assert "Traceback" not in done.stderr and "unexpected error" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.sent == [] and done.stdout == ""
    return lines[0]


# ---- lines ----------------------------------------------------------------------------------


@fuzz(150)
@given(file=jsonl_file())
def test_file_lines_are_all_sent_or_the_first_bad_one_is_named(file: JsonlFile) -> None:
    done = run_cli("emit", "--file", "-", stdin=file.content)
    if file.first_bad is not None:
        message = assert_one_line_error(done)
        assert f"line {file.first_bad}:" in message, (message, file.bad)
        return
    if not file.good:  # only blank lines: nothing to send, and that is no error
        assert done.code == 0 and done.sent == [], done
        return
    assert done.code == 0, done.stderr
    assert len(done.stdout.split()) == len(file.good) == len(done.sent)
    for item, payload in zip(file.good, done.sent, strict=True):
        assert sealed_fields(payload) == expected_fields(item)


@fuzz(60)
@given(
    label=st.sampled_from(sorted(BAD_LINE_MAKERS)),
    item=good_item(),
    data=st.data(),
    before=st.lists(good_item().map(dumps), max_size=3),
)
def test_every_kind_of_bad_line_is_named(
    label: str, item: dict[str, Any], data: st.DataObject, before: list[bytes]
) -> None:
    bad = BAD_LINE_MAKERS[label](item, data.draw)
    done = run_cli("emit", "--file", "-", stdin=b"\n".join([*before, bad, dumps(item)]))
    message = assert_one_line_error(done)
    assert f"line {len(before) + 1}:" in message, (label, message)
    assert "hunter2" not in message


# ---- options ------------------------------------------------------------------------------

OPTION_VALUES = st.one_of(
    ANY_TEXT,
    NON_BLANK,
    st.sampled_from(
        [
            "",
            " ",
            "-",
            "--",
            "NaN",
            "1e999",
            "9" * 5000,
            "[" * 5000,
            '{"a": 1, "a": 2}',
            "null",
            "192.168.7.9",
            "::ffff:10.1.2.3",
            "2002:c0a8:0107::1",
            "1.2.3.4\r\nX-Evil: 1",
            TRACE_ID,
            TRACE_ID.upper(),
            "0" * 32,
        ]
    ),
)


@st.composite
def option_args(draw: st.DrawFn) -> tuple[list[str], str]:
    secret = draw(SECRET)
    args = ["emit", "--timeout", "0.1"]
    for option in ("--actor", "--action", "--target"):
        if draw(st.integers(0, 9)):
            args += [option, draw(OPTION_VALUES | st.just("update"))]
    for option in (
        "--actor-type",
        "--source",
        "--before",
        "--after",
        "--reason",
        "--client-ip",
        "--trace-id",
    ):
        if draw(st.booleans()):
            args += [option, draw(OPTION_VALUES)]
    for _ in range(draw(st.integers(0, 2))):
        args += [
            "--attribute",
            draw(
                st.one_of(OPTION_VALUES, st.just(f"token={secret}"), st.just(f"={secret}"), st.just(secret))
            ),
        ]
    if draw(st.booleans()):
        args += [
            draw(st.sampled_from(["--after", "--before", "--reason"])),
            draw(
                secret_carrier(secret, text_only=True).map(
                    lambda text: json.dumps({"password": secret}) if "\x00" in text else text
                )
            ),
        ]
    return args, secret


@fuzz(120)
@given(case=option_args())
def test_options_give_one_event_or_a_one_line_error(case: tuple[list[str], str]) -> None:
    args, secret = case
    done = run_cli(*args)
    assert secret not in done.stdout + done.stderr
    if done.code != 0:
        assert_one_line_error(done)
        return
    (payload,) = done.sent
    assert secret.encode() not in payload
    assert done.stdout.strip() == str(decode_event(payload, KNOWN_SCHEMAS).event_id)


# ---- regressions: what these tests found --------------------------------------------------

GOOD = b'{"actor": "alice", "action": "update", "target": "svc.timeout"}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"actor": "a", "action": "update", "target": "t", "actor": "b"}', "duplicate key 'actor'"),
        (
            b'{"actor": "a", "action": "update", "target": "t", "after": {"x": 1, "x": 2}}',
            "duplicate key 'x'",
        ),
        (
            b'{"actor": "a", "action": "update", "target": "t", "client_ip": NaN}',
            "not valid JSON (NaN is not JSON)",
        ),
        (
            b'{"actor": "a", "action": "update", "target": "t", "reason": "r", "after": 1e999}',
            "a number too large",
        ),
        (
            b'{"actor": "a", "action": "update", "target": "t", "after": ' + b"7" * 4301 + b"}",
            "more than 4300 digits",
        ),
        (b"\xef\xbb\xbf" + GOOD, "byte-order mark"),
        (
            b'{"actor": "a", "action": "update", "target": "t", "password=hunter2": 1}',
            "unknown key of 16 characters",
        ),
    ],
)
def test_strict_json_lines(line: bytes, expected: str) -> None:
    # Found here: duplicate keys kept the last value, NaN or 1e999 in client_ip became a
    # sanitized "<invalid-ip>" event instead of an error, a BOM was "Expecting value", and
    # an unknown key was echoed whole (a secret pasted as a key reached stderr).
    message = assert_one_line_error(run_cli("emit", "--file", "-", stdin=GOOD + b"\n" + line))
    assert message.startswith("baldur-audit: line 2: ") and expected in message, message
    assert "hunter2" not in message


def test_the_first_bad_line_is_named_whichever_check_fails() -> None:
    # Found here: parse errors were reported before validation errors, so a bad action on
    # line 2 was reported as the duplicate key on line 4.
    content = b"\n".join([GOOD, GOOD.replace(b"update", b"Update"), GOOD, b'{"actor": "a", "actor": "b"}'])
    message = assert_one_line_error(run_cli("emit", "--file", "-", stdin=content))
    assert "line 2:" in message and "action" in message


def test_event_options_with_file_are_refused() -> None:
    for option in ("--reason", "--after", "--client-ip", "--attribute"):
        message = assert_one_line_error(run_cli("emit", "--file", "-", option, "k=v", stdin=GOOD))
        assert f"{option} given with --file" in message


def test_a_malformed_attribute_is_not_echoed() -> None:
    # Found here: "--attribute hunter2" (a value without its key) was quoted in the error.
    for pair in ("S3cretWithoutKey", "=S3cretWithoutKey"):
        message = assert_one_line_error(
            run_cli("emit", "--actor", "a", "--action", "update", "--target", "t", "--attribute", pair)
        )
        assert "S3cretWithoutKey" not in message and "--attribute expects KEY=VALUE" in message


def test_blank_lines_crlf_and_a_final_newline_are_fine() -> None:
    done = run_cli("emit", "--file", "-", stdin=b"\r\n" + GOOD + b"\r\n\n  \n" + GOOD + b"\n")
    assert done.code == 0, done.stderr
    assert len(done.sent) == 2 and len(done.stdout.split()) == 2


def test_a_secret_in_a_bad_trace_id_is_not_echoed() -> None:
    done = run_cli(
        "emit",
        "--actor",
        "a",
        "--action",
        "update",
        "--target",
        "t",
        "--trace-id",
        f"password={string.ascii_letters}",
    )
    message = assert_one_line_error(done)
    assert string.ascii_letters not in message


@pytest.mark.parametrize("option", ["--source", "--actor-type"])
def test_a_bad_choice_is_not_echoed(option: str) -> None:
    # Found here: click.Choice quoted the whole value ("Bearer <token>" given to --source).
    message = assert_one_line_error(
        run_cli("emit", "--actor", "a", "--action", "update", "--target", "t", option, "Bearer S3cretChoice1")
    )
    assert "S3cretChoice1" not in message and "expected one of" in message
    assert "found 'admin'" in assert_one_line_error(
        run_cli("emit", "--actor", "a", "--action", "update", "--target", "t", option, "admin")
    )
