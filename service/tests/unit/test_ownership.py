"""The ownership line (ownership.toml) and the connector's name (fork.toml), as a fork
maintainer relies on them: every file is the framework's or the fork's, the framework's
name no fork's module, and forking.md lists the fork's files as the manifest does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.framework import __version__
from service.tests.functional.template_kit import repository_files
from service.tools import ownership
from service.tools import rename
from service.tools.ownership import Ownership
from service.tools.ownership import read_fork
from service.tools.ownership import read_ownership

ROOT = Path(__file__).resolve().parents[3]
# The rename and its tests speak of the reference's module on purpose.
SPEAK_OF_THE_ORIGINAL = {
    "service/tools/rename.py",
    "service/tests/functional/test_rename.py",
    "service/tests/unit/test_rename_rules.py",
}


def test_every_file_of_the_reference_is_named_by_a_list():
    """A file the manifest does not name would be the fork's by default: a new file of the
    framework's must be put in [framework], or a fork could not tell that it may not edit it
    (and the rename would touch it). The framework's list wins where both name a file
    (service/gunicorn.conf.py is one of service/*.py)."""
    line = read_ownership(ROOT)
    assert [name for name in repository_files() if not line.named(name)] == [], (
        "name each in ownership.toml, in [framework] or [fork]"
    )


def test_every_pattern_of_the_manifest_names_a_file_on_its_side():
    """No entry outlives its files: a stale one would mislead a reader about the line."""
    files = repository_files()
    line = read_ownership(ROOT)
    stale = [
        glob
        for owner, globs in (("framework", line.framework), ("fork", line.fork))
        for glob in globs
        if not any(
            ownership.pattern(glob).fullmatch(name) and line.owner(name) == owner for name in files
        )
    ]
    assert stale == []


def test_a_file_a_fork_adds_is_its_own_and_the_frameworks_stay_the_frameworks():
    line = Ownership(
        framework=("service/framework/**", "service/gunicorn.conf.py", "docs/feed.md"),
        fork=("service/*.py", "docs/connector.md"),
    )
    assert line.owner("service/framework/feed.py") == "framework"
    assert line.owner("service/framework/sub/deep.py") == "framework"
    assert line.owner("service/gunicorn.conf.py") == "framework"  # before service/*.py
    assert line.owner("service/acme_crm.py") == "fork"
    assert line.owner("docs/connector.md") == "fork"
    assert line.owner("docs/acme-quirks.md") == "fork"  # added by the fork
    assert line.owner("service/tests/conformance/test_acme_crm_conformance.py") == "fork"
    assert line.named("docs/acme-quirks.md") == []
    real = read_ownership(ROOT)
    assert real.owner("service/tests/conformance/test_acme_crm_conformance.py") == "fork"
    assert real.owner("service/tests/conformance/kit.py") == "framework"
    assert real.owner("service/tests/test_acme_crm.py") == "fork"
    assert real.owner("service/tests/unit/test_acme_crm.py") == "framework"


def test_no_framework_file_names_the_references_module():
    """The framework's files find the connector through fork.toml and speak of
    service/<module>.py: one that named the reference's module would be stale in every
    fork, and a rename that fixed it would make every upgrade conflict there."""
    module = rename.ORIGINAL
    names = re.compile(rf"\bservice[./]{re.escape(module)}\b|\btest_{re.escape(module)}\.py\b")
    line = read_ownership(ROOT)
    found = []
    for name in repository_files():
        if line.owner(name) != "framework" or name in SPEAK_OF_THE_ORIGINAL:
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {line.strip()}" for line in text.splitlines() if names.search(line)]
    assert found == []


def test_fork_toml_names_the_module_that_is_there():
    fork = read_fork(ROOT)
    assert fork.app == f"service.{fork.module}:create_app()"
    assert (ROOT / "service" / f"{fork.module}.py").is_file()
    assert fork.module == fork.name.replace("-", "_")


def forking_page_files() -> set[str]:
    """The files the table atop docs/forking.md gives a fork, as manifest patterns."""
    page = (ROOT / "docs" / "forking.md").read_text(encoding="utf-8")
    table = page.split("| file | what a fork puts there |", 1)[1].split("\n\n", 1)[0]
    cells = [row.split("|")[1] for row in table.splitlines()[2:]]
    paths = {path for cell in cells for path in re.findall(r"`([^`]+)`", cell)}
    return {path.replace("<module>", "*") + ("**" if path.endswith("/") else "") for path in paths}


def test_forking_md_lists_the_forks_files_as_the_manifest_does():
    assert forking_page_files() == set(read_ownership(ROOT).fork)


def test_the_version_command_says_which_release_and_which_connector():
    """``python3 -m service.tools.ownership`` (docs/upgrading.md), on the system Python:
    what a fork maintainer checks after an upgrade."""
    result = subprocess.run(
        [sys.executable, "-m", "service.tools.ownership"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    fork = read_fork(ROOT)
    assert (result.returncode, result.stdout) == (
        0,
        f"framework {__version__}; this connector: {fork.name}, {fork.app}\n",
    )


def test_a_missing_or_broken_manifest_is_one_line(tmp_path):
    with pytest.raises(ownership.OwnershipError, match=r"^ownership.toml is missing in "):
        read_ownership(tmp_path)
    (tmp_path / "fork.toml").write_text('name = "acme"\napp = "acme:create_app()"\n')
    with pytest.raises(ownership.OwnershipError, match=r"app must be service.<module>"):
        read_fork(tmp_path)
