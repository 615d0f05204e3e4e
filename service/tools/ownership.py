"""The ownership line and this connector's name, as two files at the repository root say.

``ownership.toml`` (the framework's) names the framework's files: a fork never edits them,
and an upgrade merges the reference's next release into them. Every other file is the
fork's. ``fork.toml`` (the fork's) names the connector and its app. The rename, the dev
tool, ``service.tools.apps`` and the tests read both here; gunicorn's config reads
``fork.toml`` itself, since the image carries no tools (docs/upgrading.md).

    python3 -m service.tools.ownership                 # the framework's version, this connector
    python3 -m service.tools.ownership edited FETCH_HEAD   # framework files this fork changed

``edited REV`` lists the framework's files that this fork changed since the last commit of
the reference it shares with ``REV`` (a release just fetched): the files an upgrade to it
may conflict in. Standard library only: it runs on the system Python.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "ownership.toml"
FORK = "fork.toml"
Owner = Literal["framework", "fork"]


@dataclass(frozen=True)
class Fork:
    """This connector, as ``fork.toml`` names it."""

    name: str  # the Sesam system's id and the image's name: acme-crm
    app: str  # its app factory, as gunicorn runs it: service.acme_crm:create_app()

    @property
    def module(self) -> str:
        """The adapter module's name in ``service/``: ``acme_crm``."""
        return self.app.partition(":")[0].removeprefix("service.")


class OwnershipError(Exception):
    """A manifest or ``fork.toml`` that cannot be read; the message is one line."""


def read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise OwnershipError(f"{path.name} is missing in {path.parent}") from None
    except tomllib.TOMLDecodeError as error:
        raise OwnershipError(f"{path.name}: {error}") from None


def read_fork(root: Path = ROOT) -> Fork:
    """``fork.toml``: the connector's name and app."""
    values = read_toml(root / FORK)
    name, app = values.get("name"), values.get("app")
    if not isinstance(name, str) or not isinstance(app, str):
        raise OwnershipError(f"{FORK} must set name and app as strings")
    if not re.fullmatch(r"service\.\w+:\w+\(\)", app):
        raise OwnershipError(f"{FORK}: app must be service.<module>:create_app(), not {app!r}")
    return Fork(name, app)


@cache
def pattern(glob: str) -> re.Pattern[str]:
    """A manifest's glob as a regular expression: ``*`` within a folder, ``**`` across."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", glob)
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


@dataclass(frozen=True)
class Ownership:
    """The two lists of ``ownership.toml``."""

    framework: tuple[str, ...]
    fork: tuple[str, ...]

    def owner(self, path: str) -> Owner:
        """Whose a file is (a path from the root): the framework's if its list names it,
        else the fork's, whether the fork's list names it or the fork added it."""
        if any(pattern(glob).fullmatch(path) for glob in self.framework):
            return "framework"
        return "fork"

    def named(self, path: str) -> list[Owner]:
        """The lists that name a file: one at least, for every file of the reference (the
        framework's wins where both do: ``service/gunicorn.conf.py`` is one of
        ``service/*.py``)."""
        lists: list[tuple[Owner, tuple[str, ...]]] = [
            ("framework", self.framework),
            ("fork", self.fork),
        ]
        return [owner for owner, globs in lists if any(pattern(g).fullmatch(path) for g in globs)]


def read_ownership(root: Path = ROOT) -> Ownership:
    values = read_toml(root / MANIFEST)
    lists = []
    for owner in ("framework", "fork"):
        table = values.get(owner)
        files = table.get("files") if isinstance(table, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise OwnershipError(f"{MANIFEST}: [{owner}] must list its files")
        lists.append(tuple(files))
    return Ownership(*lists)


def framework_version() -> str:
    from service.framework import __version__

    return __version__


def git(root: Path, *arguments: str) -> str:
    program = shutil.which("git")
    if program is None:
        raise OwnershipError("git is not installed")
    result = subprocess.run(
        [program, *arguments], cwd=root, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise OwnershipError(f"git {' '.join(arguments)}: {result.stderr.strip()}")
    return result.stdout


def edited(root: Path, revision: str) -> list[str]:
    """The framework's files this fork changed since its last commit in common with
    ``revision``: where a merge of ``revision`` may conflict."""
    base = git(root, "merge-base", "HEAD", revision).strip()
    changed = git(root, "diff", "--name-only", "--no-renames", base, "HEAD").splitlines()
    ownership = read_ownership(root)
    return sorted(path for path in changed if ownership.owner(path) == "framework")


def main(argv: list[str]) -> int:
    try:
        if not argv:
            fork = read_fork()
            print(f"framework {framework_version()}; this connector: {fork.name}, {fork.app}")
            return 0
        if len(argv) == 2 and argv[0] == "edited":
            found = edited(ROOT, argv[1])
            if not found:
                print(f"no framework file changed here since the last commit shared with {argv[1]}")
                return 0
            print(f"framework files changed here since the last commit shared with {argv[1]}:")
            print("\n".join(f"  {path}" for path in found))
            return 1
    except OwnershipError as error:
        print(f"ownership: {error}", file=sys.stderr)
        return 2
    print("usage: python3 -m service.tools.ownership [edited REVISION]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
