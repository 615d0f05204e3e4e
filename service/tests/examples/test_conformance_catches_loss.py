"""The conformance suite catches loss: it fails a connector that loses records.

Each test runs the suite's loss checks in a subprocess, in a directory of its own, with
the Tickets wiring (``conftest.py`` beside this file) pointed at a broken connector, and
asserts which checks fail: the naive page-number loop (``naive_tickets.py``) loses a
ticket that moves up across a page boundary; the right paging without a settle window
loses a ticket written in the second the feed has read; a cursor that is an offset in
disguise (``offset_cursor_tickets.py``) loses one only inside a tie, and only the check
that changes a record there, between two pages of one query, sees it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHANGED_BETWEEN_PAGES = "test_a_record_changed_between_two_pages_of_a_run_is_not_lost"
TIE = "test_a_tie_of_many_records_across_page_boundaries_is_delivered_whole"
TIE_STEP = "test_a_change_inside_a_tie_between_two_pages_of_one_query_loses_nothing"
RACE = "test_a_record_written_in_the_instant_already_read_is_delivered"
DELETE = "test_a_record_deleted_between_runs_is_deleted_in_sesam"
LOSS_CHECKS = (CHANGED_BETWEEN_PAGES, TIE, TIE_STEP, RACE, DELETE)
CONFTEST = """
import pytest

from service.tests.examples.conftest import *  # the Tickets wiring


@pytest.fixture(scope="session")
def tickets_wiring():
    return {WIRING}
"""
SUITE = "from service.tests.conformance.test_sesam_conformance import *  # noqa: F403\n"


def loss_checks(tmp_path: Path, **wiring: str) -> tuple[dict[str, str], str]:
    """Run the loss checks against the wiring: each check's outcome (PASSED, FAILED, ...),
    and pytest's report."""
    wiring = {"TICKETS_PAGE_SIZE": "10", **wiring}
    (tmp_path / "conftest.py").write_text(CONFTEST.replace("{WIRING}", repr(wiring)))
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
        + ["-k", " or ".join(LOSS_CHECKS), "test_suite.py"],
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
    outcomes = dict(
        (name, outcome)
        for outcome, name in re.findall(
            r"^(PASSED|FAILED|ERROR|SKIPPED) test_suite\.py::(\w+)", out, re.M
        )
    )
    assert set(outcomes) == set(LOSS_CHECKS), out[-3000:]
    return outcomes, out


def test_naive_page_numbers_fail_the_loss_checks(tmp_path):
    outcomes, report = loss_checks(
        tmp_path, app="service.tests.examples.naive_tickets:create_app()"
    )
    assert "live upstream, not in Sesam (lost)" in report
    assert outcomes == {
        CHANGED_BETWEEN_PAGES: "FAILED",
        TIE: "FAILED",
        TIE_STEP: "FAILED",
        RACE: "PASSED",
        DELETE: "PASSED",
    }


def test_a_missing_settle_window_fails_the_race_check(tmp_path):
    """The Tickets adapter declares its window; ``FEED_SETTLE_SECONDS=0`` turns it off."""
    outcomes, report = loss_checks(
        tmp_path, app="service.tools.examples.tickets:create_app()", FEED_SETTLE_SECONDS="0"
    )
    assert "Sesam holds an older version" in report
    assert outcomes == {
        CHANGED_BETWEEN_PAGES: "PASSED",
        TIE: "PASSED",
        TIE_STEP: "PASSED",
        RACE: "FAILED",
        DELETE: "PASSED",
    }


def test_an_offset_cursor_in_disguise_fails_only_the_check_inside_a_tie(tmp_path):
    """The fork that lost a record in a direct run while the suite passed: every other
    loss check passes it, so the check that changes a record between two pages of one
    query inside a tie is what catches it."""
    outcomes, report = loss_checks(
        tmp_path, app="service.tests.examples.offset_cursor_tickets:create_app()"
    )
    assert "live upstream, not in Sesam (lost)" in report
    assert outcomes == {
        CHANGED_BETWEEN_PAGES: "PASSED",
        TIE: "PASSED",
        TIE_STEP: "FAILED",
        RACE: "PASSED",
        DELETE: "PASSED",
    }
