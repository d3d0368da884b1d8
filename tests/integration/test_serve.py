"""``baldur-audit serve`` against the real stack, over HTTP: the API's filters and keyset pages
agree with SQL on the same ledger, an entry, its bundle (the bytes of ``prove``, valid for
``check-proof``) and the keys, the status and its banner following ``verify --record``, the
status codes of bad requests, access control (tokens, the sign-in form, a trusted proxy's
header, refusals at start-up), read-only sessions, the security headers, hostile content
escaped in the HTML, and views recorded on the ledger when asked."""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest

from baldur_audit.consumers.postgres.reader import connect_reader
from baldur_audit.consumers.web.access import hash_token
from baldur_audit.schemas.errors import StoreRefused
from tests.support.incident import FRAUD_RULES, HOSTILE, INCIDENT_SEQS, JS_URL, SCRIPT, sealed_incident
from tests.support.stack import Ledger, fresh_ledger, require_services, with_dbname
from tests.support.viewer import Viewer, cli_in, running_viewer, serve_refusal

pytestmark = pytest.mark.integration

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, Viewer]]:
    """One sealed, checkpointed and verified incident ledger, served without access control
    on loopback (read by the tests of this module, never changed)."""
    require_services()
    tmp_path = tmp_path_factory.mktemp("serve")
    with fresh_ledger(tmp_path) as led:
        sealed_incident(led)
        with running_viewer(led, tmp_path) as viewer:
            yield led, viewer


def _sql_seqs(ledger: Ledger, where: str, params: tuple[Any, ...] = ()) -> list[int]:
    with ledger.app() as conn:
        return [
            row[0]
            for row in conn.execute(f"SELECT seq FROM audit_entries WHERE {where} ORDER BY seq", params)
        ]


def _api(viewer: Viewer, **params: Any) -> Any:
    reply = viewer.request("/api/v1/entries?" + urlencode(params))
    assert reply.status == 200, reply.text
    return reply.json()


def test_filters_and_keyset_pages_agree_with_sql(incident: tuple[Ledger, Viewer]) -> None:
    ledger, viewer = incident
    cases = [
        ({"target": "payments.*"}, "target LIKE 'payments.%%' AND kind = 'event'", ()),
        ({"actor": "alice"}, "actor = 'alice'", ()),
        ({"action": "rollback"}, "action = 'rollback'", ()),
        ({"trace_id": f"{2 + 0xABC:032x}"}, "trace_id = %s", (f"{2 + 0xABC:032x}",)),
        (
            {"since": "2026-11-29T13:30:00Z", "until": "2026-11-29T14:02Z"},
            "occurred_at >= '2026-11-29T13:30Z' AND occurred_at < '2026-11-29T14:02Z'",
            (),
        ),
        (
            {"target": "payments.*", "before": "2026-11-29T14:05Z", "window": "30m"},
            "target LIKE 'payments.%%' AND occurred_at >= '2026-11-29T13:35Z'"
            " AND occurred_at < '2026-11-29T14:05Z'",
            (),
        ),
        ({"kind": "all"}, "true", ()),
        ({"kind": "rejected"}, "kind = 'rejected'", ()),
    ]
    for params, where, args in cases:
        found = _api(viewer, **params)
        expected = _sql_seqs(ledger, where, args)
        assert sorted(e["seq"] for e in found["entries"]) == expected, params
        assert found["matched"] == len(expected), params
    incident_page = _api(viewer, target="payments.*", before="2026-11-29T14:05Z", window="30m")
    assert [e["seq"] for e in incident_page["entries"]] == INCIDENT_SEQS

    # Keyset paging: pages of 2 from after seq 0 cover every match once, in seq order.
    seen: list[int] = []
    after = 0
    while after is not None:
        page = _api(viewer, target="payments.*", after_seq=after, limit=2)
        assert len(page["entries"]) <= 2
        seen += [e["seq"] for e in page["entries"]]
        after = page["next_after_seq"]
    assert seen == _sql_seqs(ledger, "target LIKE 'payments.%%' AND kind = 'event'")
    newest = _api(viewer, limit=3)  # without after_seq: the newest three, oldest first
    assert [e["seq"] for e in newest["entries"]] == [5, 6, 7] and newest["next_after_seq"] is None

    entry = viewer.request(f"/api/v1/entries/{FRAUD_RULES}").json()
    assert entry["actor"] == "bob" and entry["after"]["rules"]["velocity"]["max"] == 50
    assert entry["before"]["rules"]["countries"] == ["DE", "FR"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/entries?limit=0", 400),
        ("/api/v1/entries?limit=1001", 400),
        ("/api/v1/entries?since=yesterday-ish", 400),
        ("/api/v1/entries?before=1h&since=2h", 400),
        ("/api/v1/entries?kind=secret", 400),
        ("/api/v1/entries?after_seq=-1", 400),
        ("/api/v1/entries/0", 400),
        ("/api/v1/entries/abc", 400),
        ("/api/v1/entries/99", 404),
        ("/api/v1/entries/99/bundle", 404),
        ("/api/v1/nothing", 404),
        ("/entries/99", 404),
        ("/entries/1/values/payload", 400),
    ],
)
def test_bad_requests_get_their_status_codes(incident: tuple[Ledger, Viewer], path: str, status: int) -> None:
    _, viewer = incident
    reply = viewer.request(path)
    assert reply.status == status, reply.text
    if path.startswith("/api/v1/entries"):
        assert reply.json()["status"] == status and reply.json()["error"]


def test_the_bundle_is_the_bytes_of_prove_and_checks_offline(
    incident: tuple[Ledger, Viewer], tmp_path: Path
) -> None:
    ledger, viewer = incident
    reply = viewer.request(f"/api/v1/entries/{HOSTILE}/bundle")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    assert reply.body == ledger.cli("prove", str(HOSTILE)).stdout.encode("ascii")
    keys = viewer.request("/api/v1/keys")
    assert keys.status == 200 and keys.text == ledger.cli("keys", "public").stdout
    (tmp_path / "bundle.json").write_bytes(reply.body)
    (tmp_path / "keys.txt").write_text(keys.text, encoding="utf-8")
    checked = cli_in(ledger, "check-proof", "bundle.json", "--public-key", "keys.txt", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert viewer.request(f"/entries/{HOSTILE}/bundle.json").body == reply.body
    document = viewer.request("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/entries/{seq}/bundle" in document["paths"]


def test_security_headers_and_hostile_content_as_text(incident: tuple[Ledger, Viewer]) -> None:
    _, viewer = incident
    for path in ("/entries", f"/entries/{HOSTILE}", "/status", "/api/v1/entries", "/login"):
        reply = viewer.request(path)
        assert reply.headers["content-security-policy"] == CSP, path
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert reply.headers["x-frame-options"] == "DENY"
    assert viewer.request("/api/v1/status").headers["cache-control"] == "no-store"
    page = viewer.request(f"/entries/{HOSTILE}").text
    assert "<script" not in page and "<img" not in page and "<iframe" not in page
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in page
    assert f'href="{JS_URL}' not in page and "javascript:alert(document.cookie)" in page
    assert "&amp;lt;b&amp;gt;not bold" in page  # an entity in the data shows as typed
    assert '<span class="ctl" title="hidden character">\\u202e</span>' in page
    assert "\u202e" not in page and "\u200b" not in page
    assert "more characters" in page and f"/entries/{HOSTILE}/values/after" in page
    assert len(page) < 120_000  # the 200 kB value is cut
    whole = viewer.request(f"/entries/{HOSTILE}/values/after").text
    assert "A" * 200_000 in whole and "<img" not in whole
    api = viewer.request(f"/api/v1/entries/{HOSTILE}").json()
    assert api["target"] == f"payments.{SCRIPT}" and len(api["after"]["big"]) == 200_000


def test_the_banner_follows_the_recorded_verify_results(ledger: Ledger, tmp_path: Path) -> None:
    ledger.produce_events(4, target="payments.limit")
    assert ledger.cli("chain", "--until-idle", "1").returncode == 0
    with running_viewer(ledger, tmp_path) as viewer:
        status = viewer.request("/api/v1/status").json()
        assert status["head"]["seq"] == 4 and status["lag"] == 0 and status["checkpoint"] is None
        assert status["banner"] == {
            "state": "unverified",
            "text": "not verified since: never (no verify result was recorded)",
        }
        assert ledger.cli("verify").returncode == 0  # without --record: nothing recorded
        assert viewer.request("/api/v1/status").json()["last_verify"] is None
        assert ledger.cli("verify", "--record").returncode == 0
        status = viewer.request("/api/v1/status").json()
        assert status["banner"]["state"] == "intact" and status["last_verify"]["head_seq"] == 4
        assert 'data-state="intact"' in viewer.request("/entries").text
    with running_viewer(ledger, tmp_path, "--verify-max-age", "1s") as viewer:
        time.sleep(1.5)  # the intact result grows older than --verify-max-age
        banner = viewer.request("/api/v1/status").json()["banner"]
        assert banner["state"] == "unverified" and banner["text"].startswith("not verified since 20")
    with running_viewer(ledger, tmp_path) as viewer:
        with ledger.admin() as admin:
            admin.execute("UPDATE audit_entries SET reason = 'nothing to see' WHERE seq = 3")
        done = ledger.cli("verify", "--record")
        assert done.returncode == 1, done.stdout + done.stderr
        status = viewer.request("/api/v1/status").json()
        assert status["banner"]["state"] == "tampered"
        assert status["banner"]["text"].startswith("tampered at seq 3 (modified)")
        assert status["last_verify"]["break_seq"] == 3
        assert "tampered at seq 3" in viewer.request("/entries").text
    # The recorded results themselves are append-only.
    with ledger.app() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE verify_results SET status = 'intact'")


def test_tokens_are_asked_for_checked_and_logged(ledger: Ledger, tmp_path: Path) -> None:
    ledger.produce_events(2)
    assert ledger.cli("chain", "--until-idle", "1").returncode == 0
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token('s3cret-token')} oncall\n# a comment\n", encoding="utf-8")
    with running_viewer(ledger, tmp_path, "--token-file", str(tokens)) as viewer:
        for token in (None, "wrong", "s3cret-token " + "x" * 5000):
            refused = viewer.request("/api/v1/entries", token=token)
            assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert viewer.request("/api/v1/entries", token="s3cret-token").status == 200
        assert viewer.request("/api/v1/entries/1", token="s3cret-token").json()["seq"] == 1
        page = viewer.request("/entries")  # a person is sent to the sign-in form
        assert page.status == 303 and page.headers["location"] == "/login"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        wrong = viewer.request("/login", method="POST", body=b"token=nope", headers=form)
        assert wrong.status == 401 and "set-cookie" not in wrong.headers
        signed_in = viewer.request("/login", method="POST", body=b"token=s3cret-token", headers=form)
        assert signed_in.status == 303
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert viewer.request("/entries", headers={"Cookie": cookie.split(";")[0]}).status == 200
        log = viewer.log()
    assert "GET /api/v1/entries 200 who=oncall" in log
    assert "GET /api/v1/entries 401 who=-" in log
    assert "s3cret-token" not in log

    # The same hashes from the environment; the API, with the token from `hash-token --new`.
    made = ledger.cli("serve", "hash-token", "--new").stdout.splitlines()
    assert len(made) == 2 and made[1] == hash_token(made[0])
    assert ledger.cli("serve", "hash-token", input_text="s3cret-token").stdout.strip() == hash_token(
        "s3cret-token"
    )
    env = {"BALDUR_VIEWER_TOKENS": f"{made[1]} ci", "BALDUR_LOG_FORMAT": "json"}
    with running_viewer(ledger, tmp_path, extra_env=env) as viewer:
        assert viewer.request("/api/v1/status", token=made[0]).status == 200
        assert viewer.request("/api/v1/status", token="s3cret-token").status == 401
        viewer.request("/static/style.css")  # its line is written after the one before
        lines = [json.loads(line) for line in viewer.log().splitlines()]
    assert any(line["message"].startswith("GET /api/v1/status 200 who=ci ") for line in lines)
    assert made[0] not in json.dumps(lines)


def test_a_trusted_proxy_header_counts_only_from_the_proxy(ledger: Ledger, tmp_path: Path) -> None:
    args = ("--trusted-header", "X-Forwarded-User")
    with running_viewer(ledger, tmp_path, *args, "--trusted-proxy", "127.0.0.0/8") as viewer:
        assert (
            viewer.request("/api/v1/status", headers={"X-Forwarded-User": "dana@example.com"}).status == 200
        )
        assert viewer.request("/api/v1/status").status == 401  # the proxy sent no identity
        # A bearer token means nothing in this mode.
        assert viewer.request("/api/v1/status", token="anything").status == 401
        log = viewer.log()
    assert "GET /api/v1/status 200 who=dana@example.com" in log
    with running_viewer(ledger, tmp_path, *args, "--trusted-proxy", "10.9.0.0/16") as viewer:
        reply = viewer.request("/api/v1/status", headers={"X-Forwarded-User": "dana@example.com"})
        assert reply.status == 403  # not from the proxy: the header is not believed


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("--address", "0.0.0.0:19809"), {}, "refusing to serve on 0.0.0.0 without access control"),
        (
            ("--token-file", "TOKENS", "--trusted-header", "X-User", "--trusted-proxy", "10.0.0.1"),
            {},
            "not both",
        ),
        (("--trusted-header", "X-User"), {}, "--trusted-header needs --trusted-proxy"),
        (("--trusted-proxy", "10.0.0.1"), {}, "--trusted-proxy needs --trusted-header"),
        (("--token-file", "TOKENS"), {"BALDUR_VIEWER_TOKENS": "x"}, "not both"),
        ((), {"BALDUR_VIEWER_TOKENS": "hunter2-the-token"}, "BALDUR_VIEWER_TOKENS: item 1 is not"),
        (("--address", "nowhere"), {}, "is not HOST:PORT"),
        (("--trace-url", "javascript:alert(1)/{trace_id}"), {}, "--trace-url must be an http(s) URL"),
        (("--reader-dsn", "postgresql://nobody:pw-9a7@127.0.0.1:1/x"), {}, "cannot connect to PostgreSQL"),
    ],
)
def test_serve_refuses_to_start_in_one_line(
    incident: tuple[Ledger, Viewer], tmp_path: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    ledger, _ = incident
    tokens = tmp_path / "tokens"
    tokens.write_text(hash_token("t") + "\n", encoding="utf-8")
    done = serve_refusal(ledger, *(str(tokens) if a == "TOKENS" else a for a in args), extra_env=env)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    assert "hunter2" not in done.stderr and "pw-9a7" not in done.stderr


def test_every_session_is_read_only_even_with_the_owners_dsn(ledger: Ledger, tmp_path: Path) -> None:
    with connect_reader(ledger.dsn) as store, pytest.raises(StoreRefused, match="read-only"):
        with store.transaction("write") as conn:
            conn.execute(
                "INSERT INTO verify_results (tool, mode, status) VALUES ('verify', 'full', 'intact')"
            )
    # A role that can only read serves the viewer (the README's set-up).
    role = f"viewer_{ledger.dbname[-10:]}"
    with psycopg.connect(ledger.admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'viewer-pw'")
        admin.execute(f'GRANT CONNECT ON DATABASE "{ledger.dbname}" TO {role}')
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        ledger.produce_events(2)
        assert ledger.cli("chain", "--until-idle", "1").returncode == 0
        params = psycopg.conninfo.conninfo_to_dict(ledger.dsn)
        params.update(user=role, password="viewer-pw")
        reader = with_dbname(
            psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}), ledger.dbname
        )
        with running_viewer(ledger, tmp_path, extra_env={"BALDUR_SQL_READER_DSN": reader}) as viewer:
            assert [e["seq"] for e in viewer.request("/api/v1/entries").json()["entries"]] == [1, 2]
            assert viewer.request("/api/v1/status").json()["head"]["seq"] == 2
            assert "viewer-pw" not in viewer.log()
    finally:
        with psycopg.connect(ledger.admin_dsn, autocommit=True) as admin:
            admin.execute(f'REVOKE ALL ON DATABASE "{ledger.dbname}" FROM {role}')
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_views_are_recorded_on_the_ledger_only_when_asked(ledger: Ledger, tmp_path: Path) -> None:
    ledger.produce_events(1)
    assert ledger.cli("chain", "--until-idle", "1").returncode == 0
    with running_viewer(ledger, tmp_path) as viewer:
        assert viewer.request("/entries/1").status == 200
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token('tok')} erin\n", encoding="utf-8")
    with running_viewer(ledger, tmp_path, "--token-file", str(tokens), "--record-views") as viewer:
        assert viewer.request("/api/v1/entries/1", token="tok").status == 200
    assert ledger.cli("chain", "--until-idle", "1").returncode == 0
    views = [json.loads(line) for line in ledger.cli("log", "--action", "view", "--json").stdout.splitlines()]
    assert [(v["actor"], v["target"], v["seq"]) for v in views] == [("erin", "baldur-audit/entries/1", 2)]


def test_the_monitor_records_each_round_for_the_banner(ledger: Ledger, tmp_path: Path) -> None:
    ledger.produce_events(3)
    assert ledger.cli("chain", "--until-idle", "1").returncode == 0
    done = ledger.cli("monitor", "--once", "--no-witness", "--state", str(tmp_path / "monitor.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    with running_viewer(ledger, tmp_path) as viewer:
        status = viewer.request("/api/v1/status").json()
    assert status["last_verify"]["tool"] == "monitor" and status["last_verify"]["mode"] == "full"
    assert status["banner"]["text"].startswith("intact: verified through seq 3 by monitor at ")


def test_an_export_over_the_api_checks_offline(incident: tuple[Ledger, Viewer], tmp_path: Path) -> None:
    ledger, viewer = incident
    reply = viewer.request("/api/v1/export?first_seq=3&last_seq=6&format=csv")
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"] == "application/gzip"
    (tmp_path / "export.tar.gz").write_bytes(reply.body)
    with tarfile.open(tmp_path / "export.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "baldur-audit-export"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8").split("\n\n")[0])
    assert (manifest["first_seq"], manifest["last_seq"]) == (3, 6)
    (tmp_path / "keys.txt").write_text(viewer.request("/api/v1/keys").text, encoding="utf-8")
    checked = cli_in(ledger, "check-export", str(folder), "--public-key", "keys.txt", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert viewer.request("/api/v1/export?format=xml").status == 400
    assert viewer.request("/api/v1/export?first_seq=1&since=2h").status == 400
    assert viewer.request("/api/v1/export?since=2030-01-01T00:00Z").status == 404
    everything = viewer.request("/api/v1/export?since=1h")  # broker time: sealed minutes ago
    assert everything.status == 200 and everything.body[:2] == b"\x1f\x8b"


def test_trace_ids_link_to_the_tracing_ui_when_configured(
    incident: tuple[Ledger, Viewer], tmp_path: Path
) -> None:
    ledger, plain = incident
    trace = f"{FRAUD_RULES - 1 + 0xABC:032x}"
    assert 'href="https://tracing.example' not in plain.request(f"/entries/{FRAUD_RULES}").text
    url = "https://tracing.example/trace/{trace_id}?from=baldur"
    with running_viewer(ledger, tmp_path, "--trace-url", url) as viewer:
        page = viewer.request(f"/entries/{FRAUD_RULES}").text
    assert (
        f'<a href="https://tracing.example/trace/{trace}?from=baldur" rel="noreferrer noopener">{trace}</a>'
        in page
    )


def test_matches_are_counted_up_to_a_limit(incident: tuple[Ledger, Viewer]) -> None:
    from baldur_audit.consumers.postgres.search import LogFilter, search_page

    ledger, _ = incident
    with connect_reader(ledger.dsn) as store:
        exact = search_page(store, LogFilter(limit=2))
        capped = search_page(store, LogFilter(limit=2, count_limit=4))
        enough = search_page(store, LogFilter(limit=2, count_limit=7))
        paged = search_page(store, LogFilter(limit=2, count_limit=4, after_seq=4))
    assert (exact.matched, exact.capped) == (7, False)
    assert (capped.matched, capped.capped) == (4, True)
    assert (enough.matched, enough.capped) == (7, False)
    assert (paged.matched, paged.capped) == (3, False)
    assert [e["seq"] for e in capped.entries] == [e["seq"] for e in exact.entries] == [6, 7]
