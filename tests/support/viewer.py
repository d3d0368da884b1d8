"""Helpers of the viewer's tests: ``baldur-audit serve`` as a real process on a port of
19800-19809, plain HTTP requests to it, and a headless Chromium from Debian's packages driven by
Selenium (pointed at /usr/bin/chromium and /usr/bin/chromedriver, so that Selenium Manager never
downloads anything)."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Ledger

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(19800, 19810)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Screenshots of the browser tests: artifacts of a run, never committed (.local/ is ignored).
ARTIFACTS = ROOT / ".local" / "artifacts" / "viewer"


def free_port() -> int:
    """A free port of 19800-19809; the pytest-xdist workers take disjoint halves of them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    ports = list(PORTS)
    if worker.startswith("gw") and worker[2:].isdigit():
        half = int(worker[2:]) % 2
        ports = ports[half * 5 : half * 5 + 5]
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports[0]}-{ports[-1]}")


@dataclass
class Reply:
    """An HTTP response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Viewer:
    """A running ``baldur-audit serve``."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        """One request, redirects not followed."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def log(self) -> str:
        """What the server wrote on stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_viewer(
    ledger: Ledger,
    tmp_path: Path,
    *args: str,
    extra_env: Mapping[str, str] | None = None,
    address: str | None = None,
) -> Iterator[Viewer]:
    """``baldur-audit serve`` on this ledger until the block ends (stopped by its PID)."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}-{time.monotonic_ns()}.log"
    env = {**ledger.env, **(extra_env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "baldur_audit.consumers",
                "serve",
                "--address",
                address or f"127.0.0.1:{port}",
                *args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    viewer = Viewer(port, process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}: {viewer.log()}")
            try:
                if viewer.request("/static/style.css").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not answer within 30 s: {viewer.log()}")
            time.sleep(0.1)
        yield viewer
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def serve_refusal(ledger: Ledger, *args: str, extra_env: Mapping[str, str] | None = None) -> Any:
    """Run ``serve`` expecting it to refuse to start (bounded in time)."""
    return ledger.cli("serve", *args, timeout=30, extra_env=dict(extra_env or {}))


def require_browser() -> None:
    """Skip (locally) or fail (CI=true) without Debian's chromium and chromium-driver
    (``deploy/browser.sh install`` installs them)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    message = "chromium/chromedriver missing (run deploy/browser.sh install)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium(downloads: Path, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium (Debian's) under Selenium; files it downloads land in ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container: the sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    downloads.mkdir(parents=True, exist_ok=True)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    # Selenium Manager must never fetch a browser or a driver: both paths are given, and it is
    # told it is offline.
    os.environ["SE_OFFLINE"] = "true"
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """Keep a screenshot of the page as a test artifact (``.local/artifacts/viewer/``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for_file(folder: Path, pattern: str, timeout: float = 30) -> Path:
    """The file matching ``pattern`` that a download completes in ``folder``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(pattern) if not p.name.endswith(".crdownload")]
        if done and not list(folder.glob("*.crdownload")):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} was downloaded into {folder}: {sorted(os.listdir(folder))}")


def cli_in(ledger: Ledger, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``baldur-audit ARGS`` as an auditor runs it: no ledger settings at all (no DSN, no key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALDUR_")}
    return subprocess.run(
        [sys.executable, "-m", "baldur_audit.consumers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


__all__: Sequence[str] = [
    "Reply",
    "Viewer",
    "chromium",
    "cli_in",
    "free_port",
    "require_browser",
    "running_viewer",
    "screenshot",
    "serve_refusal",
    "wait_for_file",
]
