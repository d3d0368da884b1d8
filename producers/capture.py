"""Capture without a call per change: audited configuration, audited healing actions.

:class:`AuditedConfig` wraps a mutable mapping (a dict, a ``shelve``, or a config store
adapted with :class:`CallableStore`) and records every write that changes something: a new
key is a ``create``, a changed value an ``update``, a removed key a ``delete``, each with
``before`` and ``after``. Every way of writing goes through it (``cfg[k] = v``, ``del``,
``update``, ``pop``, ``popitem``, ``setdefault``, ``clear``: the last ones are built on the
first two by :class:`collections.abc.MutableMapping`). A write that leaves the value as it
was (equal by ``==``) is applied but records nothing. The actor is the request's user
(:mod:`.context`), else the wrapper's default actor (e.g. the service's name).

Order of a write: the event is built and validated first (a bad value or a missing actor
refuses the write and changes nothing), then the store is written, then the event is
handed to the trail; if the trail refuses it (:class:`~.spool.SpoolFull`,
:class:`~.trail.DeliveryBacklog`...), the store is put back as it was and the error is
raised, so a change is never left in place unrecorded.

Values under a sensitive key name (``db_password``, ``api_token``...) are recorded as the
trail's redaction marker, by the same rules the trail applies to keys inside ``before`` and
``after`` (:mod:`.redact`); values of other keys are redacted by shape (DSNs, tokens).

:func:`audited_action` (also spelled :func:`records_decision`) records an automated
healing decision when the action ends: a context manager (``with`` / ``async with``) and a
decorator (plain and ``async def`` functions). ``after`` carries the outcome
(``succeeded`` / ``failed``), the error's type (its name only: an exception's message may
hold a secret) and the duration in milliseconds; the same go into ``attributes``. An
exception from the action is re-raised unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from baldur_audit.schemas.errors import ConfigError

from .context import current_context
from .redact import Redactor, is_sensitive_key

if TYPE_CHECKING:
    from .trail import AuditTrail

logger = logging.getLogger(__name__)

_MISSING: Any = object()
F = TypeVar("F", bound=Callable[..., Any])


class CallableStore(MutableMapping[str, Any]):
    """A config store seen as a mapping: ``get(key)`` (raising ``KeyError`` when absent),
    ``set(key, value)``, ``delete(key)`` and ``keys()`` callables."""

    def __init__(
        self,
        *,
        get: Callable[[str], Any],
        set: Callable[[str, Any], None],  # noqa: A002 - the store's own word
        delete: Callable[[str], None],
        keys: Callable[[], Iterator[str] | list[str]],
    ) -> None:
        self._get, self._set, self._delete, self._keys = get, set, delete, keys

    def __getitem__(self, key: str) -> Any:
        return self._get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._set(key, value)

    def __delitem__(self, key: str) -> None:
        self._delete(key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys()))

    def __len__(self) -> int:
        return len(list(self._keys()))


class AuditedConfig(MutableMapping[Any, Any]):
    """A mapping whose every change is recorded to an :class:`~.trail.AuditTrail`."""

    def __init__(
        self,
        store: MutableMapping[Any, Any],
        *,
        trail: AuditTrail,
        prefix: str = "config/",
        actor: str | None = None,
        actor_type: str = "service",
        source: str = "api",
        reason: str | None = None,
    ) -> None:
        """``prefix`` + the key is the event's target. ``actor`` (with ``actor_type``) is
        the actor outside of a request with a user; without it such a write raises
        :class:`~baldur_audit.schemas.errors.InvalidEvent` naming ``actor``. Raises
        :class:`ConfigError` when ``store`` is not a mutable mapping."""
        if not isinstance(store, MutableMapping):
            raise ConfigError("store: expected a mutable mapping (or a CallableStore)")
        self._store = store
        self._trail = trail
        self._prefix = prefix
        self._actor = actor
        self._actor_type = actor_type
        self._source = source
        self._reason = reason
        # The trail's own redactor (same key, same markers); a plain one for a stand-in trail.
        self._redactor: Redactor = getattr(trail, "_redactor", None) or Redactor()

    @property
    def store(self) -> MutableMapping[Any, Any]:
        """The wrapped mapping (writes made to it directly are not recorded)."""
        return self._store

    def __getitem__(self, key: Any) -> Any:
        return self._store[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def set(self, key: Any, value: Any, *, reason: str | None = None) -> None:
        """Write ``value`` under ``key`` and record a create or an update (nothing when the
        value is unchanged). Raises what the store and :meth:`AuditTrail.prepare` raise."""
        before = self._store.get(key, _MISSING)
        if before is not _MISSING and _same(before, value):
            self._store[key] = value
            return
        action = "create" if before is _MISSING else "update"
        event = self._event(key, action, None if before is _MISSING else before, value, reason)
        self._store[key] = value
        try:
            self._trail.publish(event)
        except BaseException:
            self._undo(key, before)
            raise

    def delete(self, key: Any, *, reason: str | None = None) -> None:
        """Remove ``key`` and record a delete; raises ``KeyError`` when it is absent."""
        before = self._store[key]
        event = self._event(key, "delete", before, None, reason)
        del self._store[key]
        try:
            self._trail.publish(event)
        except BaseException:
            self._undo(key, before)
            raise

    def _event(self, key: Any, action: str, before: Any, after: Any, reason: str | None) -> Any:
        context = current_context()
        from_request = context is not None and context.actor is not None
        return self._trail.prepare(
            actor=None if from_request else self._actor,
            actor_type=None if from_request else self._actor_type,
            action=action,
            target=f"{self._prefix}{key}",
            before=self._redacted(key, before),
            after=self._redacted(key, after),
            reason=reason if reason is not None else self._reason,
            source=self._source,
        )

    def _redacted(self, key: Any, value: Any) -> Any:
        if value is None or isinstance(value, bool) or not isinstance(key, str) or not is_sensitive_key(key):
            return value
        return self._redactor.redact({key: value})[key]

    def _undo(self, key: Any, before: Any) -> None:
        try:
            if before is _MISSING:
                self._store.pop(key, None)
            else:
                self._store[key] = before
        except Exception:
            logger.exception("could not undo an unrecorded write to %s%s", self._prefix, key)


def _same(before: Any, after: Any) -> bool:
    try:
        return bool(before == after) and type(before) is type(after)
    except Exception:
        return False


def _error_type(error: BaseException) -> str:
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


@dataclass(slots=True)
class ActionRecord:
    """What a running audited action will record; the block may add ``details`` (JSON-like,
    recorded under ``after.details``) and ``attributes`` (strings)."""

    details: Any = None
    attributes: dict[str, str] = field(default_factory=dict)
    event_id: Any = None  # set once recorded


class audited_action:  # noqa: N801 - used like a function: @audited_action(...) / with audited_action(...)
    """Record a healing decision and its outcome when the action ends.

    ``target`` and ``reason`` are strings, or (decorator only) callables given the
    decorated function's arguments. The event is recorded with
    :meth:`AuditTrail.record_healing`: ``actor`` defaults to ``baldur-healer`` (type
    ``system``), ``source`` to ``framework``. When the action raises, the error is recorded
    (its type, not its message) and re-raised unchanged; if the trail also refuses the
    event, that is logged and the action's own error still propagates. When the action
    succeeds and the trail refuses the event, the trail's error is raised.
    """

    def __init__(
        self,
        trail: AuditTrail,
        *,
        action: str,
        target: str | Callable[..., str],
        reason: str | Callable[..., str],
        before: Any = None,
        actor: str = "baldur-healer",
        actor_type: str = "system",
        source: str = "framework",
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        self._trail = trail
        self._action = action
        self._target = target
        self._reason = reason
        self._before = before
        self._actor = actor
        self._actor_type = actor_type
        self._source = source
        self._attributes = dict(attributes or {})
        self._running: list[tuple[float, ActionRecord, str, str]] = []

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> ActionRecord:
        if callable(self._target) or callable(self._reason):
            raise ConfigError("target and reason: a context manager needs strings, not callables")
        record = ActionRecord()
        self._running.append((time.monotonic(), record, self._target, self._reason))
        return record

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        started, record, target, reason = self._running.pop()
        self._finish(started, record, target, reason, error)

    async def __aenter__(self) -> ActionRecord:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, error, tb)

    # -- decorator ------------------------------------------------------------------------
    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                target, reason = self._resolve(args, kwargs)
                started, record = time.monotonic(), ActionRecord()
                try:
                    result = await function(*args, **kwargs)
                except BaseException as error:
                    self._finish(started, record, target, reason, error)
                    raise
                self._finish(started, record, target, reason, None)
                return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            target, reason = self._resolve(args, kwargs)
            started, record = time.monotonic(), ActionRecord()
            try:
                result = function(*args, **kwargs)
            except BaseException as error:
                self._finish(started, record, target, reason, error)
                raise
            self._finish(started, record, target, reason, None)
            return result

        return run  # type: ignore[return-value]

    def _resolve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        target = self._target(*args, **kwargs) if callable(self._target) else self._target
        reason = self._reason(*args, **kwargs) if callable(self._reason) else self._reason
        return target, reason

    def _finish(
        self, started: float, record: ActionRecord, target: str, reason: str, error: BaseException | None
    ) -> None:
        duration_ms = round((time.monotonic() - started) * 1000)
        if error is None:
            outcome = "succeeded"
        elif isinstance(error, Exception):
            outcome = "failed"
        else:
            outcome = "interrupted"  # cancelled, KeyboardInterrupt, SystemExit
        after: dict[str, Any] = {"outcome": outcome, "duration_ms": duration_ms}
        attributes = {**self._attributes, **record.attributes}
        attributes.update(outcome=outcome, duration_ms=str(duration_ms))
        if error is not None:
            after["error_type"] = attributes["error_type"] = _error_type(error)
        if record.details is not None:
            after["details"] = record.details
        try:
            record.event_id = self._trail.record_healing(
                actor=self._actor,
                actor_type=self._actor_type,
                action=self._action,
                target=target,
                reason=reason,
                before=self._before,
                after=after,
                source=self._source,
                attributes=attributes,
            )
        except Exception:
            if error is None:
                raise
            logger.exception("could not record the failed %s of %s", self._action, target)


records_decision = audited_action

__all__ = ["ActionRecord", "AuditedConfig", "CallableStore", "audited_action", "records_decision"]
