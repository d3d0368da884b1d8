"""The viewer and its API as one ASGI application (Starlette): routes, access control,
security headers and the request log. Read-only: every database session it opens is
read-only (``postgres/reader.py``); the only POSTs are logging in and out.

Pages are rendered on the server (Jinja2, autoescaped) with no script at all; the
Content-Security-Policy forbids inline script and style. The API lives under ``/api/v1``
(``openapi.py`` describes it).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from baldur_audit.schemas.errors import AuditError, ChainBreak, ConfigError, StoreUnavailable

from ..evidence.build import ProofUnavailable
from ..evidence.export import ExportMismatch, ExportRefused
from ..postgres.search import LogFilter
from .access import Access, bearer
from .openapi import openapi_document
from .reads import FILTER_FIELDS, BundleRefused, LedgerReads, parse_filter, stamp
from .render import clip, compact_json, json_diff, pretty_json, segments

log = logging.getLogger(__name__)
access_log = logging.getLogger("baldur_audit.consumers.web.access")

HERE = Path(__file__).resolve().parent
COOKIE = "baldur_viewer_token"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
#: Paths anyone may fetch: the login form and the stylesheet.
PUBLIC_PATHS = ("/login", "/static/style.css")
VALUE_FIELDS = (
    "before",
    "after",
    "reason",
    "attributes",
    "actor",
    "target",
    "action",
    "source",
    "reject_reason",
    "trace_id",
)
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
CHECK_COMMANDS = (
    "baldur-audit check-proof --public-key checkpoint-keys.txt entry-{seq}.bundle.json",
    "python -m baldur_audit.consumers check-proof --public-key checkpoint-keys.txt entry-{seq}.bundle.json",
)

ViewRecorder = Callable[[str, int, str | None], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewerConfig:
    """How one server behaves: its access policy, the tracing link, recording of views."""

    access: Access
    trace_url: str | None = None
    record_view: ViewRecorder | None = None
    secure_cookie: bool = False
    title: str = "baldur-audit"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def json_response(value: Any, status: int = 200) -> Response:
    """JSON with times in UTC ISO 8601 and bytes in hex (as ``--json`` prints them)."""
    body = json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


def api_error(status: int, message: str) -> Response:
    return json_response({"error": message, "status": status}, status)


# -- access control, headers and the request log --------------------------------------------------


class Guard:
    """ASGI middleware: who is asking (or 401/403), the security headers on every response,
    ``Cache-Control: no-store`` on the API, and one log line per request."""

    def __init__(self, app: ASGIApp, *, access: Access) -> None:
        self.app = app
        self.access = access

    def who(self, request: Request) -> str | None:
        """The identity of the request's sender (None: not allowed)."""
        policy = self.access
        if policy.mode == "open":
            return "local"
        if policy.mode == "tokens":
            return policy.who_by_token(bearer(request.headers.get("authorization"))) or (
                policy.who_by_token(request.cookies.get(COOKIE))
            )
        peer = request.client.host if request.client else None
        assert policy.header is not None
        return policy.who_by_header(peer, request.headers.get(policy.header))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope)
        path = scope.get("path", "")
        api = path.startswith("/api/")
        who = self.who(request)
        status = [500]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if api or path.startswith("/entries/") or path in ("/keys.txt",):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            if who is None and path not in PUBLIC_PATHS:
                denied = self.refusal(request, api)
                await denied(scope, receive, send_with_headers)
            else:
                scope.setdefault("state", {})["who"] = who or "anonymous"
                await self.app(scope, receive, send_with_headers)
        finally:
            access_log.info(
                "%s %s %s who=%s %.1fms",
                scope.get("method", "?"),
                path[:300],
                status[0],
                who or "-",
                (time.perf_counter() - started) * 1000,
            )

    def refusal(self, request: Request, api: bool) -> Response:
        """401 (no or a wrong credential), 403 (a header from a peer that is not the proxy),
        or, for a page in token mode, the way to the login form."""
        policy = self.access
        if policy.mode == "header":
            peer = request.client.host if request.client else None
            if not policy.trusts(peer):
                message = "forbidden: requests must come through the trusted proxy"
                return api_error(403, message) if api else HTMLResponse(message, 403)
            message = f"unauthorized: the proxy sent no usable {policy.header} header"
            return api_error(401, message) if api else HTMLResponse(message, 401)
        if api:
            response = api_error(401, "unauthorized: send Authorization: Bearer <token>")
            response.headers["www-authenticate"] = 'Bearer realm="baldur-audit"'
            return response
        return RedirectResponse("/login", status_code=303)


# -- the application ---------------------------------------------------------------------------


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["segments"] = segments
    env.filters["clip"] = clip
    env.filters["stamp"] = lambda value: stamp(value) if value else ""
    env.filters["json"] = compact_json
    return env


def create_app(reads: LedgerReads, config: ViewerConfig) -> Starlette:
    """The viewer and API over ``reads``, guarded by ``config.access``."""
    templates = _templates()
    stylesheet = (HERE / "static" / "style.css").read_bytes()

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        try:
            banner = reads.banner()
        except AuditError as exc:
            banner = None
            log.warning("status banner unavailable: %s", exc)
        html = templates.get_template(name).render(
            title=config.title,
            banner=banner,
            who=request.scope.get("state", {}).get("who", "-"),
            login=config.access.mode == "tokens",
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def failure(request: Request, exc: Exception, api: bool) -> Response:
        """An exception as a status code and one line (never a traceback)."""
        if isinstance(exc, ConfigError):
            code, text = 400, str(exc)
        elif isinstance(exc, (ProofUnavailable, ExportRefused)):
            code, text = 404, str(exc)
        elif isinstance(exc, (ChainBreak, BundleRefused, ExportMismatch)):
            code, text = 409, f"tampered: {exc}"
        elif isinstance(exc, StoreUnavailable):
            code, text = 503, f"the ledger database is unavailable: {exc}"
        elif isinstance(exc, AuditError):
            code, text = 500, str(exc)
        else:
            log.error("unexpected error on %s: %s", request.url.path, type(exc).__name__, exc_info=exc)
            code, text = 500, f"unexpected error: {type(exc).__name__}"
        if api:
            return api_error(code, text)
        return page(request, "error.html", code, message=text, code=code)

    def guarded(api: bool) -> Callable[[Callable[[Request], Response]], Callable[[Request], Response]]:
        def wrap(endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
            def run(request: Request) -> Response:
                try:
                    return endpoint(request)
                except Exception as exc:  # the HTTP boundary: a status code, not a traceback
                    return failure(request, exc, api)

            run.__name__ = endpoint.__name__
            return run

        return wrap

    def seq_of(request: Request) -> int:
        text = request.path_params["seq"]
        if not text.isdigit() or not 1 <= int(text) <= 2**63 - 1:
            raise ConfigError("seq: a whole number from 1")
        return int(text)

    def viewed(request: Request, seq: int) -> None:
        if config.record_view is None:
            return
        peer = request.client.host if request.client else None
        try:
            config.record_view(request.scope["state"]["who"], seq, peer)
        except AuditError as exc:  # the view is served; the failure is logged
            log.error("could not record the view of entry %s: %s", seq, exc)

    def next_after(query: LogFilter, rows: list[dict[str, Any]], matched: int, more: bool) -> int | None:
        if query.after_seq is None or not rows or (len(rows) >= matched and not more):
            return None
        return int(rows[-1]["seq"])

    # -- API ------------------------------------------------------------------------------------

    @guarded(api=True)
    def api_entries(request: Request) -> Response:
        query = parse_filter(request.query_params, now=datetime.now(UTC))
        result = reads.page(query)
        return json_response(
            {
                "entries": result.entries,
                "matched": result.matched,
                "matched_more": result.capped,
                "next_after_seq": next_after(query, result.entries, result.matched, result.capped),
            }
        )

    @guarded(api=True)
    def api_entry(request: Request) -> Response:
        seq = seq_of(request)
        found = reads.entry(seq)
        if found is None:
            return api_error(404, f"no entry {seq}")
        viewed(request, seq)
        return json_response(found)

    @guarded(api=True)
    def api_bundle(request: Request) -> Response:
        seq = seq_of(request)
        text = reads.bundle(seq)
        viewed(request, seq)
        return Response(text.encode("ascii"), media_type="application/json")

    @guarded(api=True)
    def api_status(request: Request) -> Response:
        return json_response(reads.status())

    @guarded(api=True)
    def api_keys(request: Request) -> Response:
        if reads.public_keys is None:
            return api_error(404, "no checkpoint key is configured")
        return Response(reads.public_keys, media_type="text/plain; charset=utf-8")

    @guarded(api=True)
    def api_export(request: Request) -> Response:
        scratch = Path(tempfile.mkdtemp(prefix="baldur-serve-export-"))
        try:
            folder = reads.export(request.query_params, scratch)
            archive = scratch / "export.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                for path in sorted(folder.iterdir()):
                    tar.add(path, arcname=f"baldur-audit-export/{path.name}")
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return FileResponse(
            archive,
            media_type="application/gzip",
            filename="baldur-audit-export.tar.gz",
            background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
        )

    def api_openapi(request: Request) -> Response:
        return json_response(openapi_document())

    # -- viewer ---------------------------------------------------------------------------------

    def home(request: Request) -> Response:
        return RedirectResponse("/entries", status_code=303)

    @guarded(api=False)
    def timeline(request: Request) -> Response:
        params = request.query_params
        values = {name: (params.get(name) or "") for name in (*FILTER_FIELDS, "limit", "at")}
        incident = bool(values["at"])
        if incident:  # incident mode: what changed in the window before a moment
            if values["since"] or values["until"] or values["before"]:
                raise ConfigError("at (incident mode) cannot be combined with since/until/before")
            values["before"] = values["at"]
            values["window"] = values["window"] or "30m"
        query = parse_filter({**params, **values}, now=datetime.now(UTC))
        result = reads.page(query)
        keep = {k: v for k, v in values.items() if v and not (incident and k == "before")}
        following = next_after(query, result.entries, result.matched, result.capped)
        return page(
            request,
            "timeline.html",
            values=values,
            incident=incident,
            query=query,
            rows=result.entries,
            matched=result.matched,
            matched_more=result.capped,
            next_link=f"/entries?{urlencode({**keep, 'after_seq': following})}" if following else None,
            first_link=f"/entries?{urlencode({**keep, 'after_seq': 0})}"
            if query.after_seq is None and (len(result.entries) < result.matched or result.capped)
            else None,
            summary=_summary,
        )

    @guarded(api=False)
    def entry_page(request: Request) -> Response:
        seq = seq_of(request)
        found = reads.entry(seq)
        if found is None:
            return page(request, "error.html", 404, message=f"no entry {seq}", code=404)
        viewed(request, seq)
        rows, cut = json_diff(found.get("before"), found.get("after"))
        trace = found.get("trace_id")
        trace_link = (
            config.trace_url.replace("{trace_id}", trace)
            if config.trace_url and isinstance(trace, str) and _TRACE_ID.fullmatch(trace)
            else None
        )
        return page(
            request,
            "entry.html",
            entry=found,
            seq=seq,
            diff=rows,
            diff_cut=cut,
            trace_link=trace_link,
            keys_available=reads.public_keys is not None,
            commands=[command.format(seq=seq) for command in CHECK_COMMANDS],
            changed=sum(1 for row in rows if row.change != "same"),
        )

    @guarded(api=False)
    def value_page(request: Request) -> Response:
        seq = seq_of(request)
        name = request.path_params["field"]
        if name not in VALUE_FIELDS:
            raise ConfigError(f"field: one of {', '.join(VALUE_FIELDS)}")
        found = reads.entry(seq)
        if found is None:
            return page(request, "error.html", 404, message=f"no entry {seq}", code=404)
        value = found.get(name)
        text = value if isinstance(value, str) and name not in ("before", "after") else None
        return page(
            request,
            "value.html",
            seq=seq,
            field=name,
            whole=text if text is not None else pretty_json(value),
        )

    @guarded(api=False)
    def bundle_download(request: Request) -> Response:
        seq = seq_of(request)
        text = reads.bundle(seq)
        viewed(request, seq)
        return Response(
            text.encode("ascii"),
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="entry-{seq}.bundle.json"'},
        )

    @guarded(api=False)
    def keys_download(request: Request) -> Response:
        if reads.public_keys is None:
            return page(request, "error.html", 404, message="no checkpoint key is configured", code=404)
        return Response(
            reads.public_keys.encode("utf-8"),
            media_type="text/plain; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="checkpoint-keys.txt"'},
        )

    @guarded(api=False)
    def status_page(request: Request) -> Response:
        return page(request, "status.html", status_info=reads.status())

    def stylesheet_route(request: Request) -> Response:
        return Response(stylesheet, media_type="text/css", headers={"cache-control": "max-age=3600"})

    # -- logging in (token mode) --------------------------------------------------------------------

    def login_form(request: Request) -> Response:
        if config.access.mode != "tokens":
            return RedirectResponse("/entries", status_code=303)
        html = templates.get_template("login.html").render(title=config.title, failed=False)
        return HTMLResponse(html)

    async def login(request: Request) -> Response:
        if config.access.mode != "tokens":
            return RedirectResponse("/entries", status_code=303)
        body = await request.body()
        if len(body) > 8192:
            return HTMLResponse("request too large", 413)
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        who = config.access.who_by_token(token)
        if who is None:
            html = templates.get_template("login.html").render(title=config.title, failed=True)
            return HTMLResponse(html, status_code=401)
        response = RedirectResponse("/entries", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=12 * 3600,
            httponly=True,
            samesite="strict",
            secure=config.secure_cookie,
            path="/",
        )
        return response

    def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    routes = [
        Route("/api/v1/entries", api_entries),
        Route("/api/v1/entries/{seq}", api_entry),
        Route("/api/v1/entries/{seq}/bundle", api_bundle),
        Route("/api/v1/status", api_status),
        Route("/api/v1/keys", api_keys),
        Route("/api/v1/export", api_export),
        Route("/api/v1/openapi.json", api_openapi),
        Route("/", home),
        Route("/entries", timeline),
        Route("/entries/{seq}", entry_page),
        Route("/entries/{seq}/values/{field}", value_page),
        Route("/entries/{seq}/bundle.json", bundle_download),
        Route("/keys.txt", keys_download),
        Route("/status", status_page),
        Route("/static/style.css", stylesheet_route),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, access=config.access)])


def _summary(row: Mapping[str, Any], limit: int = 120) -> str:
    """One line saying what an entry changed: before → after, clipped."""
    if row.get("kind") == "rejected":
        return f"rejected: {row.get('reject_reason') or ''}"[:limit]
    if row.get("kind") == "schema":
        return "writer schema record: events of its fingerprint are read from the next entry on"[:limit]
    if row.get("pruned"):
        return "[pruned]"
    before = "∅" if row.get("before") is None else compact_json(row["before"])
    after = "∅" if row.get("after") is None else compact_json(row["after"])
    half = max(limit // 2 - 2, 8)
    before = before if len(before) <= half else before[: half - 1] + "…"
    after = after if len(after) <= half else after[: half - 1] + "…"
    return f"{before} → {after}"


__all__ = ["COOKIE", "CSP", "ViewerConfig", "create_app", "json_response"]
