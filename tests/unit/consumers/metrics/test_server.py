"""The metrics endpoint: addresses as operators write them (a bare port is loopback), the
three paths and their status codes, other methods and paths refused, and a port that cannot
be bound reported as a configuration error. Servers bind 127.0.0.1 (or ::1) on a port the
system picks."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from baldur_audit.consumers.metrics.server import MetricsServer, parse_address
from baldur_audit.schemas.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9464", ("127.0.0.1", 9464)),
        ("0", ("127.0.0.1", 0)),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),  # noqa: S104 (every interface, asked for explicitly)
        ("localhost:1", ("localhost", 1)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:65535", ("::", 65535)),
        (" 9464 ", ("127.0.0.1", 9464)),
    ],
)
def test_addresses_as_operators_write_them(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not HOST:PORT"),
        ("metrics", "is not HOST:PORT"),
        (":9464", "has no host"),
        ("127.0.0.1:", "the port must be a number"),
        ("127.0.0.1:http", "the port must be a number"),
        ("127.0.0.1:65536", "the port must be a number from 0 to 65535"),
        ("::1:9464", "is not HOST:PORT"),
        ("[::1]9464", "is not HOST:PORT"),
        ("a:b:c", "is not HOST:PORT"),
        ("-1", "is not HOST:PORT"),
    ],
)
def test_a_bad_address_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


class Readiness:
    def __init__(self) -> None:
        self.state: tuple[bool, str] = (False, "joining the chainer group")
        self.fail = False

    def __call__(self) -> tuple[bool, str]:
        if self.fail:
            raise RuntimeError("secret detail")
        return self.state


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("baldur_audit_test_total", "A test counter.", registry=registry).inc(3)
    return registry


@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[tuple[MetricsServer, Readiness]]:
    readiness = Readiness()
    server = MetricsServer(address="0", registry=registry, ready=readiness)
    server.start()
    try:
        yield server, readiness
    finally:
        server.close()


def request(server: MetricsServer, method: str, path: str, headers: dict[str, str] | None = None):  # noqa: ANN201
    host, port = server.bound
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def test_a_bare_port_binds_the_loopback_interface(served: tuple[MetricsServer, Readiness]) -> None:
    server, _ = served
    host, port = server.bound
    assert host == "127.0.0.1" and port > 0


def test_metrics_are_the_text_exposition_of_the_registry(served: tuple[MetricsServer, Readiness]) -> None:
    server, _ = served
    status, headers, body = request(server, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "baldur_audit_test_total 3.0" in body.splitlines()
    status, headers, body = request(
        server, "GET", "/metrics?name[]=x", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_liveness_and_readiness(served: tuple[MetricsServer, Readiness]) -> None:
    server, readiness = served
    assert request(server, "GET", "/livez")[::2] == (200, "ok\n")
    assert request(server, "GET", "/readyz")[::2] == (503, "joining the chainer group\n")
    readiness.state = (True, "standby")
    assert request(server, "GET", "/readyz")[::2] == (200, "standby\n")
    readiness.state = (True, "")
    assert request(server, "GET", "/readyz")[::2] == (200, "ok\n")
    readiness.fail = True  # a failing check is "not ready", never a traceback or its text
    status, _, body = request(server, "GET", "/readyz")
    assert (status, body) == (503, "readiness check failed: RuntimeError\n")
    assert request(server, "GET", "/livez")[0] == 200


def test_unknown_paths_and_other_methods_are_refused(served: tuple[MetricsServer, Readiness]) -> None:
    server, _ = served
    for path in ("/", "/metrics/", "/healthz", "/readyz/x"):
        assert request(server, "GET", path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"):
        status, headers, _ = request(server, method, "/metrics")
        assert (status, headers.get("Allow")) == (405, "GET"), method


def test_a_failing_collector_is_a_500_and_the_server_keeps_serving(
    served: tuple[MetricsServer, Readiness], registry: CollectorRegistry
) -> None:
    server, _ = served

    class Broken:
        def collect(self):  # noqa: ANN202
            raise RuntimeError("broken collector")

    registry.register(Broken())
    assert request(server, "GET", "/metrics")[0] == 500
    assert request(server, "GET", "/livez")[0] == 200


def test_a_port_in_use_is_a_configuration_error(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(address=f"127.0.0.1:{port}", registry=registry, ready=lambda: (True, ""))
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            server.start()


def test_close_releases_the_port_and_can_be_repeated(registry: CollectorRegistry) -> None:
    server = MetricsServer(address="127.0.0.1:0", registry=registry, ready=lambda: (True, ""))
    assert server.bound == ("127.0.0.1", 0)  # before start: what was asked for
    server.start()
    _, port = server.bound
    server.close()
    server.close()
    with MetricsServer(address=f"127.0.0.1:{port}", registry=registry, ready=lambda: (True, "")) as again:
        assert again.bound == ("127.0.0.1", port)
        assert request(again, "GET", "/livez")[0] == 200


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_an_ipv6_address(registry: CollectorRegistry) -> None:
    with MetricsServer(address="[::1]:0", registry=registry, ready=lambda: (True, "")) as server:
        host, port = server.bound
        assert host == "::1" and port > 0
        assert request(server, "GET", "/livez")[0] == 200
