"""The template tests itself as a template: rename a copy, then run the copy's own tests.

The copy is what a fork would hold: the files git tracks plus uncommitted working files
(``git ls-files -co --exclude-standard``), without ``.venv`` and ``.git``. The renamed
copy's unit and functional tests run with this interpreter, green; this test and the
slow benchmark smoke tests are left out of that inner run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    copy = tmp_path_factory.mktemp("fork") / "fork"
    for name in repository_files():
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
    return copy, result.stdout


def test_the_module_and_its_test_move(renamed):
    copy, out = renamed
    assert (copy / f"service/{MODULE}.py").is_file()
    assert not (copy / f"service/{OLD.module}.py").exists()
    assert not list(copy.glob(f"service/tests/**/test_{OLD.module}.py"))
    if (ROOT / f"service/tests/test_{OLD.module}.py").exists():
        assert (copy / f"service/tests/test_{MODULE}.py").is_file()
    assert f"renamed {OLD.name} to {NAME}" in out


def test_no_place_in_the_copy_names_the_old_module(renamed):
    copy, _ = renamed
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
    copy, _ = renamed
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
    copy, _ = renamed
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
    copy, _ = renamed
    systems = [p.read_text(encoding="utf-8") for p in copy.glob("sesam/systems/*.conf.json")]
    images = {json.loads(text)["docker"]["image"].rsplit(":", 1)[0] for text in systems}
    assert images == {f"sesamcommunity/{NAME}"}
    workflow = (copy / ".github/workflows/ci.yml").read_text(encoding="utf-8")
    assert f"IMAGE: sesamcommunity/{NAME}\n" in workflow


def test_renaming_again_with_the_same_name_changes_nothing(renamed):
    copy, _ = renamed
    result = subprocess.run(
        [sys.executable, "-m", "service.tools.rename", NAME],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, f"already named {NAME}: nothing to change\n")


@pytest.mark.timeout(900)  # the copy runs nearly the whole suite: its own 900 s, not the ini's 300
def test_the_renamed_copy_passes_its_own_tests(renamed):
    copy, _ = renamed
    # The README's test command, in the renamed copy, with this interpreter's packages.
    command = [
        sys.executable,
        "-m",
        "service.tools.dev",
        "test",
        "service/tests",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "--ignore",
        "service/tests/functional/test_rename.py",
        "--ignore",
        "service/tests/functional/test_benchmark_smoke.py",
        "--ignore",  # the engine's ports and images are the outer run's
        "service/tests/functional/test_docker_engine.py",
    ]
    env = {**os.environ, "SERVICE_DEV_PYTHON": sys.executable}
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    summary = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert " passed" in result.stdout
