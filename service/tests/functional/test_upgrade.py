"""A fork takes the reference's next release as docs/upgrading.md says, on throwaway
repositories, with the page's own commands.

The reference is this tree, committed once and tagged as its release. The fork is cloned
from it, renamed with the documented command, its adapter edited (its keys refuse a slash)
and a test of its own added. The reference then makes a later release: a change to
framework files, at the lines where the earlier rename wrote a fork's module (the contract's
command in the dev tool, the Dockerfile, the artefact tests), a new version and its
changelog entry. The fork fetches and merges that release with no conflict, its own tests,
the conformance suite and the framework's checks of its settings and Sesam config pass in
the merged fork (run as test_rename runs the renamed copy's), and a second pair of
releases shows the page's way out of a conflict.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from service.framework import __version__
from service.tests.functional.template_kit import copy_repository
from service.tests.functional.template_kit import run
from service.tests.functional.template_kit import shell
from service.tools import rename
from service.tools.apps import connector_factory

ROOT = Path(__file__).resolve().parents[3]
# This tree's name: "connector" in the reference. The fork is named otherwise, always.
OLD = rename.current_names(ROOT)
NAME = "acme-crm" if OLD.name != "acme-crm" else "acme-crm-upgraded"
MODULE = NAME.replace("-", "_")
FORCE = "" if OLD.module == rename.ORIGINAL else " --force"  # a renamed tree: a fork's CI
MAJOR, MINOR, PATCH = (int(part) for part in __version__.split("."))
NEXT = f"{MAJOR}.{MINOR}.{PATCH + 1}"  # the release the fork takes cleanly
LATER = f"{MAJOR}.{MINOR + 1}.0"  # the release that conflicts, in test_a_conflict_...

# docs/upgrading.md's commands, as the page shows them (test_docs_commands accounts for
# each); the tests put in the reference's path for URL, their release for the page's
# example, the fork's name for NAME and a file for FILE.
EXAMPLE = "framework/v2.1.0"
REMOTE = "git remote add --no-tags reference URL"
RELEASES = "git ls-remote --tags reference 'framework/v*'"
FETCH = "git fetch reference tag framework/v2.1.0"
EDITED = "python3 -m service.tools.ownership edited framework/v2.1.0"
MERGE = "git merge framework/v2.1.0"
RENAME = "python3 -m service.tools.rename NAME"
THEIRS = "git checkout --theirs -- FILE && git add FILE"
OURS = "git checkout --ours -- FILE && git add FILE"
COMMIT = "git commit --no-edit"
ABORT = "git merge --abort"
# The README's, after the rename.
COMMIT_RENAME = 'git add -A && git commit -m "Rename to acme-crm"'

# The fork's edit of its adapter (the first lines of its key()), and its own test of it.
SLASHLESS = "an Acme CRM key has no slash"
FORKS_TEST = """\"\"\"The fork's own test of its edit: {slashless}.\"\"\"

import pytest

from service.{module} import {adapter}


def test_an_id_with_a_slash_is_refused():
    with pytest.raises(ValueError, match="{slashless}"):
        {adapter}.key(None, "a/b")  # the check comes first: no self needed
"""


def edit_the_adapter(fork: Path) -> None:
    """The fork's edit: its adapter's ``key`` refuses an id with a slash before anything
    else (the sink answers 400 for such an entity), and a test file of its own checks it."""
    adapter = connector_factory().adapter_class
    source = Path(inspect.getsourcefile(adapter) or "").resolve()
    if source != ROOT / "service" / f"{OLD.module}.py" or "key" not in adapter.__dict__:
        pytest.skip(f"{adapter.__name__}.key is not in service/{OLD.module}.py to edit")
    path = fork / "service" / f"{MODULE}.py"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    (key,) = [
        node
        for cls in ast.walk(ast.parse("".join(lines)))
        if isinstance(cls, ast.ClassDef) and cls.name == adapter.__name__
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name == "key"
    ]
    first = key.body[1] if ast.get_docstring(key) and len(key.body) > 1 else key.body[0]
    indent, argument = " " * first.col_offset, key.args.args[1].arg
    lines[first.lineno - 1 : first.lineno - 1] = [
        f'{indent}if "/" in {argument}:  # FORK: an Acme CRM key never has one\n',
        f'{indent}    raise ValueError(f"{SLASHLESS}: {{{argument}!r}}")\n',
    ]
    path.write_text("".join(lines), encoding="utf-8")
    test = FORKS_TEST.format(module=MODULE, adapter=adapter.__name__, slashless=SLASHLESS)
    (fork / "service" / "tests" / f"test_{MODULE}_keys.py").write_text(test, encoding="utf-8")


def typed(command: str, *, url: Path | None = None, release: str = "", file: str = "") -> str:
    """A command of the page as this test types it."""
    if release:
        command = command.replace(EXAMPLE, f"framework/v{release}")
    if url is not None:
        command = command.replace(" URL", f" {url}")
    return command.replace(" NAME", f" {NAME}").replace("FILE", file)


def release(reference: Path, version: str, edits: dict[str, tuple[str, str]]) -> None:
    """A release of the reference: ``edits`` (file -> a regular expression and what
    replaces its first match), the version in the code, a changelog entry, a tag."""
    edits = {
        **edits,
        "service/framework/__init__.py": (r'__version__ = "[^"]+"', f'__version__ = "{version}"'),
        "CHANGELOG.md": (
            r"(?m)^## ",
            f"## {version} (2030-01-01)\n\nA framework change beside the contract's command.\n\n"
            "### Changed\n\n- The dev tool, the artefact tests and the Dockerfile say why the "
            "command names no module.\n\n### By hand\n\nNothing.\n\n## ",
        ),
    }
    for name, (pattern, replacement) in edits.items():
        path = reference / name
        text, count = re.subn(pattern, replacement, path.read_text(encoding="utf-8"), count=1)
        assert count == 1, f"{name}: no {pattern!r} to change (update this test's release)"
        path.write_text(text, encoding="utf-8")
    run(f'git commit -qam "framework {version}"', reference)
    run(f'git tag -a framework/v{version} -m "framework {version}"', reference)


class Repositories(NamedTuple):
    reference: Path
    fork: Path


@pytest.fixture(scope="module")
def repositories(tmp_path_factory: pytest.TempPathFactory) -> Repositories:
    """The reference at this tree, released; and a fork of it, renamed and edited."""
    base = tmp_path_factory.mktemp("upgrade")
    reference, fork = base / "reference", base / "fork"
    copy_repository(reference)
    run("git init -q -b main && git add -A && git commit -qm 'the reference'", reference)
    run(f"git tag -a framework/v{__version__} -m 'framework {__version__}'", reference)

    # The fork, as docs/forking.md makes it: a clone, renamed and committed.
    run(f"git clone -q {reference} {fork}", base)
    run("git remote remove origin", fork)  # the fork's origin is its own repository
    run(typed(REMOTE, url=reference), fork)
    renamed = run(f"python3 -m service.tools.rename{FORCE} {NAME}", fork)
    assert f"renamed {OLD.name} to {NAME}" in renamed, renamed
    run(COMMIT_RENAME.replace("acme-crm", NAME), fork)
    edit_the_adapter(fork)
    run('git add -A && git commit -qm "Acme CRM keys have no slash"', fork)
    return Repositories(reference, fork)


@pytest.fixture(scope="module")
def merged(repositories: Repositories) -> dict[str, subprocess.CompletedProcess[str]]:
    """The next release, as the reference makes it and the fork takes it (the page's steps
    2 and 4): what each command answered."""
    reference, fork = repositories
    release(
        reference,
        NEXT,
        {
            "service/tools/dev.py": (
                r"(?m)^GUNICORN_ARGS = ",
                "# It serves fork.toml's app.\n\\g<0>",
            ),
            "service/tests/functional/test_docker_artifacts.py": (
                r"(?m)^CONTRACT = ",
                "# The same in every fork.\n\\g<0>",
            ),
            "Dockerfile": (r"(?m)^CMD \[", "# The same in every fork.\n\\g<0>"),
        },
    )
    answers = {}
    for command in (RELEASES, FETCH, EDITED, MERGE, RENAME):
        answers[command] = shell(typed(command, release=NEXT), fork)
    return answers


def test_the_fork_merges_the_next_release_without_a_conflict(repositories, merged):
    fork = repositories.fork
    assert f"refs/tags/framework/v{NEXT}" in merged[RELEASES].stdout
    assert merged[FETCH].returncode == 0, merged[FETCH].stderr
    edited = merged[EDITED]
    assert (edited.returncode, edited.stdout.split(" since ")[0]) == (
        0,
        "no framework file changed here",
    ), edited.stdout + edited.stderr
    merge = merged[MERGE]
    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert run("git status --porcelain", fork) == ""
    assert run("git log -1 --format=%s", fork).startswith(f"Merge tag 'framework/v{NEXT}'")
    # The release's framework change is in, and so is everything of the fork's.
    assert "# It serves fork.toml's app.\nGUNICORN_ARGS = " in (
        fork / "service/tools/dev.py"
    ).read_text(encoding="utf-8")
    assert (
        (fork / "CHANGELOG.md")
        .read_text(encoding="utf-8")
        .startswith(
            (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").split("\n## ")[0] + f"\n## {NEXT} "
        )
    )
    assert SLASHLESS in (fork / f"service/{MODULE}.py").read_text(encoding="utf-8")
    assert run("python3 -m service.tools.ownership", fork) == (
        f"framework {NEXT}; this connector: {NAME}, service.{MODULE}:create_app()\n"
    )
    assert merged[RENAME].stdout == f"already named {NAME}: nothing to change\n"


@pytest.mark.timeout(600)
def test_the_merged_fork_passes_its_own_tests_and_the_conformance_suite(repositories, merged):
    """The page's step 5, as test_rename runs the renamed copy's tests: the fork's own tests
    (its edit's among them), the conformance suite against its connector, and the
    framework's checks of its settings tables and Sesam config."""
    fork = repositories.fork
    assert merged[MERGE].returncode == 0, merged[MERGE].stdout + merged[MERGE].stderr
    paths = [
        *sorted(p.relative_to(fork).as_posix() for p in fork.glob("service/tests/test_*.py")),
        "service/tests/conformance",
        "service/tests/unit/test_config.py",
        "service/tests/unit/test_sesam_config.py",
        "service/tests/unit/test_ownership.py",
    ]
    command = [sys.executable, "-m", "service.tools.dev", "test", *paths]
    command += ["-q", "-x", "-rA", "-p", "no:cacheprovider", "-n", "0"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["SERVICE_DEV_PYTHON"] = sys.executable
    result = subprocess.run(command, cwd=fork, env=env, capture_output=True, text=True, timeout=540)
    summary = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    forks_test = f"service/tests/test_{MODULE}_keys.py::test_an_id_with_a_slash_is_refused"
    assert f"PASSED {forks_test}" in result.stdout
    assert "PASSED service/tests/conformance/test_sesam_conformance.py::" in result.stdout


def test_a_conflict_is_resolved_as_the_page_says(repositories, tmp_path):
    """Both sides edited a framework file (the fork should not have) and a file of the
    fork's (the release's "By hand" case): ``ownership edited`` names the first before the
    merge, ``git merge --abort`` changes nothing, and the page's checkouts take the
    release's framework file and keep the fork's own."""
    reference, fork = tmp_path / "reference", tmp_path / "fork"
    run(f"git clone -q {repositories.reference} {reference}", tmp_path)
    run(f"git clone -q {repositories.fork} {fork}", tmp_path)
    run("git remote remove origin", fork)
    run(typed(REMOTE, url=reference), fork)
    for name, line in (
        ("docs/feed.md", "# The feed, as this fork reads it"),
        ("README.md", "# Acme CRM for Sesam"),
    ):
        path = fork / name
        path.write_text(re.sub(r"\A.*", line, path.read_text(encoding="utf-8")), encoding="utf-8")
    run('git commit -qam "the feed page and the README, as this fork has them"', fork)
    release(
        reference,
        LATER,
        {
            "docs/feed.md": (r"\A.*", "# The feed: GET /<collection>"),
            "README.md": (r"\A.*", "# The reference Sesam connector, released"),
        },
    )
    run(typed(FETCH, release=LATER), fork)
    edited = shell(typed(EDITED, release=LATER), fork)
    assert edited.returncode == 1 and "  docs/feed.md\n" in edited.stdout, edited.stdout
    before = run("git rev-parse HEAD", fork)

    assert shell(typed(MERGE, release=LATER), fork).returncode != 0
    conflicts = run("git diff --name-only --diff-filter=U", fork).split()
    assert sorted(conflicts) == ["README.md", "docs/feed.md"]
    run(ABORT, fork)
    assert (run("git rev-parse HEAD", fork), run("git status --porcelain", fork)) == (before, "")

    assert shell(typed(MERGE, release=LATER), fork).returncode != 0
    run(typed(THEIRS, file="docs/feed.md"), fork)
    run(typed(OURS, file="README.md"), fork)
    run(COMMIT, fork)
    assert run("git status --porcelain", fork) == ""
    assert (fork / "docs/feed.md").read_text(encoding="utf-8") == (
        reference / "docs/feed.md"
    ).read_text(encoding="utf-8")
    assert (fork / "README.md").read_text(encoding="utf-8").startswith("# Acme CRM for Sesam")
    assert f'__version__ = "{LATER}"' in (fork / "service/framework/__init__.py").read_text(
        encoding="utf-8"
    )


def test_the_commands_here_are_the_pages():
    """What these tests type is what docs/upgrading.md shows (test_docs_commands sends the
    page's commands here)."""
    page = (ROOT / "docs" / "upgrading.md").read_text(encoding="utf-8")
    shown = {
        re.sub(r"\s+#\s.*$", "", line).strip()
        for block in re.findall(r"```sh\n(.*?)```", page, flags=re.S)
        for line in block.splitlines()
    }
    ours = {REMOTE, RELEASES, FETCH, EDITED, MERGE, RENAME, THEIRS, OURS, COMMIT, ABORT}
    assert ours <= shown, sorted(ours - shown)
