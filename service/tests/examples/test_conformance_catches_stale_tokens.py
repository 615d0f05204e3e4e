"""The conformance suite catches a connector that never gets a new upstream token.

A fork to an OAuth2 API fetched one token at start and sent it for ever; its fake issued
tokens that lived an hour, so the suite passed it, and production failed once the first
token expired. ``test_an_upstream_token_that_expires_is_replaced`` has the driver expire
every token the upstream issued (``expire_tokens``), then reads and writes again.

Each test runs checks of the suite in a subprocess, in a directory of its own: with the
OAuth2 wiring (``oauth_wiring.py``: the hostile upstream's token endpoint) in front of the
framework's ``OAuth2ClientCredentials`` (it passes) and of the fork's token-once adapter
(``oauth_records.py``: it fails the check, and only that one); and with the Tickets
wiring, whose API key never expires (the check is skipped, saying so).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EXPIRY = "test_an_upstream_token_that_expires_is_replaced"
FEED = "test_the_feed_is_a_json_array_of_objects_with_unique_string_ids"
LIMIT = "test_limit_is_honoured"
# The feed's checks run before the expiry check (the suite's order): after it, the
# token-once connector fails everything, as it would in production.
CHECKS = (EXPIRY, FEED, LIMIT)
OAUTH_WIRING = """
import pytest

from service.tests.examples.oauth_wiring import *  # the OAuth2 wiring


@pytest.fixture(scope="session")
def oauth_app():
    return {APP!r}
"""
TICKETS_WIRING = "from service.tests.examples.conftest import *  # the Tickets wiring\n"
SUITE = "from service.tests.conformance.test_sesam_conformance import *  # noqa: F403\n"


def run_checks(
    tmp_path: Path, conftest: str, checks: tuple[str, ...]
) -> tuple[dict[str, str], str]:
    """Run ``checks`` of the suite with ``conftest`` as the wiring: each check's outcome
    (PASSED, FAILED, SKIPPED, ...), and pytest's report."""
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
        + ["-k", " or ".join(checks), "test_suite.py"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = result.stdout + result.stderr
    outcomes = {
        name: outcome
        for outcome, name in re.findall(
            r"^(PASSED|FAILED|ERROR|SKIPPED) (?:\[\d+\] )?test_suite\.py:(?::|\d+: )?(\w*)",
            out,
            re.M,
        )
    }
    return outcomes, out


def test_a_connector_that_never_gets_a_new_token_fails_the_expiry_check(tmp_path):
    app = "service.tests.examples.oauth_records:create_token_once_app()"
    outcomes, report = run_checks(tmp_path, OAUTH_WIRING.replace("{APP!r}", repr(app)), CHECKS)
    assert outcomes == {EXPIRY: "FAILED", FEED: "PASSED", LIMIT: "PASSED"}, report[-3000:]
    assert "after the upstream's tokens expired the feed answered 502" in report


def test_the_oauth2_block_gets_a_new_token_and_passes(tmp_path):
    app = "service.tests.examples.oauth_records:create_app()"
    outcomes, report = run_checks(tmp_path, OAUTH_WIRING.replace("{APP!r}", repr(app)), CHECKS)
    assert outcomes == {EXPIRY: "PASSED", FEED: "PASSED", LIMIT: "PASSED"}, report[-3000:]


def test_a_connector_whose_key_never_expires_skips_the_check_saying_why(tmp_path):
    outcomes, report = run_checks(tmp_path, TICKETS_WIRING, (EXPIRY,))
    assert "SKIPPED" in report, report[-3000:]
    assert "the upstream driver cannot expire_tokens(): the Tickets API's key is static" in report
