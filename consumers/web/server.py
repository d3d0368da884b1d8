"""Running the viewer: uvicorn on a socket this module binds first (so a bad or busy address
fails before anything starts, and port 0 reports the port the system chose)."""

from __future__ import annotations

import socket

import uvicorn
from starlette.types import ASGIApp

from baldur_audit.schemas.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; raises :class:`ConfigError` if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
    # say so, and with Nagle on, a response's body waits for the client's delayed ACK of its
    # headers (40 ms per small response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve_forever(app: ASGIApp, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` (already listening: connections made before uvicorn starts
    wait in its backlog) until SIGINT/SIGTERM; uvicorn finishes the requests in flight.

    Uvicorn's own logging and access log are off (the application logs each request, with who
    asked), and so are its proxy headers: the peer address the access checks see is the TCP
    peer, never an ``X-Forwarded-For`` value.
    """
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    uvicorn.Server(config).run(sockets=[sock])
