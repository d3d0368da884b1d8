"""A secured Kafka broker and a TLS-only PostgreSQL cluster for the integration tests that prove
the ledger works through them (tests/integration/test_secured_stack.py).

- Certificates are made here with ``openssl`` for each session: a test CA, the broker's
  certificate (``localhost`` and ``127.0.0.1``), the PostgreSQL server's, client certificates
  (CN ``baldur``, the owner that runs ``init``, and CN ``baldur_chainer``, the runtime role of
  every other command), and a second CA that trusts none of them.
- The broker (deploy/kafka.sh with ``BALDUR_KAFKA_EXTRA_CONFIG``/``BALDUR_KAFKA_SCRAM``/
  ``BALDUR_KAFKA_CLIENT_CONFIG``) has one client listener, SASL_SSL on 127.0.0.1:19392 with
  SCRAM-SHA-512 (the KRaft controller listener, 127.0.0.1:19393, is no client listener: SASL
  PLAIN with one user, ``controller``, known to the broker's own configuration only). The SCRAM
  users ``admin`` (the broker's own inter-broker user) and ``baldur`` (the ledger's), and the
  least-privilege principals ``producer``, ``chainer`` and ``reader`` (``PRINCIPALS``), are
  created when the storage is formatted, with passwords drawn for the session. TLS client
  certificates are requested, not required: the SASL-only and the mTLS+SASL client
  configurations both connect.
- Authorization is on (KRaft's ``StandardAuthorizer``, no ACL: no access): ``admin``,
  ``controller`` and ``baldur`` are super users, so everything but the ACL test runs unhindered;
  ``producer``, ``chainer`` and ``reader`` can do only what ACLs grant them
  (tests/integration/test_acls.py grants them with ``baldur-audit acls --apply``).
- The cluster (deploy/postgres.sh with ``BALDUR_PG_SSL_*``) listens on 127.0.0.1:15532 with
  ``hostssl`` lines only and ``clientcert=verify-full``: a client must use TLS and present a
  certificate of the test CA whose CN is its role.

Both are stopped by their pid (the deploy scripts' ``stop``) when the session ends.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.dedicated import CHAINER_PASSWORD, CHAINER_USER, ROOT
from tests.support.dedicated import PASSWORD as PG_PASSWORD
from tests.support.stack import TEST_KEY

HOME = ROOT / ".local" / "secured"
KAFKA_PORT = 19392
CONTROLLER_PORT = 19393
PG_PORT = 15532
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
APP_USER = "baldur"
ADMIN_USER = "admin"
#: The KRaft controller listener's only user (SASL PLAIN): the broker's own connection to it.
CONTROLLER_USER = "controller"
#: SCRAM users that are no super users: what they may do, ACLs say.
PRINCIPALS = ("producer", "chainer", "reader")
#: openssl may take a while on a loaded machine; nothing here should take longer.
OPENSSL_TIMEOUT = 60


# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """The PEM files of one session (and the broker's PKCS#12 keystore)."""

    folder: Path
    ca: Path
    other_ca: Path
    broker_keystore: Path
    keystore_password: str
    pg_cert: Path
    pg_key: Path
    client_cert: Path
    client_key: Path
    #: The runtime role's client certificate (CN baldur_chainer): every command but `init`.
    chainer_cert: Path | None = None
    chainer_key: Path | None = None

    def key_bodies(self) -> list[str]:
        """The base64 lines of every private key made here: none may ever be printed."""
        lines = []
        for path in self.folder.glob("*.key"):
            lines += [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]
        return lines


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr[-2000:]}")


def _new_ca(folder: Path, name: str, subject: str) -> None:
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "3", "-subj", subject,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


def _new_leaf(folder: Path, name: str, *, cn: str, usage: str, san: str | None) -> None:
    """A key and a certificate signed by ``ca`` for ``cn`` (and the ``san`` alternative names)."""
    ext = folder / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature", f"extendedKeyUsage={usage}"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "3",
        "-extfile", ext.name, "-out", f"{name}.pem",
        cwd=folder,
    )  # fmt: skip
    (folder / f"{name}.key").chmod(0o600)


def make_certificates(folder: Path) -> Certificates:
    """A fresh test CA and every certificate the secured stack needs, in ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    _new_ca(folder, "ca", "/CN=baldur-audit test CA")
    _new_ca(folder, "other-ca", "/CN=an unrelated CA")
    servers = "DNS:localhost,IP:127.0.0.1"
    _new_leaf(folder, "broker", cn="localhost", usage="serverAuth,clientAuth", san=servers)
    _new_leaf(folder, "postgres", cn="localhost", usage="serverAuth", san=servers)
    _new_leaf(folder, "client", cn=APP_USER, usage="clientAuth", san=None)
    _new_leaf(folder, "chainer-client", cn=CHAINER_USER, usage="clientAuth", san=None)
    password = secrets.token_urlsafe(18)
    (folder / "keystore.pass").write_text(password)
    (folder / "keystore.pass").chmod(0o600)
    _openssl(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "kafka", "-out", "broker.p12", "-passout", "file:keystore.pass",
        cwd=folder,
    )  # fmt: skip
    return Certificates(
        folder=folder,
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        broker_keystore=folder / "broker.p12",
        keystore_password=password,
        pg_cert=folder / "postgres.pem",
        pg_key=folder / "postgres.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        chainer_cert=folder / "chainer-client.pem",
        chainer_key=folder / "chainer-client.key",
    )


# -- the stack -------------------------------------------------------------------------------------


def _deploy(name: str, *args: str, env: dict[str, str], timeout: float = 240) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"deploy/{name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def _write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class SecuredStack:
    """The secured broker and cluster of one session, and the client settings that reach them."""

    folder: Path
    certs: Certificates
    kafka_password: str
    admin_password: str
    controller_password: str = ""
    #: The password of each of ``PRINCIPALS``.
    principal_passwords: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return BOOTSTRAP

    # -- Kafka client configurations ------------------------------------------------------------

    def client_config(
        self,
        name: str,
        *,
        user: str = APP_USER,
        password: str | None = None,
        ca: Path | None = None,
        client_cert: bool = False,
        extra: tuple[str, ...] = (),
    ) -> Path:
        """A librdkafka properties file (SASL_SSL, SCRAM-SHA-512) in the session folder, with
        ``extra`` lines at its end."""
        lines = [
            "# baldur-audit test client: SASL_SSL with SCRAM-SHA-512",
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            f"sasl.username={user}",
            f"sasl.password={self.kafka_password if password is None else password}",
            f"ssl.ca.location={ca or self.certs.ca}",
            "ssl.endpoint.identification.algorithm=https",
        ]
        if client_cert:
            lines += [
                f"ssl.certificate.location={self.certs.client_cert}",
                f"ssl.key.location={self.certs.client_key}",
            ]
        lines += extra
        return _write_private(self.folder / f"{name}.properties", "\n".join(lines) + "\n")

    def principal_config(self, user: str) -> Path:
        """The client configuration of ``user``, one of ``PRINCIPALS`` or ``ADMIN_USER``."""
        if user == ADMIN_USER:
            return self.client_config(f"as-{user}", user=user, password=self.admin_password)
        return self.client_config(f"as-{user}", user=user, password=self.principal_passwords[user])

    def client_settings(self, config: Path | None = None) -> dict[str, str]:
        """A properties file as a dict of librdkafka settings (the test's own clients)."""
        settings = {"bootstrap.servers": BOOTSTRAP}
        for line in (config or self.client_config("app")).read_text().splitlines():
            if line and not line.startswith("#"):
                name, value = line.split("=", 1)
                settings[name] = value
        return settings

    # -- PostgreSQL -------------------------------------------------------------------------

    def dsn(
        self,
        *,
        dbname: str = "baldur_audit",
        sslmode: str = "verify-full",
        rootcert: Path | None = None,
        chainer: bool = False,
    ) -> str:
        """A libpq key/value DSN, TLS with the client certificate: of the owner ``baldur``, or
        with ``chainer`` of the runtime role ``baldur_chainer`` (deploy/postgres/bootstrap.sql)."""
        user, password = (CHAINER_USER, CHAINER_PASSWORD) if chainer else (APP_USER, PG_PASSWORD)
        cert, key = (
            (self.certs.chainer_cert, self.certs.chainer_key)
            if chainer
            else (self.certs.client_cert, self.certs.client_key)
        )
        return (
            f"host=127.0.0.1 port={PG_PORT} dbname={dbname} user={user} password={password} "
            f"sslmode={sslmode} sslrootcert={rootcert or self.certs.ca} sslcert={cert} sslkey={key}"
        )

    # -- what must never be printed ---------------------------------------------------------

    def secrets(self) -> list[str]:
        """Every password and private-key line of the session."""
        return [
            self.kafka_password,
            self.admin_password,
            self.controller_password,
            *self.principal_passwords.values(),
            self.certs.keystore_password,
            PG_PASSWORD,
            CHAINER_PASSWORD,
            *self.certs.key_bodies(),
        ]


def _kafka_env(stack: SecuredStack, extra: Path, scram: Path, ready: Path) -> dict[str, str]:
    return {
        "BALDUR_KAFKA_HOME": str(stack.folder.parent / "kafka"),
        "BALDUR_KAFKA_PORT": str(KAFKA_PORT),
        "BALDUR_KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "BALDUR_KAFKA_EXTRA_CONFIG": str(extra),
        "BALDUR_KAFKA_SCRAM": str(scram),
        "BALDUR_KAFKA_CLIENT_CONFIG": str(ready),
    }


def _pg_env(stack: SecuredStack) -> dict[str, str]:
    return {
        "BALDUR_PG_HOME": str(HOME / "pg"),
        "BALDUR_PG_PORT": str(PG_PORT),
        "BALDUR_PG_SSL_CERT": str(stack.certs.pg_cert),
        "BALDUR_PG_SSL_KEY": str(stack.certs.pg_key),
        "BALDUR_PG_SSL_CA": str(stack.certs.ca),
    }


def _broker_config(stack: SecuredStack) -> str:
    listener = f"SASL_SSL://127.0.0.1:{KAFKA_PORT}"
    controller = f"CONTROLLER://127.0.0.1:{CONTROLLER_PORT}"
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{stack.admin_password}";'
    )
    # The controller listener: SASL PLAIN, whose one user the JAAS line itself declares (SCRAM
    # credentials live in the metadata log, which a controller listener cannot wait for). A
    # PLAINTEXT controller listener would make every connection to it User:ANONYMOUS, and that
    # principal would have to be a super user.
    controller_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{CONTROLLER_USER}" password="{stack.controller_password}" '
        f'user_{CONTROLLER_USER}="{stack.controller_password}";'
    )
    return f"""\
listeners={listener},{controller}
advertised.listeners={listener},{controller}
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={controller_jaas}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
ssl.keystore.type=PKCS12
ssl.keystore.location={stack.certs.broker_keystore}
ssl.keystore.password={stack.certs.keystore_password}
ssl.truststore.type=PEM
ssl.truststore.location={stack.certs.ca}
listener.name.sasl_ssl.ssl.client.auth=requested
ssl.endpoint.identification.algorithm=https
super.users=User:{ADMIN_USER};User:{CONTROLLER_USER};User:{APP_USER}
"""


@contextmanager
def _ports_lock(timeout: float = 900) -> Iterator[None]:
    """One secured stack per machine at a time: two sessions would stop each other's services."""
    path = Path(tempfile.gettempdir()) / f"baldur-secured-{KAFKA_PORT}-{PG_PORT}.lock"
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another session held {path} for {timeout:.0f} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def secured_stack() -> Iterator[SecuredStack]:
    """Make the certificates, start the secured broker and cluster; stop both afterwards."""
    with _ports_lock():
        session = HOME / "session"
        certs = make_certificates(session / "certs")
        stack = SecuredStack(
            folder=session,
            certs=certs,
            kafka_password=secrets.token_urlsafe(18),
            admin_password=secrets.token_urlsafe(18),
            controller_password=secrets.token_urlsafe(18),
            principal_passwords={user: secrets.token_urlsafe(18) for user in PRINCIPALS},
        )
        extra = _write_private(session / "server-extra.properties", _broker_config(stack))
        scram = _write_private(
            session / "scram.txt",
            "".join(
                f"SCRAM-SHA-512=[name={user},password={password}]\n"
                for user, password in (
                    (ADMIN_USER, stack.admin_password),
                    (APP_USER, stack.kafka_password),
                    *stack.principal_passwords.items(),
                )
            ),
        )
        ready = stack.client_config("ready", user=ADMIN_USER, password=stack.admin_password)
        kafka_env = _kafka_env(stack, extra, scram, ready)
        pg_env = _pg_env(stack)
        # A previous session that died without stopping its services: stop them (by the pid
        # their scripts recorded), then start afresh with this session's certificates and users.
        _deploy("kafka.sh", "stop", env=kafka_env)
        _deploy("postgres.sh", "stop", env=pg_env)
        kafka_home = Path(kafka_env["BALDUR_KAFKA_HOME"])
        shutil.rmtree(kafka_home / "data", ignore_errors=True)
        (kafka_home / "cluster-id").unlink(missing_ok=True)
        try:
            _deploy("kafka.sh", "start", env=kafka_env)
            _deploy("postgres.sh", "start", env=pg_env)
            yield stack
        finally:
            for name, env in (("kafka.sh", kafka_env), ("postgres.sh", pg_env)):
                with suppress(Exception):
                    _deploy(name, "stop", env=env)


# -- a ledger on the stack ---------------------------------------------------------------------


@dataclass
class SecuredLedger:
    """A fresh topic and database on the secured stack, and the CLI's environment for them."""

    stack: SecuredStack
    topic: str
    dbname: str
    dsn: str
    env: dict[str, str]

    def cli(
        self, *args: str, extra_env: dict[str, str | None] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``baldur-audit ARGS`` in a subprocess (an ``extra_env`` value of None unsets it)."""
        import sys

        env = dict(self.env)
        for name, value in (extra_env or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return subprocess.run(
            [sys.executable, "-m", "baldur_audit.consumers", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@contextmanager
def secured_ledger(stack: SecuredStack, tmp_path: Path, config: Path) -> Iterator[SecuredLedger]:
    """A fresh topic and database on ``stack`` (removed afterwards); ``init`` is the test's."""
    import psycopg
    from confluent_kafka.admin import AdminClient

    suffix = uuid.uuid4().hex[:10]
    topic = f"baldur.secured.{suffix}"
    dbname = f"baldur_secured_{suffix}"
    with psycopg.connect(stack.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = {
        **os.environ,
        "BALDUR_KAFKA_BOOTSTRAP": stack.bootstrap,
        "BALDUR_KAFKA_CONFIG": str(config),
        "BALDUR_AUDIT_TOPIC": topic,
        # Every command runs as the chainer role over TLS with its own certificate; `init` as
        # the owner that made the database (not the shared stack's owner of the shell's env).
        "BALDUR_SQL_DSN": stack.dsn(dbname=dbname, chainer=True),
        "BALDUR_SQL_OWNER_DSN": stack.dsn(dbname=dbname),
        "BALDUR_SECRETS_AUDIT_SIGNING_KEY": TEST_KEY,
        "BALDUR_STATE_DIR": str(tmp_path / f"state-{suffix}"),
        "BALDUR_CHAINER_GROUP": f"baldur-secured-chainer-{suffix}",
        "BALDUR_CHECKPOINT_EVERY": "0",
        "BALDUR_CHECKPOINT_INTERVAL": "0",
    }
    env.pop("BALDUR_ENV", None)
    env.pop("BALDUR_SQL_READER_DSN", None)  # the shared stack's
    for name in ("BALDUR_SQL_CHAINER_ROLE", "BALDUR_SQL_READER_ROLE", "BALDUR_SQL_OPERATOR_ROLE"):
        env.pop(name, None)  # roles of the shared cluster: this one has none of them
    env["BALDUR_ALLOW_OWNER_ROLE"] = "true"  # one role owns and runs everything here
    try:
        yield SecuredLedger(stack=stack, topic=topic, dbname=dbname, dsn=env["BALDUR_SQL_DSN"], env=env)
    finally:
        settings: dict[str, Any] = {**stack.client_settings(config), "logger": logging.getLogger(__name__)}
        admin = AdminClient(settings)
        for future in admin.delete_topics([topic, f"{topic}.checkpoints"]).values():
            with suppress(Exception):  # the witness topic exists only once a checkpoint was made
                future.result(30)
        with psycopg.connect(stack.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
