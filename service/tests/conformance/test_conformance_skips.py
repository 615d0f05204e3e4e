"""A fork can skip a conformance check only by saying why.

The suite runs in a subprocess, in a directory of its own, beside a conftest that skips
checks the way a fork would (``conformance_skips``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).with_name("test_sesam_conformance.py")
ROOT = Path(__file__).resolve().parents[3]  # the suite speaks Sesam through service.tools
PYTHONPATH = os.environ.get("PYTHONPATH", "")
CONFTEST = """
import pytest

@pytest.fixture
def conformance_skips():
    return {SKIPS}

@pytest.fixture
def conformance_connector():
    raise AssertionError("a skipped check must not start the connector")

@pytest.fixture
def conformance_upstream():
    raise AssertionError("a skipped check must not touch the upstream")
"""


def run_suite(tmp_path: Path, skips: dict[str, str], select: str) -> str:
    shutil.copy(SUITE, tmp_path / SUITE.name)
    (tmp_path / "conftest.py").write_text(CONFTEST.replace("{SKIPS}", repr(skips)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rsfE",
            "-p",
            "no:cacheprovider",
            "-k",
            select,
            SUITE.name,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), PYTHONPATH]))},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout + result.stderr


def test_a_check_skipped_with_a_reason_is_skipped_and_shows_the_reason(tmp_path):
    out = run_suite(
        tmp_path,
        {"test_limit_is_honoured": "our upstream has no paging"},
        "test_limit_is_honoured or every_skip",
    )
    assert "skipped by this fork: our upstream has no paging" in out
    assert "1 passed, 1 skipped" in out


def test_a_skip_without_a_reason_is_an_error(tmp_path):
    out = run_suite(
        tmp_path, {"test_limit_is_honoured": "  "}, "test_limit_is_honoured or every_skip"
    )
    assert "conformance_skips['test_limit_is_honoured'] has no reason" in out
    assert re.match(r"1 failed, \d+ deselected, 1 error", out.strip().splitlines()[-1])


def test_a_skip_of_a_check_the_suite_does_not_have_fails(tmp_path):
    out = run_suite(tmp_path, {"test_limits_are_honoured": "typo"}, "every_skip")
    assert "names checks this suite does not have: ['test_limits_are_honoured']" in out
    assert "1 failed" in out
