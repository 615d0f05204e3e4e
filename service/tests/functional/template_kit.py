"""This repository as a fork holds it: its files, copied; git, run as a fork maintainer
runs it. For the tests of the template as a template (test_rename, test_upgrade) and of
its ownership line (unit/test_ownership)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def repository_files() -> list[str]:
    """The files a fork would hold: the ones git tracks plus uncommitted working files
    (``git ls-files -co --exclude-standard``), without ``.venv`` and ``.git``."""
    # The test image (Dockerfile, stage test) has neither: it runs these tests in the host's suite.
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
    return sorted(
        n for n in names if not n.startswith((".venv/", ".git/")) and (ROOT / n).is_file()
    )


def copy_repository(target: Path) -> list[str]:
    """This tree's files (``repository_files``) copied under ``target``; their names."""
    names = repository_files()
    for name in names:
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, path)
    return names


def git_environment() -> dict[str, str]:
    """Git as a maintainer's, without their configuration: a fixed identity, no editor
    for a merge's message, no global or system settings (a default branch, merge.ff)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PYTEST_ADDOPTS"))}
    env.update(
        GIT_AUTHOR_NAME="Fork Maintainer",
        GIT_AUTHOR_EMAIL="maintainer@example.com",
        GIT_COMMITTER_NAME="Fork Maintainer",
        GIT_COMMITTER_EMAIL="maintainer@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_MERGE_AUTOEDIT="no",
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def shell(command: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A command as a reader types it, through bash, in ``cwd``."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=git_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(command: str, cwd: Path, timeout: float = 120) -> str:
    """A command that must succeed; its output."""
    result = shell(command, cwd, timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout
