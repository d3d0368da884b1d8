"""The request-context middleware under real servers: uvicorn (ASGI) and the standard
library's wsgiref (WSGI), with requests sent over loopback.

The application behind each middleware records events through an AuditTrail whose
producer keeps what it was asked to send (no broker: 127.0.0.1:1); the events are decoded
from those bytes, so what is checked is what would reach the topic: the masked client IP,
the trace id from ``traceparent`` and the user, none of them passed to ``record()``.
"""

from __future__ import annotations

import asyncio
import json
import socketserver
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import uvicorn

from baldur_audit.producers import AuditTrail, ConfigError, InvalidEvent
from baldur_audit.producers.context import current_context, set_actor
from baldur_audit.producers.middleware import AuditContextASGI, AuditContextWSGI
from baldur_audit.schemas.event import Actor, ChangeEvent
from tests.unit.producers.test_trail import UNREACHABLE, Capture

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-00f067aa0ba902b7-01"


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def trail(capture: Capture) -> Iterator[AuditTrail]:
    made = AuditTrail(bootstrap=UNREACHABLE, producer_factory=capture)
    yield made
    made.close(0)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http on loopback
        body: bytes = response.read()
        return body


def by_target(events: list[ChangeEvent]) -> dict[str, ChangeEvent]:
    return {event.target: event for event in events}


# -- ASGI: a bare ASGI 3 application behind the middleware, served by uvicorn ------------------


def asgi_app(trail: AuditTrail, gates: dict[str, asyncio.Event]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith("/wait/"):  # records only after the other request recorded
            name = path.rsplit("/", 1)[1]
            await asyncio.wait_for(gates.setdefault(name, asyncio.Event()).wait(), 10)
        if path.startswith("/open/"):
            gates.setdefault(path.rsplit("/", 1)[1], asyncio.Event()).set()
        if path == "/login":
            set_actor("late-login", "user")
        try:
            trail.record(action="update", target=f"asgi{path}", after={"n": 1})
        except InvalidEvent:  # no user in the request: the application names one itself
            trail.record(actor="anonymous", action="update", target=f"asgi{path}")
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        if path == "/stream":
            for part in range(3):
                await asyncio.sleep(0)
                trail.record(action="update", target=f"asgi/stream/{part}")
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    return app


@contextmanager
def running_uvicorn(app: Any) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a port of 127.0.0.1 the kernel picks; yields the port."""
    # proxy_headers=False: uvicorn's own proxy handling would rewrite the client address from
    # X-Forwarded-For (it trusts 127.0.0.1 by default) before the middleware sees the peer.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)


def test_asgi_request_context_reaches_the_event(trail: AuditTrail, capture: Capture) -> None:
    gates: dict[str, asyncio.Event] = {}
    app = AuditContextASGI(
        asgi_app(trail, gates), trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"], user_header="X-Auth-User"
    )
    with running_uvicorn(app) as port:
        get(
            port,
            "/plain",
            {
                "traceparent": traceparent(TRACE_A),
                "X-Auth-User": "alice",
                "X-Forwarded-For": "198.51.100.23, 203.0.113.9, 10.1.2.3",
            },
        )
        get(port, "/login")
    events = by_target(capture.events())
    plain = events["asgi/plain"]
    # The right-most address a trusted proxy did not add: 10.1.2.3 is a trusted hop.
    assert plain.client_ip == "203.0.***.***"
    assert plain.trace_id == TRACE_A
    assert plain.actor == Actor("alice", "user")
    login = events["asgi/login"]
    assert login.actor == Actor("late-login", "user")
    assert login.client_ip == "127.0.***.***" and login.trace_id is None


def test_asgi_forwarded_for_from_an_untrusted_peer_is_ignored(trail: AuditTrail, capture: Capture) -> None:
    app = AuditContextASGI(asgi_app(trail, {}), trusted_proxies=["10.0.0.0/8"], user_header="X-Auth-User")
    with running_uvicorn(app) as port:
        get(
            port,
            "/forged",
            {"X-Forwarded-For": "203.0.113.9", "X-Auth-User": "mallory", "traceparent": "garbage"},
        )
    (event,) = capture.events()
    assert event.actor == Actor("anonymous", "user")  # the header from an untrusted peer is ignored
    assert event.client_ip == "127.0.***.***"  # the socket peer, not the forged header
    assert event.trace_id is None  # an invalid traceparent is ignored, not an error


def test_asgi_streaming_and_overlapping_requests_keep_their_own_context(
    trail: AuditTrail, capture: Capture
) -> None:
    gates: dict[str, asyncio.Event] = {}
    users = {"/wait/a": "alice", "/open/a": "bob"}

    def user(scope: dict[str, Any]) -> tuple[str, str] | None:
        name = users.get(scope["path"])
        return (name, "user") if name else ("streamer", "service")

    app = AuditContextASGI(asgi_app(trail, gates), user=user)
    results: list[bytes] = []
    waiting = threading.Thread(
        target=lambda: results.append(get(port, "/wait/a", {"traceparent": traceparent(TRACE_A)}))
    )
    with running_uvicorn(app) as port:
        waiting.start()
        # Request B starts while request A is suspended inside its handler.
        for _ in range(500):
            if "a" in gates:
                break
            threading.Event().wait(0.01)
        get(port, "/open/a", {"traceparent": traceparent(TRACE_B)})
        waiting.join(15)
        assert results == [b"ok"]
        get(port, "/stream", {"traceparent": traceparent(TRACE_B)})
    events = by_target(capture.events())
    assert (events["asgi/wait/a"].actor.id, events["asgi/wait/a"].trace_id) == ("alice", TRACE_A)
    assert (events["asgi/open/a"].actor.id, events["asgi/open/a"].trace_id) == ("bob", TRACE_B)
    for part in range(3):
        streamed = events[f"asgi/stream/{part}"]
        assert streamed.actor == Actor("streamer", "service") and streamed.trace_id == TRACE_B


# -- WSGI: the standard library's server, one thread per request ------------------------------


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


def wsgi_app(trail: AuditTrail, barrier: threading.Barrier) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        if path.startswith("/together/"):
            barrier.wait(10)  # both requests are inside their handlers before either records
        trail.record(action="update", target=f"wsgi{path}")
        start_response("200 OK", [("Content-Type", "application/json")])
        if path == "/stream":

            def body() -> Iterator[bytes]:
                for part in range(3):
                    trail.record(action="update", target=f"wsgi/stream/{part}")
                    yield json.dumps({"context": current_context() is not None}).encode()

            return body()
        return [b"ok"]

    return app


@contextmanager
def running_wsgi(app: Any) -> Iterator[int]:
    """Serve ``app`` with the standard library's WSGI server on a port the kernel picks."""
    server = make_server("127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_wsgi_request_context_reaches_the_event(trail: AuditTrail, capture: Capture) -> None:
    barrier = threading.Barrier(2)
    users = {"/together/a": "alice", "/together/b": "bob"}
    app = AuditContextWSGI(
        wsgi_app(trail, barrier),
        trusted_proxies=["127.0.0.0/8"],
        user=lambda environ: users.get(environ["PATH_INFO"], "streamer"),
    )
    with running_wsgi(app) as port:
        first = threading.Thread(
            target=get,
            args=(
                port,
                "/together/a",
                {"traceparent": traceparent(TRACE_A), "X-Forwarded-For": "198.51.100.7"},
            ),
        )
        first.start()
        get(port, "/together/b", {"traceparent": traceparent(TRACE_B)})
        first.join(15)
        streamed = get(port, "/stream", {"traceparent": traceparent(TRACE_A)})
    events = by_target(capture.events())
    a, b = events["wsgi/together/a"], events["wsgi/together/b"]
    assert (a.actor.id, a.trace_id, a.client_ip) == ("alice", TRACE_A, "198.51.***.***")
    assert (b.actor.id, b.trace_id, b.client_ip) == ("bob", TRACE_B, "127.0.***.***")
    assert streamed.count(b'{"context": true}') == 3
    for part in range(3):
        assert events[f"wsgi/stream/{part}"].trace_id == TRACE_A


def test_wsgi_remote_user_and_untrusted_forwarded_for(trail: AuditTrail, capture: Capture) -> None:
    def with_remote_user(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["REMOTE_USER"] = "carol"  # what a server's own authentication sets
        return AuditContextWSGI(wsgi_app(trail, threading.Barrier(1)))(environ, start_response)

    with running_wsgi(with_remote_user) as port:
        get(port, "/remote", {"X-Forwarded-For": "203.0.113.9"})
    (event,) = capture.events()
    assert event.actor == Actor("carol", "user")
    assert event.client_ip == "127.0.***.***"


def test_wsgi_context_is_reset_after_the_request_also_on_error(trail: AuditTrail) -> None:
    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert current_context() is not None
        raise RuntimeError("boom")

    environ = {"REMOTE_ADDR": "192.0.2.1", "PATH_INFO": "/", "REMOTE_USER": "dave"}
    with pytest.raises(RuntimeError):
        AuditContextWSGI(failing)(environ, lambda *args: None)
    assert current_context() is None
    body = AuditContextWSGI(wsgi_app(trail, threading.Barrier(1)))(
        dict(environ, PATH_INFO="/stream"), lambda *a: None
    )
    assert current_context() is None
    chunks = list(body)
    assert all(b"true" in chunk for chunk in chunks) and current_context() is None


def test_explicit_arguments_win_over_the_request(trail: AuditTrail, capture: Capture) -> None:
    environ = {
        "REMOTE_ADDR": "192.0.2.1",
        "PATH_INFO": "/",
        "REMOTE_USER": "dave",
        "HTTP_TRACEPARENT": traceparent(TRACE_A),
    }

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        trail.record(
            actor="ops-bot",
            actor_type="service",
            action="update",
            target="t/explicit",
            client_ip="198.51.100.1",
            trace_id=TRACE_B,
        )
        trail.record(action="update", target="t/implicit")
        return [b""]

    AuditContextWSGI(app)(environ, lambda *args: None)
    events = by_target(capture.events())
    explicit, implicit = events["t/explicit"], events["t/implicit"]
    assert (explicit.actor, explicit.client_ip, explicit.trace_id) == (
        Actor("ops-bot", "service"),
        "198.51.***.***",
        TRACE_B,
    )
    assert (implicit.actor, implicit.client_ip, implicit.trace_id) == (
        Actor("dave", "user"),
        "192.0.***.***",
        TRACE_A,
    )


def test_a_bad_trusted_proxy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        AuditContextWSGI(lambda environ, start: [b""], trusted_proxies=["10.0.0.0/33"])
