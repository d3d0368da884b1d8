"""Capture without per-change calls, end to end: a WSGI application behind the request
middleware, served by the standard library's server on loopback, writes to an AuditedConfig
and runs an audited healing action; the real Kafka topic and chainer seal what it recorded,
and ``log`` shows the request's masked client IP, trace id and user on each entry, and the
config secret redacted."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from baldur_audit.producers.capture import AuditedConfig, audited_action
from baldur_audit.producers.middleware import AuditContextWSGI
from baldur_audit.producers.trail import AuditTrail
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

PORT = 19710
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


def test_request_fields_land_masked_in_the_ledger(ledger: Ledger) -> None:
    store: dict[str, Any] = {"timeout_ms": 1000}
    with AuditTrail(bootstrap=ledger.bootstrap, topic=ledger.topic, service="shop") as trail:
        config = AuditedConfig(store, trail=trail, prefix="shop/")

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            config["timeout_ms"] = 2500
            config["api_token"] = "tok-hunter2-secret"
            with audited_action(trail, action="restart", target="shop/worker", reason="stuck queue"):
                pass
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"done"]

        wrapped = AuditContextWSGI(app, trusted_proxies=["127.0.0.1/32"], user_header="X-Auth-User")
        server = make_server("127.0.0.1", PORT, wrapped, handler_class=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{PORT}/apply",
                headers={
                    "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                    "X-Forwarded-For": "198.51.100.23",
                    "X-Auth-User": "alice",
                },
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http on loopback
                assert response.read() == b"done"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
        assert trail.flush(15) == 0
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 3
    done = ledger.cli("log", "--trace-id", TRACE_ID, "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["target"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert set(rows) == {"shop/timeout_ms", "shop/api_token", "shop/worker"}
    for row in rows.values():
        assert row["client_ip"] == "198.51.***.***"
        assert row["trace_id"] == TRACE_ID
    assert rows["shop/timeout_ms"]["actor"] == "alice" and rows["shop/timeout_ms"]["action"] == "update"
    assert rows["shop/api_token"]["action"] == "create"
    assert rows["shop/worker"]["actor"] == "baldur-healer"
    assert "hunter2" not in done.stdout and "198.51.100.23" not in done.stdout
    verified = ledger.cli_json("verify", expect=(0,))
    assert verified["intact"] is True and verified["entries"] == 3
