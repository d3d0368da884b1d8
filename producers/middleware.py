"""WSGI and ASGI middleware that put each request's audit context in place.

Wrap a web application in :class:`AuditContextASGI` (Starlette, FastAPI, Django's ASGI
handler, any ASGI 3 callable) or :class:`AuditContextWSGI` (Flask, Django's WSGI handler,
any WSGI callable), and every ``AuditTrail.record...()`` made while a request is handled
gets that request's client IP, trace and user without passing them (:mod:`.context`).
Neither class imports a web framework.

Per request:

- **client IP**: the socket peer. ``X-Forwarded-For`` is honoured only when the peer is one
  of ``trusted_proxies`` (addresses or CIDR networks); then the client is the right-most
  address in the header that is not itself a trusted proxy (the left part of the header is
  written by whoever sent the request and can be forged). From any other peer the header
  is ignored. The address is masked by the trail when an event is built.
- **trace**: the W3C ``traceparent`` header; an invalid one is ignored (the events then
  have no trace id, or the active OpenTelemetry span's), never an error for the request.
- **user**: ``user(scope)`` / ``user(environ)`` when a callable is given (returning a name,
  a ``(name, actor_type)`` pair or None); else ``user_header`` (e.g. ``X-Authenticated-User``
  set by an authenticating proxy), honoured only from a trusted proxy; else, for WSGI,
  ``REMOTE_USER`` (set by the server after its own authentication). An application that
  authenticates later calls :func:`.context.set_actor`.

The context is reset when the request ends: after the response was sent (ASGI, streaming
included), after the last chunk of the response iterable (WSGI; each chunk of a streaming
body is produced with the context in place), and when the application raises.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from baldur_audit.schemas.errors import ConfigError, InvalidEvent

from .context import RequestContext, reset_context, set_context
from .trace import parse_traceparent

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
UserSource = Callable[[Any], "str | tuple[str, str] | None"]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_MAX_HEADER_CHARS = 8192


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    """Parse trusted proxies (``10.0.0.0/8``, ``192.0.2.7``, ``2001:db8::/32``); raises
    :class:`ConfigError` naming the first one that is not an address or a network."""
    if isinstance(proxies, str):
        proxies = [part for part in proxies.split(",") if part.strip()]
    networks = []
    for proxy in proxies:
        try:
            networks.append(ipaddress.ip_network(str(proxy).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted_proxies: expected addresses or CIDR networks, found {str(proxy)[:50]!r}"
            ) from None
    return tuple(networks)


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _Resolver:
    """The per-request logic both middlewares share."""

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str],
        user: UserSource | None,
        user_header: str | None,
        actor_type: str,
    ) -> None:
        self.networks = trusted_networks(trusted_proxies)
        if user is not None and not callable(user):
            raise ConfigError("user: expected a callable that returns the request's user")
        self.user = user
        self.user_header = user_header.strip().lower() if user_header else None
        self.actor_type = actor_type

    def trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded: list[str]) -> str | None:
        if not self.trusted(_address(peer)) or not forwarded:
            return peer
        hops = [hop.strip() for value in forwarded for hop in value[:_MAX_HEADER_CHARS].split(",")]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not self.trusted(_address(hop)):
                return hop  # the first hop a trusted proxy did not add itself (may be junk: masked)
        return hops[0] if hops else peer

    @staticmethod
    def trace_id(traceparent: str | None) -> str | None:
        if not traceparent:
            return None
        try:
            return parse_traceparent(traceparent)
        except InvalidEvent:
            return None  # a client's bad header must not fail its request

    def actor(self, request: Any, peer_trusted: bool, header_user: str | None) -> tuple[str | None, str]:
        if self.user is not None:
            found = self.user(request)
            if isinstance(found, tuple):
                return found[0], found[1]
            return found, self.actor_type
        if self.user_header is not None and peer_trusted and header_user:
            return header_user[:_MAX_HEADER_CHARS], self.actor_type
        return None, self.actor_type


class AuditContextASGI:
    """ASGI 3 middleware: each HTTP or WebSocket connection runs in its own audit context."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Iterable[str] = (),
        user: UserSource | None = None,
        user_header: str | None = None,
        actor_type: str = "user",
    ) -> None:
        """Raises :class:`ConfigError` on a trusted proxy that is not an address or network."""
        self.app = app
        self._resolve = _Resolver(
            trusted_proxies=trusted_proxies, user=user, user_header=user_header, actor_type=actor_type
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = set_context(self.context(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            reset_context(token)

    def context(self, scope: Scope) -> RequestContext:
        """The audit context of one ASGI connection scope."""
        client = scope.get("client")
        peer = str(client[0]) if client else None
        forwarded: list[str] = []
        traceparent = header_user = None
        wanted = self._resolve.user_header
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif wanted is not None and name.decode("latin-1") == wanted:
                header_user = value.decode("latin-1")
        peer_trusted = self._resolve.trusted(_address(peer))
        actor, actor_type = self._resolve.actor(scope, peer_trusted, header_user)
        return RequestContext(
            client_ip=self._resolve.client_ip(peer, forwarded),
            trace_id=self._resolve.trace_id(traceparent),
            actor=actor,
            actor_type=actor_type,
        )


class AuditContextWSGI:
    """WSGI middleware: each request, and each chunk of its response, runs in its audit context."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        trusted_proxies: Iterable[str] = (),
        user: UserSource | None = None,
        user_header: str | None = None,
        remote_user: bool = True,
        actor_type: str = "user",
    ) -> None:
        """``remote_user``: take ``REMOTE_USER`` when no other source names the user.
        Raises :class:`ConfigError` on a trusted proxy that is not an address or network."""
        self.app = app
        self._remote_user = remote_user
        self._resolve = _Resolver(
            trusted_proxies=trusted_proxies, user=user, user_header=user_header, actor_type=actor_type
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        context = self.context(environ)
        token = set_context(context)
        try:
            body = self.app(environ, start_response)
        finally:
            reset_context(token)
        return _ContextBody(body, context)

    def context(self, environ: dict[str, Any]) -> RequestContext:
        """The audit context of one WSGI request."""
        peer = environ.get("REMOTE_ADDR") or None
        forwarded = [environ["HTTP_X_FORWARDED_FOR"]] if environ.get("HTTP_X_FORWARDED_FOR") else []
        wanted = self._resolve.user_header
        header_user = None
        if wanted is not None:
            header_user = environ.get("HTTP_" + wanted.upper().replace("-", "_"))
        peer_trusted = self._resolve.trusted(_address(peer))
        actor, actor_type = self._resolve.actor(environ, peer_trusted, header_user)
        if actor is None and self._remote_user and environ.get("REMOTE_USER"):
            actor = str(environ["REMOTE_USER"])
        return RequestContext(
            client_ip=self._resolve.client_ip(peer, forwarded),
            trace_id=self._resolve.trace_id(environ.get("HTTP_TRACEPARENT")),
            actor=actor,
            actor_type=actor_type,
        )


class _ContextBody:
    """A WSGI response iterable that produces each chunk inside the request's context and
    passes ``close()`` on (PEP 3333: the server calls it, also when the client went away)."""

    def __init__(self, body: Iterable[bytes], context: RequestContext) -> None:
        self._body = body
        self._chunks: Iterator[bytes] | None = None
        self._context = context

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = set_context(self._context)
        try:
            if self._chunks is None:
                self._chunks = iter(self._body)
            return next(self._chunks)
        finally:
            reset_context(token)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            token = set_context(self._context)
            try:
                close()
            finally:
                reset_context(token)


__all__ = ["AuditContextASGI", "AuditContextWSGI", "trusted_networks"]
