"""A small HTTP endpoint for Prometheus and for orchestrators' probes, served by the standard
library from a daemon thread:

- ``GET /metrics``: the text exposition of one registry (OpenMetrics when the scraper asks);
- ``GET /livez``: 200 ``ok`` while the process runs;
- ``GET /readyz``: 200 when ``ready()`` says so, else 503 with its short reason.

Unknown paths get 404 and any method but GET 405. A bare port binds the loopback interface:
serving on another interface is a deliberate choice (``0.0.0.0:9464``).
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from baldur_audit.schemas.errors import ConfigError

log = logging.getLogger(__name__)

#: Where a bare port binds.
LOOPBACK = "127.0.0.1"
#: A client that sends nothing for this long is dropped (a probe must not pin a thread).
REQUEST_TIMEOUT = 10.0

_BRACKETED = re.compile(r"^\[(?P<host>[^\[\]]+)\]:(?P<port>[^:]*)$")

Ready = Callable[[], tuple[bool, str]]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``PORT`` (on 127.0.0.1) or ``[IPV6]:PORT`` → (host, port); port 0 lets
    the system pick. Raises ValueError naming what is wrong."""
    text = text.strip()
    if text.isdigit():
        host, port = LOOPBACK, text
    elif (bracketed := _BRACKETED.match(text)) is not None:
        host, port = bracketed["host"], bracketed["port"]
    elif text.count(":") == 1:
        host, port = text.split(":")
        if not host:
            raise ValueError(
                f"metrics address {text!r} has no host: give one (127.0.0.1:PORT, or 0.0.0.0:PORT "
                "to serve on every interface)"
            )
    else:
        raise ValueError(
            f"metrics address {text!r} is not HOST:PORT, PORT or [IPV6]:PORT (e.g. 127.0.0.1:9464)"
        )
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address {text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, owner: MetricsServer):
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # Not HTTPServer's: it looks the host's name up (getfqdn), which can stall on bad DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "baldur-audit"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/livez":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            self._readiness()
        else:
            self._reply(404, b"not found: try /metrics, /livez or /readyz\n")

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>: every method but GET is not allowed here.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._reply(405, b"method not allowed: GET only\n", headers={"Allow": "GET"})

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.owner.registry)
        except Exception:  # a collector failed: say so to the scraper, keep serving
            log.exception("collecting metrics failed")
            self._reply(500, b"collecting metrics failed\n")
            return
        self._reply(200, body, content_type=content_type)

    def _readiness(self) -> None:
        try:
            ready, reason = self.server.owner.ready()
        except Exception as exc:  # a probe must answer, whatever went wrong
            ready, reason = False, f"readiness check failed: {type(exc).__name__}"
        text = "ok" if ready and not reason else reason
        self._reply(200 if ready else 503, f"{text}\n".encode())

    def _reply(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class MetricsServer:
    """Serves ``/metrics`` (``registry``), ``/livez`` and ``/readyz`` (``ready()``: ready or
    not, and why) on ``address`` from a daemon thread, once :meth:`start` is called."""

    def __init__(self, *, address: str, registry: CollectorRegistry, ready: Ready) -> None:
        self.host, self.port = parse_address(address)
        self.registry = registry
        self.ready = ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve. Raises :class:`ConfigError` when the address cannot be bound
        (in use, not an address of this host, an unknown host name)."""
        if self._server is not None:
            return
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICSERV
            )[0]
            server = _Server((str(sockaddr[0]), int(sockaddr[1])), family, self)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot serve metrics on {where}: {reason}") from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics-server", daemon=True
        )
        self._thread.start()
        host, port = self.bound
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("serving metrics and health probes on http://%s (/metrics, /livez, /readyz)", shown)

    @property
    def bound(self) -> tuple[str, int]:
        """The address actually bound (the system's port when 0 was asked); the requested
        one before :meth:`start`."""
        if self._server is None:
            return self.host, self.port
        address = self._server.server_address
        return str(address[0]), int(address[1])

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
