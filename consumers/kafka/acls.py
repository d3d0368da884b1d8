"""Kafka ACLs: the least set of ACL bindings each principal of the ledger needs, and creating
them through the admin API (``baldur-audit acls``).

Who needs what, read from the clients in this package and the producer library:

- a **producer** (``producers/``, ``emit``) is an idempotent producer to the ledger topic:
  WRITE on the topic. WRITE implies DESCRIBE (metadata) in Kafka's authorizers, and since
  Kafka 3.0 (KIP-679) WRITE on any topic also allows an idempotent producer's
  ``InitProducerId``, so no IDEMPOTENT_WRITE on the cluster is granted. It uses no
  ``transactional.id`` (the producer library refuses one), so no TransactionalId ACL.
- the **chainer** (``chain``, ``checkpoint``) reads the ledger topic as a member of its group
  (``source.KafkaEventSource``: subscribe, commit of the informational offset): READ on the
  topic and READ on the group. It publishes checkpoints to the witness topic
  (``witness.KafkaWitness``: an idempotent producer, not transactional), which first checks the
  topic as ``init`` does (metadata and its configuration) and creates it on the first
  checkpoint: WRITE, DESCRIBE_CONFIGS and CREATE on that one literal topic name.
- a **reader** (``replay``, ``verify``, ``status``, ``monitor``, ``serve``) reads the ledger
  and the witness topic with ``assign()`` (never a group member, never a commit): READ on both
  topics, and DESCRIBE on the chainer group (``status`` and ``replay`` show its committed
  offset). Its consumers still carry a group id, and librdkafka looks up that group's
  coordinator (FindCoordinator, which Kafka answers with GROUP_AUTHORIZATION_FAILED without
  DESCRIBE on the group): DESCRIBE on the witness reader's group and on the group ids that
  start with ``baldur-audit-replay-`` (one per replay run). DESCRIBE cannot join a group.

Nobody gets ALTER, ALTER_CONFIGS or DELETE (DeleteRecords needs DELETE) on a topic, nor
anything on the cluster. ``init`` (CREATE on the ledger topic, DESCRIBE_CONFIGS) is an
operator's task, run with an administrator's credentials: this module grants nothing for it.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from baldur_audit.producers.kafka_producer import refusal_hint
from baldur_audit.schemas.errors import BrokerUnavailable, ConfigError

from .admin import admin_client

__all__ = ["Grant", "KafkaAcls", "AclReport", "kafka_acls_commands", "least_acls", "principal"]

#: ``User:name``: a SCRAM or Kerberos user name, or a TLS certificate's distinguished name.
_PRINCIPAL = re.compile(r"User:(?=\S)[^\x00-\x1f\x7f*]{1,255}(?<=\S)")
#: The group ids of the readers' consumers (``witness.KafkaWitness``, ``source.KafkaTopicReader``):
#: they ``assign()`` and never commit, but a consumer with a group id looks up the group's
#: coordinator, which Kafka allows with DESCRIBE on the group (the group itself is never joined).
WITNESS_READER_GROUP = "baldur-audit-witness-reader"
REPLAY_GROUP_PREFIX = "baldur-audit-replay-"
WHY_READER_GROUP = "find the coordinator of its own consumer's group id (assign, never joined)"
#: "Any" in an ACL filter (the client's type hints say ``str``; None is what matches any).
_ANY: Any = None
#: What no principal of the ledger may ever hold.
FORBIDDEN = frozenset({"ALL", "ALTER", "ALTER_CONFIGS", "DELETE", "CLUSTER_ACTION", "IDEMPOTENT_WRITE"})


def principal(text: str) -> str:
    """``text`` if it is a ``User:name`` principal; raises :class:`ConfigError` otherwise (a
    wildcard, ``User:*``, would grant to everyone and is refused)."""
    if not _PRINCIPAL.fullmatch(text):
        raise ConfigError(
            f"not a Kafka principal: {text!r} (expected User:NAME, e.g. User:chainer; no wildcard)"
        )
    return text


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ALLOW ACL binding: ``principal`` may ``operation`` on ``resource`` ``name`` (a
    ``prefixed`` pattern: on every name that starts with ``name``), from any host."""

    principal: str
    resource: str  # "topic" or "group"
    name: str
    operation: str  # an AclOperation name: READ, WRITE, CREATE, DESCRIBE, DESCRIBE_CONFIGS
    pattern: str = "literal"  # or "prefixed"
    role: str = ""
    why: str = ""

    def binding(self) -> AclBinding:
        """The binding for the admin API."""
        return AclBinding(
            ResourceType[self.resource.upper()],
            self.name,
            ResourcePatternType[self.pattern.upper()],
            self.principal,
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )

    def key(self) -> tuple[str, str, str, str, str]:
        """What makes two grants the same ACL: principal, resource, name, pattern, operation."""
        return (self.principal, self.resource, self.name, self.pattern, self.operation)

    def as_dict(self) -> dict[str, str]:
        return {
            "principal": self.principal,
            "role": self.role,
            "resource_type": self.resource,
            "resource_name": self.name,
            "pattern_type": self.pattern,
            "host": "*",
            "operation": self.operation,
            "permission": "allow",
            "why": self.why,
        }


def least_acls(
    *,
    topic: str,
    witness_topic: str,
    group: str,
    producers: Sequence[str] = (),
    chainers: Sequence[str] = (),
    readers: Sequence[str] = (),
) -> list[Grant]:
    """The least ACL set for these principals (each validated by :func:`principal`), in a
    stable order: producers, chainers, readers, as given; no duplicates."""
    grants: list[Grant] = []

    def add(
        who: str, resource: str, name: str, operation: str, role: str, why: str, pattern: str = "literal"
    ) -> None:
        grant = Grant(principal(who), resource, name, operation, pattern=pattern, role=role, why=why)
        if all(g.key() != grant.key() for g in grants):
            grants.append(grant)

    for who in producers:
        add(who, "topic", topic, "WRITE", "producer", "produce audit events (idempotent; implies DESCRIBE)")
    for who in chainers:
        add(who, "topic", topic, "READ", "chainer", "consume the ledger topic (implies DESCRIBE)")
        add(who, "group", group, "READ", "chainer", "join the chainer group, commit its offset")
        add(who, "topic", witness_topic, "WRITE", "chainer", "publish checkpoints (idempotent)")
        add(who, "topic", witness_topic, "DESCRIBE_CONFIGS", "chainer", "check the witness topic's config")
        add(
            who,
            "topic",
            witness_topic,
            "CREATE",
            "chainer",
            "create the witness topic on the first checkpoint",
        )
    for who in readers:
        add(who, "topic", topic, "READ", "reader", "replay reads the ledger topic (assign, no group)")
        add(who, "topic", witness_topic, "READ", "reader", "verify reads witnessed checkpoints")
        add(who, "group", group, "DESCRIBE", "reader", "status and replay show the chainer group's offset")
        add(who, "group", WITNESS_READER_GROUP, "DESCRIBE", "reader", WHY_READER_GROUP)
        add(who, "group", REPLAY_GROUP_PREFIX, "DESCRIBE", "reader", WHY_READER_GROUP, pattern="prefixed")
    assert not any(g.operation in FORBIDDEN for g in grants)
    return grants


def kafka_acls_commands(grants: Iterable[Grant], *, bootstrap: str, config: str | None = None) -> list[str]:
    """The same grants as ``kafka-acls.sh`` commands, one per principal and resource."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for grant in grants:
        grouped.setdefault((grant.principal, grant.resource, grant.name, grant.pattern), []).append(
            grant.operation
        )
    lines = []
    for (who, resource, name, pattern), operations in grouped.items():
        words = ["kafka-acls.sh", "--bootstrap-server", bootstrap]
        if config:
            words += ["--command-config", config]
        words += ["--add", "--allow-principal", who]
        for operation in operations:
            words += ["--operation", "".join(part.title() for part in operation.split("_"))]
        words += [f"--{resource}", name]
        if pattern != "literal":
            words += ["--resource-pattern-type", pattern]
        lines.append(shlex.join(words))
    return lines


def refused(exc: KafkaException) -> str:
    """A failed admin request in a few words: an authorization failure by its name and what to
    check (Kafka's own text for it can be a dump of the whole request), else the broker's text."""
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return str(exc)
    hint = refusal_hint(error)
    if hint is not None:
        return f"{error.name()} ({hint})"
    return error.str()


@dataclass(frozen=True, slots=True)
class AclReport:
    """What ``apply`` did: the grants it created and those already present."""

    created: tuple[Grant, ...]
    present: tuple[Grant, ...]


def _key(binding: Any) -> tuple[int, str, int, str, str, int, int]:
    return (
        int(binding.restype.value),
        str(binding.name),
        int(binding.resource_pattern_type.value),
        str(binding.principal),
        str(binding.host),
        int(binding.operation.value),
        int(binding.permission_type.value),
    )


class KafkaAcls:
    """The cluster's ACLs through the admin API (its principal needs ALTER on the cluster to
    create ACLs, DESCRIBE on the cluster to list them: an administrator's)."""

    def __init__(
        self, bootstrap: str, *, timeout: float = 15.0, config: Mapping[str, str] | None = None
    ) -> None:
        self._admin, self._errors = admin_client(bootstrap, config)
        self._bootstrap = bootstrap
        self._timeout = timeout

    def _wait(self, future: Any, what: str) -> Any:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return future.result(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            except TimeoutError:
                self._admin.poll(0)
                self._errors.check()
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"{what}: no answer from Kafka at {self._bootstrap} within {self._timeout:.0f} s"
                    ) from None
            except KafkaException as exc:
                self._admin.poll(0)
                self._errors.check()
                raise BrokerUnavailable(f"{what}: {refused(exc)}") from None

    def present(self, grants: Sequence[Grant]) -> list[Grant]:
        """Those of ``grants`` the cluster already has (exactly: same pattern, host ``*``, ALLOW)."""
        found: set[tuple[int, str, int, str, str, int, int]] = set()
        for who in sorted({grant.principal for grant in grants}):
            flt = AclBindingFilter(
                ResourceType.ANY,
                _ANY,
                ResourcePatternType.ANY,
                who,
                "*",
                AclOperation.ANY,
                AclPermissionType.ALLOW,
            )
            found.update(_key(b) for b in self._wait(self._admin.describe_acls(flt), "cannot list ACLs"))
        return [grant for grant in grants if _key(grant.binding()) in found]

    def apply(self, grants: Sequence[Grant]) -> AclReport:
        """Create the missing ones of ``grants`` (idempotent: creating a present ACL is a no-op
        in Kafka too, but the report tells the two apart)."""
        present = self.present(grants)
        missing = [grant for grant in grants if grant not in present]
        if missing:
            futures = self._admin.create_acls([grant.binding() for grant in missing])
            for future in futures.values():
                self._wait(future, "cannot create ACLs")
        return AclReport(created=tuple(missing), present=tuple(present))

    def bindings(self, who: str) -> list[Any]:
        """Every ACL binding of principal ``who`` (any resource, pattern and permission)."""
        flt = AclBindingFilter(
            ResourceType.ANY,
            _ANY,
            ResourcePatternType.ANY,
            who,
            _ANY,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        return list(self._wait(self._admin.describe_acls(flt), "cannot list ACLs"))
