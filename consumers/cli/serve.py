"""``serve``: the read-only HTTP API and web viewer (``consumers/web/``) for incident reviews
and auditors, and ``serve hash-token`` to make the hashed form of an access token."""

from __future__ import annotations

import logging
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from baldur_audit.producers import AuditTrail
from baldur_audit.schemas.errors import AuditError, ConfigError

from ..checkpoint_keys import CheckpointKeys
from ..kafka.source import KafkaTopicReader
from ..postgres import dsn_password, redact_dsn
from ..postgres.privileges import require_least_privilege
from ..postgres.reader import ReaderPool, connect_reader
from ..settings import READER_DSN_ENV, TRACE_URL_ENV, VIEWER_TOKENS_ENV, scrub
from ..times import parse_duration
from .app import App, pass_app

log = logging.getLogger(__name__)

_BRACKETED = re.compile(r"\[(?P<host>[^\]]+)\]:(?P<port>\d+)")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or a bare ``PORT`` (on 127.0.0.1); raises ConfigError."""
    text = text.strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    elif (bracketed := _BRACKETED.fullmatch(text)) is not None:
        host, port = bracketed["host"], bracketed["port"]
    elif text.count(":") == 1 and text.split(":")[0]:
        host, port = text.split(":")
    else:
        raise ConfigError(f"--address {text[:60]!r} is not HOST:PORT, [IPV6]:PORT or PORT")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--address {text[:60]!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def _public_keys(app: App) -> tuple[str | None, CheckpointKeys | None]:
    """The verifier keys as ``keys public`` prints them, and the checkpoint keys (the signer,
    when configured, signs exports); none when no checkpoint key is configured (nothing is
    generated)."""
    try:
        found = app.checkpoint_keys(signing=False)
    except ConfigError as exc:
        log.warning("no public keys to offer: %s", exc)
        return None, None
    if not found.verifiers:
        return None, found
    lines = [f"# checkpoint verifier keys of {found.origin} (for check-proof --public-key)"]
    lines += [str(key) for key in found.verifiers]
    return "\n".join(lines) + "\n", found


def _web() -> Any:
    """The viewer package: Starlette, uvicorn and Jinja2 come with the ``web`` extra, so a
    ledger-only install runs every other command without them."""
    try:
        from .. import web
        from ..web import server
    except ImportError as exc:
        raise ConfigError(
            f"serve needs the web extra ({exc.name} is missing): pip install 'baldur-audit[ledger,web]'"
        ) from None
    return web, server


def _tokens(app: App, token_file: Path | None) -> list[Any] | None:
    """The stored token hashes of ``--token-file`` or ``BALDUR_VIEWER_TOKENS`` (None: neither)."""
    parse_tokens = _web()[0].parse_tokens
    from_env = app.settings.environ.get(VIEWER_TOKENS_ENV, "").strip()
    if token_file is not None and from_env:
        raise ConfigError(f"give --token-file or {VIEWER_TOKENS_ENV}, not both")
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the token file {token_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        return parse_tokens(text, str(token_file))
    if from_env:
        return parse_tokens(from_env, VIEWER_TOKENS_ENV)
    return None


def _view_recorder(app: App) -> Any:
    """Records each view of an entry on the ledger (``--record-views``): action ``view``."""
    trail = AuditTrail(
        bootstrap=app.settings.bootstrap,
        topic=app.settings.topic,
        producer_config=app.kafka_config(),
        service="baldur-audit-serve",
        durability="memory",
    )

    def record(who: str, seq: int, peer: str | None) -> None:
        trail.record(
            actor=who,
            action="view",
            target=f"baldur-audit/entries/{seq}",
            source="api",
            reason="viewed in baldur-audit serve",
            client_ip=peer,
        )

    return record, trail


@click.group(invoke_without_command=True)
@click.option(
    "--address",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen. Anything but loopback needs --token-file or --trusted-header.",
)
@click.option(
    "--reader-dsn",
    envvar=READER_DSN_ENV,
    default=None,
    help=f"PostgreSQL DSN of a read-only role [env {READER_DSN_ENV}; default: --dsn]. "
    "Every session is read-only whatever the role.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Bearer tokens, stored hashed: 'sha256:<hex> [name]' lines [or env {VIEWER_TOKENS_ENV}].",
)
@click.option("--trusted-header", default=None, metavar="NAME", help="Identity header a fronting proxy sets.")
@click.option(
    "--trusted-proxy",
    multiple=True,
    metavar="CIDR",
    help="Honour --trusted-header only from these peers (repeatable).",
)
@click.option(
    "--trace-url",
    envvar=TRACE_URL_ENV,
    default=None,
    metavar="TEMPLATE",
    help=f"Link trace ids to a tracing UI: a URL with {{trace_id}} [env {TRACE_URL_ENV}].",
)
@click.option(
    "--verify-max-age",
    default="25h",
    show_default=True,
    metavar="DURATION",
    help="The banner says 'not verified since T' once the last intact result is older.",
)
@click.option(
    "--record-views", is_flag=True, help="Record each view of an entry on the ledger (action view)."
)
@click.option("--secure-cookie", is_flag=True, help="Mark the login cookie Secure (behind HTTPS).")
@click.pass_context
@pass_app
def serve(
    app: App,
    ctx: click.Context,
    address: str,
    reader_dsn: str | None,
    token_file: Path | None,
    trusted_header: str | None,
    trusted_proxy: tuple[str, ...],
    trace_url: str | None,
    verify_max_age: str,
    record_views: bool,
    secure_cookie: bool,
) -> None:
    """Serve the read-only API (/api/v1) and the web viewer."""
    if ctx.invoked_subcommand is not None:
        return
    dsn = reader_dsn or app.settings.dsn
    hidden = [dsn_password(dsn), dsn, *app.secrets()]
    trail = None
    try:
        with app.guard():
            web, server = _web()
            host, port = parse_listen(address)
            access = web.Access.build(
                tokens=_tokens(app, token_file), header=trusted_header, proxies=trusted_proxy, host=host
            )
            if trace_url and (not re.match(r"https?://", trace_url) or "{trace_id}" not in trace_url):
                raise ConfigError("--trace-url must be an http(s) URL containing {trace_id}")
            max_age = parse_duration(verify_max_age)
            with connect_reader(dsn) as probe:
                probe.read_meta()  # fail now, in one line, if `init` has not run (or is old)
                require_least_privilege(
                    probe,
                    process="serve",
                    production=app.settings.production,
                    allow_owner=app.settings.allow_owner_role,
                )
            public_keys, checkpoint_keys = _public_keys(app)
            settings = app.settings
            reader: list[KafkaTopicReader] = []

            def read_end() -> int:
                if not reader:
                    reader.append(
                        KafkaTopicReader(
                            bootstrap=settings.bootstrap, topic=settings.topic, config=app.kafka_config()
                        )
                    )
                return reader[0].watermarks(timeout=2.0)[1]

            recorder = None
            if record_views:
                recorder, trail = _view_recorder(app)
            pool = ReaderPool(dsn, size=8)
            reads = web.LedgerReads(
                pool,
                verifiers=checkpoint_keys.verifiers if checkpoint_keys else (),
                public_keys=public_keys,
                export_keys=checkpoint_keys,
                lag=web.LagProbe(read_end, ttl=10.0),
                verify_max_age=max_age,
            )
            web_app = web.create_app(
                reads,
                web.ViewerConfig(
                    access=access, trace_url=trace_url, record_view=recorder, secure_cookie=secure_cookie
                ),
            )
            sock = server.bind(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        # The request log and this line are the server's own output: shown at the default level,
        # in the configured format (--log-format json: one object per line).
        viewer_log = logging.getLogger("baldur_audit.consumers.web")
        viewer_log.setLevel(logging.INFO)
        viewer_log.info(
            "serving the viewer on http://%s:%s/ (API /api/v1, access: %s, database %s, read-only)",
            shown,
            bound_port,
            access.mode,
            redact_dsn(dsn),
        )
        try:
            server.serve_forever(web_app, sock)
        finally:
            pool.close()
            for one in reader:
                one.close()
    except AuditError as exc:  # after start-up: one line, scrubbed
        app.fail(scrub(f"error: {exc}", *hidden))
    finally:
        if trail is not None:
            trail.close(timeout=5)


@serve.command(name="hash-token")
@click.option("--new", "new", is_flag=True, help="Make a new random token and print it, then its hash.")
@pass_app
def hash_token_command(app: App, new: bool) -> None:
    """Print the line to store for a token (read from stdin): sha256:<hex>.

    With --new, print a new random token on the first line (hand it to the person) and the
    line to store on the second. Same as `printf %s TOKEN | sha256sum`.
    """
    with app.guard():
        hash_token = _web()[0].hash_token
    if new:
        token = secrets.token_urlsafe(32)
        click.echo(token)
        click.echo(hash_token(token))
        return
    if sys.stdin.isatty():
        raise click.UsageError("pipe the token on stdin (or use --new)")
    token = sys.stdin.read().strip()
    if not token:
        raise click.UsageError("no token on stdin")
    click.echo(hash_token(token))


COMMANDS = (serve,)
