"""The local stack's addresses and the product's default names, written once.

``make up`` (deploy/) starts Kafka and PostgreSQL on these addresses; the producer library,
the CLI, the tests, the benchmarks and the demo take them as defaults, and every one of them
is overridden by its ``BALDUR_*`` variable or CLI flag. Pure constants: nothing is read here.
"""

from __future__ import annotations

#: Kafka bootstrap servers of the local stack (``BALDUR_KAFKA_BOOTSTRAP``).
DEFAULT_BOOTSTRAP = "127.0.0.1:29092"
#: The ledger topic (``BALDUR_AUDIT_TOPIC``).
DEFAULT_TOPIC = "baldur.audit.events"
#: The ledger database of the local stack (``BALDUR_SQL_DSN``) as the chainer role, which owns
#: nothing: by default no command but ``init`` runs as the owner. A development-only password.
DEFAULT_DSN = "postgresql://baldur_chainer:baldur-chainer-local@127.0.0.1:25432/baldur_audit"
#: The same database as its owner, the role ``init`` runs as (``BALDUR_SQL_OWNER_DSN``; also
#: ``init``'s default while ``BALDUR_SQL_DSN`` is the default): it creates the tables and grants
#: the runtime roles (deploy/postgres/bootstrap.sql) their privileges.
DEFAULT_OWNER_DSN = "postgresql://baldur:baldur-local@127.0.0.1:25432/baldur_audit"
#: The local stack's read-only role (``BALDUR_SQL_READER_DSN``, and ``init``'s reader role).
LOCAL_READER_DSN = "postgresql://baldur_reader:baldur-reader-local@127.0.0.1:25432/baldur_audit"
#: The local stack's operator role: retention and erasure through ``baldur_prune`` and
#: ``baldur_erase`` only (``init``'s operator role).
LOCAL_OPERATOR_DSN = "postgresql://baldur_operator:baldur-operator-local@127.0.0.1:25432/baldur_audit"
#: The chainers' consumer group (``BALDUR_CHAINER_GROUP``).
DEFAULT_GROUP = "baldur-audit-chainer"
#: The local stack's database superuser: for tests, benchmarks and the demo, which create and
#: drop scratch databases and play the tamperer; the product itself never uses it.
LOCAL_ADMIN_DSN = "postgresql://postgres:baldur-local-admin@127.0.0.1:25432/postgres"
