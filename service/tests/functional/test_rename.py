"""The template tests itself as a template: rename a copy, then run the copy's own tests.

The copy is what a fork would hold: the files git tracks plus uncommitted working files
(``git ls-files -co --exclude-standard``), without ``.venv`` and ``.git``. The renamed copy
collects its whole suite and runs, green, with this interpreter, every test that can tell
it from this tree: the fork's own, the conformance suite, every test the rename edited,
and the framework's tests of the fork's artefacts and commands (``COPY_FORK_TESTS`` below
says why that is enough, and two tests here check its premise).
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from service.tools import rename

ROOT = Path(__file__).resolve().parents[3]
# The name the repository has now: "connector" in the reference, "acme-crm" right after the
# README's first fork step. The copy is renamed to another name, always.
OLD = rename.current_names(ROOT)
NAME = "acme-crm" if OLD.name != "acme-crm" else "acme-crm-renamed"
MODULE = NAME.replace("-", "_")
STALE = re.compile(rf"\bservice[./]{re.escape(OLD.module)}\b")
FORCE = [] if OLD.module == rename.ORIGINAL else ["--force"]  # renaming a renamed fork


def repository_files() -> list[str]:
    # The test image (Dockerfile, stage test) has neither: it runs this test in the host's suite.
    if shutil.which("git") is None:
        pytest.skip("needs git to list the repository's files, and git is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip(f"needs a git checkout to list the repository's files; {ROOT} has no .git")
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"git could not list the repository's files: {error}")
    names = [n for n in listed.decode("utf-8").split("\0") if n]
    return [n for n in names if not n.startswith((".venv/", ".git/")) and (ROOT / n).is_file()]


class Renamed(NamedTuple):
    copy: Path  # the renamed copy
    out: str  # what the rename printed
    changed: frozenset[str]  # the files it changed, added or removed (relative paths)


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> Renamed:
    copy = tmp_path_factory.mktemp("fork") / "fork"
    originals = repository_files()
    for name in originals:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    result = subprocess.run(
        [sys.executable, "-m", "service.tools.rename", *FORCE, NAME],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Renamed(copy, result.stdout, changed_files(copy, originals))


def changed_files(copy: Path, originals: list[str]) -> frozenset[str]:
    """The copy's files that differ from this tree's, or that only one of the two has
    (taken right after the rename, before any test runs in the copy)."""
    renamed = {
        path.relative_to(copy).as_posix()
        for path in copy.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    changed = renamed ^ set(originals)
    changed |= {
        name
        for name in renamed & set(originals)
        if (copy / name).read_bytes() != (ROOT / name).read_bytes()
    }
    return frozenset(changed)


def test_the_module_and_its_test_move(renamed):
    copy, out, _ = renamed
    assert (copy / f"service/{MODULE}.py").is_file()
    assert not (copy / f"service/{OLD.module}.py").exists()
    assert not list(copy.glob(f"service/tests/**/test_{OLD.module}.py"))
    if (ROOT / f"service/tests/test_{OLD.module}.py").exists():
        assert (copy / f"service/tests/test_{MODULE}.py").is_file()
    assert f"renamed {OLD.name} to {NAME}" in out


def test_no_place_in_the_copy_names_the_old_module(renamed):
    copy, _, _ = renamed
    stale = []
    for path in sorted(copy.rglob("*")):
        relative = path.relative_to(copy).as_posix()
        if (
            not path.is_file()
            or "__pycache__" in path.parts
            or relative
            in (
                "service/tools/rename.py",
                "service/tests/functional/test_rename.py",
                "service/tests/unit/test_rename_rules.py",
            )
        ):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        stale += [f"{relative}: {line}" for line in text.splitlines() if STALE.search(line)]
    assert stale == []


def test_no_sesam_config_names_an_id_that_was_renamed(renamed):
    """The descriptions too: "the feed pipe connector-people" named a pipe that, after the
    rename, no longer existed."""
    copy = renamed.copy
    configs = {path: path.read_text(encoding="utf-8") for path in ROOT.glob("sesam/**/*.json")}
    renamed_ids = {
        found
        for found in rename.sesam_ids(configs)
        if found != OLD.name
        and re.search(rf"(?<![a-z0-9]){re.escape(OLD.name)}(?![a-z0-9])", found)
    }
    assert renamed_ids, "the reference's Sesam config names no id after the connector"
    left = [
        f"{path.relative_to(copy)}: {found}"
        for path in sorted(copy.glob("sesam/**/*.json"))
        for found in sorted(renamed_ids)
        if re.search(rf"(?<![\w-]){re.escape(found)}(?![\w-])", path.read_text(encoding="utf-8"))
    ]
    assert left == []


def test_the_commands_a_user_runs_name_the_new_connector(renamed):
    copy, _, _ = renamed
    readme = (copy / "README.md").read_text(encoding="utf-8")
    assert readme.startswith(f"# {NAME}: a Sesam connector")
    assert f"'service.{MODULE}:create_app()'" in readme
    assert f"docker-compose exec {OLD.name} " not in readme
    if "docker-compose exec" in (ROOT / "README.md").read_text(encoding="utf-8"):
        assert f"docker-compose exec {NAME} pytest" in readme
    dockerfile = copy / "Dockerfile"
    if dockerfile.exists():
        assert f"service.{MODULE}:create_app()" in dockerfile.read_text(encoding="utf-8")


def test_the_image_sesam_pulls_is_renamed_and_stays_pushable(renamed):
    copy, _, _ = renamed
    systems = [p.read_text(encoding="utf-8") for p in copy.glob("sesam/systems/*.conf.json")]
    images = {json.loads(text)["docker"]["image"].rsplit(":", 1)[0] for text in systems}
    assert images == {f"sesamcommunity/{NAME}"}
    workflow = (copy / ".github/workflows/ci.yml").read_text(encoding="utf-8")
    assert f"IMAGE: sesamcommunity/{NAME}\n" in workflow


def test_renaming_again_with_the_same_name_changes_nothing(renamed):
    copy, _, _ = renamed
    result = subprocess.run(
        [sys.executable, "-m", "service.tools.rename", NAME],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, f"already named {NAME}: nothing to change\n")


# What the renamed copy runs, beside collecting its whole suite. A test can pass here and fail
# in the fork only if it runs something the rename changed: the connector's module and
# name, the wiring (conftest.py), the artefacts that name it (README, Dockerfile, compose,
# CI, sesam/, docs/), or the gunicorn command (service/tools/dev.py, which
# service.tools.apps reads to find the connector). So the copy runs, in full:
# - the fork's own tests (service/tests/test_*.py) and the conformance suite against the
#   renamed connector (service/tests/conformance/), and any other test file that uses a
#   fixture of the wiring (found in the copy by --fixtures-per-test);
# - every test file the rename edited or moved;
# - the framework's tests of the fork's artefacts and commands, which read what the rename
#   edits or find the connector by its command (COPY_ARTEFACT_TESTS);
# - a sample of the framework's HTTP tests (COPY_SAMPLE): the reference connector and the
#   demo upstream started by the framework kit from the renamed tree.
# The rest of the framework's tests run the reference adapter over the demo upstreams, the
# same code on the same inputs as in this run, which has just run them:
# test_the_rename_changes_no_code_the_copy_leaves_unrun checks that premise (the rename
# changes no code but the connector's module, the command and docstrings), and
# test_no_test_left_unrun_in_the_copy_reads_what_the_rename_edits that none of those tests
# names a file the rename changed.
COPY_FORK_TESTS = ["service/tests/conformance", "service/tests/test_*.py"]
COPY_ARTEFACT_TESTS = [
    "service/tests/functional/test_docker_artifacts.py",  # Dockerfile, compose, README, CI
    "service/tests/functional/test_dev_run.py",  # the README's run command
    "service/tests/functional/test_sesam_expected.py",  # sesam/expected, over the demo
    "service/tests/unit/test_config.py",  # the settings table, the start-up line
    "service/tests/unit/test_sesam_config.py",  # sesam/: the system, pipes, images
    "service/tests/unit/test_lint.py",  # ruff over the renamed code (the rename formats it)
    "service/tests/unit/test_static_checks.py",  # bandit over the renamed module
]
COPY_SAMPLE = [
    "service/tests/functional/test_feed_query_http.py",
    "service/tests/functional/test_sink_edges_http.py",
]
# Test files left out of the copy's run that name a file the rename changes, and why.
NOT_IN_THE_COPY = {
    "service/tests/functional/test_rename.py": "this test: the copy does not rename itself again",
    "service/tests/unit/test_rename_rules.py": "renames trees of its own making, not this one",
    "service/tests/functional/test_docker_engine.py": "the engine's ports and images are this run's",
    "service/tests/functional/test_benchmark_smoke.py": (
        "slow; it reads docs/benchmarks.md's table, where the rename changes no line"
    ),
}
WIRING = "service/tests/conftest.py"


def wiring_users(copy: Path) -> tuple[set[str], str]:
    """The copy's test files that use a fixture of the wiring, from collecting its whole
    suite (every test module imports, every fixture and parameter resolves); and the
    collection's output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "service/tests/pytest.ini"]
        + ["--rootdir", "service/tests", "-p", "no:cacheprovider", "-q", "--fixtures-per-test"]
        + ["service/tests"],
        cwd=copy,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_ADDOPTS")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    users, test = set(), None
    for line in result.stdout.splitlines():
        located = re.fullmatch(r"-+ \((service/tests/[^:]+):\d+\) -+", line)
        if located:
            test = located.group(1)
        elif test and re.search(rf" -- {re.escape(WIRING)}:\d+$", line):
            users.add(test)
    return users, result.stdout


def copy_runs(copy: Path, changed: frozenset[str]) -> list[str]:
    """The test paths the renamed copy runs (see above)."""
    paths = set(COPY_ARTEFACT_TESTS) | set(COPY_SAMPLE)
    for pattern in COPY_FORK_TESTS:
        for found in copy.glob(pattern):
            files = sorted(found.rglob("test_*.py")) if found.is_dir() else [found]
            paths |= {path.relative_to(copy).as_posix() for path in files}
    paths |= {
        name
        for name in changed
        if name.startswith("service/tests/")
        and name.endswith(".py")
        and (copy / name).exists()
        and Path(name).name.startswith("test_")
    }
    return sorted(paths)


def code(path: Path) -> str:
    """A module's code without its docstrings: what runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
    return ast.dump(tree)


def test_the_rename_changes_no_code_the_copy_leaves_unrun(renamed):
    """The premise of the copy's short run: outside the tests, the rename changes no code
    but the connector's module and the gunicorn command (dev.py), which the copy's run
    covers; elsewhere only docstrings and files that are not Python. A rename that starts
    changing other code must widen what the copy runs (COPY_ARTEFACT_TESTS)."""
    copy, _, changed = renamed
    code_changed = []
    for name in sorted(changed):
        if not name.endswith(".py") or name.startswith("service/tests/"):
            continue
        if name in (f"service/{OLD.module}.py", f"service/{MODULE}.py", "service/tools/dev.py"):
            continue
        if not (ROOT / name).exists() or not (copy / name).exists():
            code_changed.append(f"{name} (moved)")
        elif code(ROOT / name) != code(copy / name):
            code_changed.append(name)
    assert code_changed == []
    dev = [
        line
        for line in difflib.unified_diff(
            (ROOT / "service/tools/dev.py").read_text(encoding="utf-8").splitlines(),
            (copy / "service/tools/dev.py").read_text(encoding="utf-8").splitlines(),
            lineterm="",
            n=0,
        )
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert all(line[1:].startswith("GUNICORN_ARGS = ") for line in dev), dev


def test_no_test_left_unrun_in_the_copy_reads_what_the_rename_edits(renamed):
    """A test file the copy does not run names no file the rename changed (README.md,
    Dockerfile, a Sesam config, a docs page, ...), unless NOT_IN_THE_COPY says why."""
    copy, _, changed = renamed
    runs = set(copy_runs(copy, changed))
    names = {Path(name).name for name in changed if not name.endswith(".py")}
    named = {}
    for path in sorted(copy.glob("service/tests/**/test_*.py")):
        relative = path.relative_to(copy).as_posix()
        if relative in runs or relative in NOT_IN_THE_COPY:
            continue
        text = path.read_text(encoding="utf-8")
        found = sorted(name for name in names if name in text)
        if found:
            named[relative] = found
    assert named == {}, "run these in the copy (COPY_ARTEFACT_TESTS) or say why not"


@pytest.mark.timeout(600)
def test_the_renamed_copy_passes_its_own_tests(renamed):
    """The renamed copy collects its whole suite, and passes the tests that can tell it from
    the reference (see COPY_FORK_TESTS above), with the README's test command."""
    copy, _, changed = renamed
    users, collected = wiring_users(copy)
    paths = copy_runs(copy, changed)
    assert users <= set(paths), sorted(users - set(paths))
    assert "service/tests/conformance/test_sesam_conformance.py" in users, collected[-2000:]
    command = [
        sys.executable,
        "-m",
        "service.tools.dev",
        "test",
        *paths,
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "-n",  # one process: this test already has its worker's share of the machine
        "0",
    ]
    env = {**os.environ, "SERVICE_DEV_PYTHON": sys.executable}
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=540)
    summary = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert " passed" in result.stdout
