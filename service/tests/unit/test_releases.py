"""The framework's releases as a fork maintainer reads them: CHANGELOG.md's newest release is
the version the code and its start-up line report, versions rise by the semantic rules
(a release that breaks a fork is a major one), and every release says what a fork changes
by hand in its own files."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import pytest

from service.framework import __version__

ROOT = Path(__file__).resolve().parents[3]
HEADING = re.compile(r"^## (\d+)\.(\d+)\.(\d+) \((\d{4}-\d{2}-\d{2})[^)]*\)$")
SECTIONS = ("Data safety", "Breaking", "Added", "Changed", "Fixed", "By hand")


class Release(NamedTuple):
    version: tuple[int, int, int]
    heading: str
    sections: dict[str, str]  # "Breaking" -> its text
    summary: str  # the lines between the heading and the first section


def releases(text: str) -> list[Release]:
    """The changelog's releases, newest first, as the file lists them."""
    found = []
    for block in re.split(r"(?m)^(?=## )", text)[1:]:
        heading, _, body = block.partition("\n")
        match = HEADING.match(heading)
        assert match, f"not a release heading (## X.Y.Z (YYYY-MM-DD)): {heading!r}"
        parts = re.split(r"(?m)^### (.+)$", body)
        sections = {
            name.strip(): content for name, content in zip(parts[1::2], parts[2::2], strict=True)
        }
        version = (int(match[1]), int(match[2]), int(match[3]))
        found.append(Release(version, heading, sections, parts[0].strip()))
    return found


def problems(text: str) -> list[str]:
    """What a changelog says that a fork maintainer could not rely on."""
    listed = releases(text)
    if not listed:
        return ["no release"]
    found = []
    newest = ".".join(map(str, listed[0].version))
    if newest != __version__:
        found.append(f"the newest release is {newest}, the code says {__version__}")
    for release in listed:
        unknown = set(release.sections) - set(SECTIONS)
        if unknown:
            found.append(f"{release.heading}: sections {sorted(unknown)}, not {SECTIONS}")
        if not release.sections.get("By hand", "").strip():
            found.append(f"{release.heading}: no 'By hand' (write 'Nothing.' if so)")
        if "Data safety" in release.sections and "Upgrade now" not in release.summary:
            found.append(f"{release.heading}: data-safety fixes, and no 'Upgrade now'")
    for newer, older in pairwise(listed):
        if newer.version <= older.version:
            found.append(f"{newer.heading} is not newer than {older.heading}")
        elif "Breaking" in newer.sections and newer.version[0] == older.version[0]:
            found.append(f"{newer.heading} breaks a fork: a major release")
        elif "Breaking" not in newer.sections and newer.version[0] != older.version[0]:
            found.append(f"{newer.heading} is a major release that breaks nothing")
    return found


def test_the_changelog_says_what_each_release_changed_and_the_newest_is_the_codes():
    assert problems((ROOT / "CHANGELOG.md").read_text(encoding="utf-8")) == []


def test_the_changelogs_first_release_is_the_first_commit_released():
    oldest = releases((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))[-1]
    assert oldest.version == (1, 0, 0)
    assert "f1cd945" in oldest.summary


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace(f"## {__version__} (", "## 9.9.9 (", 1), "the code says"),
        (lambda t: t.replace("### By hand", "### Later", 1), "sections"),
        (lambda t: t.replace("Upgrade now:", "Take it:", 1), "no 'Upgrade now'"),
        (lambda t: t.replace("## 1.0.0 (", "## 2.0.0 (", 1), "is not newer than"),
        (lambda t: t.replace("## 2.0.0 (", "## 1.1.0 (", 1), "a major release"),
    ],
)
def test_a_changelog_that_would_mislead_a_fork_is_caught(edit, problem):
    """The checks above, each on a changelog broken one way: a version the code does not
    report, a release without its 'By hand', a data-safety fix not flagged, versions out of
    order, a breaking release that is not a major one."""
    text = edit((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
    if problem == "the code says" and __version__ == "9.9.9":
        pytest.skip("the code is at 9.9.9")
    assert any(problem in found for found in problems(text)), problems(text)
