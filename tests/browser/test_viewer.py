"""The viewer as a person uses it, in a real headless Chromium (Debian's, driven by Selenium):
sign in with a token, find what changed in payments in the 30 minutes before 14:05, open the
change and read its before → after diff, download its evidence bundle and the public keys and
check them offline with ``check-proof``, see the banner turn to "tampered at seq N" after a
superuser edits an entry and ``verify --record`` runs, and see hostile producer content
rendered as text — no script runs, no dialog opens. Screenshots are kept in
``.local/artifacts/viewer/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from baldur_audit.consumers.web.access import hash_token
from tests.support.incident import (
    BIG,
    FRAUD_RULES,
    HOSTILE,
    INCIDENT_SEQS,
    JS_URL,
    SCRIPT,
    sealed_incident,
)
from tests.support.stack import Ledger
from tests.support.viewer import chromium, cli_in, running_viewer, screenshot, wait_for_file

pytestmark = pytest.mark.integration

TOKEN = "reviewer-token-6f1c2a"


def _wait(driver: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(condition)


def _no_dialog(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (the access is the check)


def _no_script_ran(driver: Any) -> None:
    """No script element in the page, no dialog, and nothing a hostile handler would set."""
    assert driver.execute_script("return document.scripts.length") == 0
    assert driver.execute_script("return document.querySelectorAll('iframe, img, object, embed').length") == 0
    assert (
        driver.execute_script(
            "return [...document.querySelectorAll('a[href]')].filter("
            "a => !a.href.startsWith(location.origin) && !a.href.startsWith('http')).length"
        )
        == 0
    )
    _no_dialog(driver)


def test_a_reviewer_finds_what_changed_before_an_incident_and_checks_it(
    ledger: Ledger, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    sealed_incident(ledger)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# viewer tokens\n{hash_token(TOKEN)} reviewer\n", encoding="utf-8")
    downloads = tmp_path / "downloads"
    with (
        running_viewer(ledger, tmp_path, "--token-file", str(tokens)) as viewer,
        chromium(downloads) as driver,
    ):
        # Signing in: the timeline sends a stranger to the login form.
        driver.get(f"{viewer.base}/entries")
        assert driver.current_url.endswith("/login")
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "signin").click()
        # The refusal comes back to /login: wait for the new page, not just any /login URL.
        _wait(driver, lambda d: d.find_elements(By.ID, "error"))
        assert "not valid" in driver.find_element(By.ID, "error").text
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "signin").click()
        _wait(driver, lambda d: d.current_url.endswith("/entries"))
        banner = driver.find_element(By.ID, "banner")
        assert banner.get_attribute("data-state") == "intact"
        assert "intact: verified through seq 7" in banner.text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")) == 7
        screenshot(driver, "1-timeline")

        # Incident mode: payments, the 30 minutes before 14:05.
        driver.find_element(By.NAME, "target").send_keys("payments.*")
        driver.find_element(By.NAME, "at").send_keys("2026-11-29T14:05")
        driver.find_element(By.NAME, "window").send_keys("30m")
        driver.find_element(By.ID, "apply").click()
        _wait(driver, lambda d: "at=" in d.current_url)
        heading = driver.find_element(By.ID, "heading").text
        assert heading == "What changed in the 30m before 2026-11-29 14:05:00 UTC"
        rows = driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
        assert [int(r.find_element(By.CSS_SELECTOR, "a.seq").text.lstrip("#")) for r in rows] == INCIDENT_SEQS
        who = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
        assert who[:2] == ["bob", "healer-7"]
        _no_script_ran(driver)
        screenshot(driver, "2-incident")

        # The change to the fraud rules: who, why, and the nested diff.
        driver.find_element(By.LINK_TEXT, f"#{FRAUD_RULES}").click()
        _wait(driver, lambda d: d.current_url.endswith(f"/entries/{FRAUD_RULES}"))
        assert driver.find_element(By.ID, "actor").text.startswith("bob")
        assert driver.find_element(By.ID, "reason").text == "launch in the US"
        diff = {
            row.find_element(By.CSS_SELECTOR, ".path").text: (
                row.get_attribute("class"),
                row.find_element(By.CSS_SELECTOR, ".old").text,
                row.find_element(By.CSS_SELECTOR, ".new").text,
            )
            for row in driver.find_elements(By.CSS_SELECTOR, "#diff tbody tr")
        }
        assert diff["rules.velocity.max"] == ("changed", "5", "50")
        assert diff["rules.countries[2]"] == ("added", "—", '"US"')
        assert diff["rules.velocity.window"][0] == "same"
        screenshot(driver, "3-entry")

        # Evidence: the bundle and the keys, checked offline with no ledger settings at all.
        driver.find_element(By.ID, "bundle").click()
        bundle = wait_for_file(downloads, f"entry-{FRAUD_RULES}.bundle.json")
        driver.find_element(By.ID, "keys").click()
        keys = wait_for_file(downloads, "checkpoint-keys.txt")
        assert keys.read_text(encoding="utf-8") == ledger.cli("keys", "public").stdout
        proved = ledger.cli("prove", str(FRAUD_RULES))
        assert bundle.read_bytes() == proved.stdout.encode("ascii")  # the same bytes as `prove`
        shown = driver.find_element(By.ID, "commands").text.splitlines()[-1].split()
        checked = cli_in(ledger, *shown[1:], cwd=downloads)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith(f"valid: entry {FRAUD_RULES} (bob update payments.fraud.rules)")

        # Hostile content is text.
        driver.get(f"{viewer.base}/entries/{HOSTILE}")
        _no_script_ran(driver)
        assert driver.find_element(By.ID, "target").text == f"payments.{SCRIPT}"
        actor = driver.find_element(By.ID, "actor")
        assert actor.text.startswith("mallory\\u202egnp.exe")  # the override shown, not obeyed
        assert actor.find_element(By.CSS_SELECTOR, ".ctl").text == "\\u202e"
        reason = driver.find_element(By.ID, "reason").text
        assert JS_URL in reason and "&lt;b&gt;not bold&lt;/b&gt;" in reason and "\\u200b" in reason
        assert f"<iframe src='{JS_URL}'></iframe>" in driver.find_element(By.ID, "attributes").text
        big = next(
            row
            for row in driver.find_elements(By.CSS_SELECTOR, "#diff tbody tr")
            if row.find_element(By.CSS_SELECTOR, ".path").text == "big"
        )
        assert f"{BIG + 2 - 300} more characters" in big.text  # the JSON string's quotes count
        screenshot(driver, "4-hostile")
        big.find_element(By.LINK_TEXT, "show the whole value").click()
        _wait(driver, lambda d: "/values/" in d.current_url)
        whole = driver.find_element(By.ID, "value").text
        assert '"big": "' + "A" * BIG + '"' in whole
        _no_script_ran(driver)

        # A superuser edits an entry; the next recorded verify turns the banner.
        with ledger.admin() as admin:
            admin.execute(
                'UPDATE audit_entries SET after = \'{"rules": {"velocity": {"max": 5}}}\'::jsonb'
                " WHERE seq = %s",
                (FRAUD_RULES,),
            )
        verified = ledger.cli("verify", "--record")
        assert verified.returncode == 1, verified.stdout + verified.stderr
        driver.get(f"{viewer.base}/entries")
        banner = driver.find_element(By.ID, "banner")
        assert banner.get_attribute("data-state") == "tampered"
        assert f"tampered at seq {FRAUD_RULES}" in banner.text
        screenshot(driver, "5-tampered")
        driver.get(f"{viewer.base}/entries/{FRAUD_RULES}/bundle.json")
        assert "tampered" in driver.find_element(By.ID, "error").text

    log = viewer.log()
    assert "GET /entries 200 who=reviewer" in log
    assert TOKEN not in log
