"""The current request's audit context: client IP, trace and authenticated user.

A web framework's middleware (:mod:`.middleware`) or the service itself puts what it
knows about the request in progress into a :class:`contextvars.ContextVar`; every
``AuditTrail.record...()`` call made while handling that request takes the client IP, the
trace and the actor from it when the caller passes none (explicit arguments always win).

A context variable follows the request, not the thread: each asyncio task and each thread
sees its own value, so two overlapping requests never see each other's context. The IP is
kept here as it came from the socket or a trusted proxy; it is masked by the trail when an
event is built (:mod:`.mask`), so the raw address never reaches the topic, and the context
is reset when the request ends.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from baldur_audit.schemas.errors import InvalidEvent


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the trail may take from the request in progress; every field is optional."""

    client_ip: str | None = None
    traceparent: str | None = None
    trace_id: str | None = None
    actor: str | None = None
    actor_type: str = "user"


_CURRENT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "baldur_audit_request", default=None
)


def current_context() -> RequestContext | None:
    """The context of the request in progress, or None outside of one."""
    return _CURRENT.get()


def set_context(context: RequestContext | None) -> contextvars.Token[RequestContext | None]:
    """Make ``context`` current; pass the returned token to :func:`reset_context`."""
    return _CURRENT.set(context)


def reset_context(token: contextvars.Token[RequestContext | None]) -> None:
    """Restore the context that was current before :func:`set_context` returned ``token``."""
    _CURRENT.reset(token)


@contextmanager
def request_context(
    *,
    client_ip: str | None = None,
    traceparent: str | None = None,
    trace_id: str | None = None,
    actor: str | None = None,
    actor_type: str = "user",
) -> Iterator[RequestContext]:
    """Run a block with this request context (for code that has no middleware: a job, a
    message handler); the previous context comes back when the block ends, also on error."""
    context = RequestContext(
        client_ip=client_ip, traceparent=traceparent, trace_id=trace_id, actor=actor, actor_type=actor_type
    )
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def set_actor(actor: str | None, actor_type: str = "user") -> None:
    """Set the authenticated user of the request in progress, for an application that
    learns it after the middleware ran (its own login check). Outside of a request this
    starts a context holding the user only (in the current task or thread)."""
    context = _CURRENT.get() or RequestContext()
    _CURRENT.set(replace(context, actor=actor, actor_type=actor_type))


def fill_from_context(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of one ``record()`` call with the gaps filled from the current context.

    ``fields`` holds ``actor``, ``actor_type``, ``client_ip``, ``trace_id`` and
    ``traceparent`` as the caller passed them (None where they passed nothing). An explicit
    value wins: the actor when given, the client IP when given, and the trace when either
    ``trace_id`` or ``traceparent`` is given. Raises :class:`InvalidEvent` naming ``actor``
    when neither the caller nor the context names one.
    """
    context = _CURRENT.get()
    filled = dict(fields)
    if context is not None:
        if filled.get("actor") is None and context.actor is not None:
            filled["actor"] = context.actor
            filled["actor_type"] = context.actor_type
        if filled.get("client_ip") is None:
            filled["client_ip"] = context.client_ip
        if filled.get("trace_id") is None and filled.get("traceparent") is None:
            filled["trace_id"] = context.trace_id
            filled["traceparent"] = None if context.trace_id is not None else context.traceparent
    if filled.get("actor") is None:
        raise InvalidEvent("actor", "is required: pass actor= or record inside a request with a user")
    if filled.get("actor_type") is None:
        filled["actor_type"] = "user"
    return filled


__all__ = [
    "RequestContext",
    "current_context",
    "fill_from_context",
    "request_context",
    "reset_context",
    "set_actor",
    "set_context",
]
