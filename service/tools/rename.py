"""Rename the connector in place, from the root of a fork (stdlib only).

    python -m service.tools.rename acme-crm             # service/acme_crm.py, service acme-crm, ...
    python -m service.tools.rename acme-crm --dry-run   # show what would change, change nothing
    python -m service.tools.rename other-name --force   # rename an already renamed fork again

Why a command: the connector's name shows in its module, the gunicorn command, the
Dockerfile, the compose service and image, the Sesam config, CI, the tests, the README and docs/;
a rename by hand misses one. Every place it touches is one line of ``PLACES`` below, and
each is a precise pattern (``service.connector``, ``service/connector.py``, the compose
service key, ...): the word "connector" in prose is left alone. The Sesam config's
descriptions are prose that names its ids: there, an id the config knows is renamed
(``rename_described_ids``), the rest left alone. Running it again with the
same name changes nothing; it also repairs places that still name the original
``connector`` (after merging changes from the reference, say).
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ORIGINAL = "connector"
SESAM_ID = re.compile(r"[a-z0-9][a-z0-9_-]{1,62}")
# Names in service/ that belong to the layout (the framework and tools packages and what
# they hold, the tests, the gunicorn config): a connector may not take them, so that its
# module never shadows or is mistaken for one of them. Any other module or package already
# in service/ is refused too (see rename()).
RESERVED = frozenset(
    {
        # the layout
        "service",
        "framework",
        "tools",
        "tests",
        "conftest",
        "conformance",
        "unit",
        "functional",
        "gunicorn",
        "gunicorn_conf",
        "main",
        # service/framework/
        "settings",
        "config",
        "errors",
        "feed",
        "sink",
        "sequences",
        "transit",
        "upstream",
        "upstream_auth",
        "upstream_errors",
        "bounded",
        "deadlines",
        "masking",
        "memory",
        "auth",
        "adapter",
        "app",
        "health",
        "logging",
        "state",
        "jsontext",
        "paging",
        "positions",
        "rate_limit",
        "transform",
        "worker",
        # service/tools/
        "apps",
        "dev",
        "rename",
        "runner",
        "sesam_runner",
        "sesam_client",
        "sesam_expected",
        "sesam_format",
        "servers",
        "reference",
        "mutation_audit",
        "demo_upstream",
        "demo_tickets",
        "hostile_upstream",
        "examples",
        "benchmarks",
    }
)
# The rename tool and its tests speak of the original name on purpose: never rewritten.
# Everything else in service/ (framework, tools, tests) is rewritten where it names the
# connector's module: the dev runner's and the benchmarks' gunicorn commands, the tests.
LEFT_ALONE = frozenset(
    {
        "service/tools/rename.py",
        "service/tests/functional/test_rename.py",
        "service/tests/unit/test_rename_rules.py",
    }
)
SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        "__pycache__",
        "node_modules",
        ".ruff_cache",
        ".pytest_cache",
        ".mypy_cache",
        ".benchmarks",
    }
)

CODE = ("service/**/*.py", "service/**/*.ini", "service/**/*.toml")
DOCKER = ("Dockerfile", "docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
COMPOSE = DOCKER[1:]
CI = (".github/workflows/*.yml", ".github/workflows/*.yaml", ".ci/*")
SESAM = ("sesam/**/*.json",)
DOCS = ("README.md", "docs/**/*.md")
EVERYWHERE = CODE + DOCKER + CI + SESAM + DOCS


@dataclass(frozen=True)
class Place:
    """Where the connector's name appears: files (globs) and one regular expression.

    ``{name}`` (the Sesam and Docker name, ``acme-crm``) and ``{module}`` (the Python
    module, ``acme_crm``) stand for the old name in ``pattern`` and the new one in
    ``replacement``; ``replacement`` may use the pattern's groups (``\\g<1>``).
    """

    files: tuple[str, ...]
    pattern: str
    replacement: str
    what: str


PLACES = (
    Place(
        EVERYWHERE,
        r"\bservice\.{module}\b",
        "service.{module}",
        "the module in imports and the gunicorn command",
    ),
    Place(EVERYWHERE, r"\bservice/{module}\.py\b", "service/{module}.py", "the module's path"),
    Place(EVERYWHERE, r"\btest_{module}\.py\b", "test_{module}.py", "its tests' file name"),
    Place(
        COMPOSE, r"(?m)^(\s+){name}:(\s*(?:#.*)?)$", r"\g<1>{name}:\g<2>", "the compose service key"
    ),
    Place(
        COMPOSE + DOCS + CI,
        r"(?mi)^(\s*(?:-\s*)?image:\s*[\"']?[^\s\"']*?)\b{name}\b",
        r"\g<1>{name}",
        "the image name",
    ),
    Place(
        CODE,
        r"((?:\bservices|\[\s*[\"']services[\"']\s*\])\s*\[\s*[\"']){name}([\"'])",
        r"\g<1>{name}\g<2>",
        "the compose service in tests that read docker-compose.yml",
    ),
    Place(
        COMPOSE,
        r"(?m)^(\s*container_name:\s*[\"']?[^\s\"']*?)\b{name}\b",
        r"\g<1>{name}",
        "the container name",
    ),
    Place(
        DOCS + CI + DOCKER + CODE,
        r"\b(docker[- ]compose(?:\s+-{1,2}\S+)*\s+"
        r"(?:exec|run|logs|restart|stop|start|build|up|down|ps|kill|rm|pull|push)"
        r"(?:\s+-{1,2}\S+)*\s+){name}\b",
        r"\g<1>{name}",
        "docker-compose commands naming the service",
    ),
    Place(
        DOCS + CI,
        r"(\s(?:-t|--tag)[ =][^\s:]*?)\b{name}\b",
        r"\g<1>{name}",
        "image tags in docker build commands",
    ),
    Place(
        SESAM,
        r'("(?:_id|system|image|dataset)"\s*:\s*"[^"]*?)\b{name}\b',
        r"\g<1>{name}",
        "the Sesam system id, its image, the pipes' ids and system, and datasets named "
        "after a pipe",
    ),
    Place(
        SESAM,
        r"(\"url\"\s*:\s*\"[a-z]+://[^\"/]*?)\b{name}\b",
        r"\g<1>{name}",
        "URLs that reach the connector by its name",
    ),
    Place(
        EVERYWHERE,
        r"(\bsesam/[\w./-]*?)\b{name}\b",
        r"\g<1>{name}",
        "paths of the Sesam config files (moved: see plan())",
    ),
    Place(
        DOCS + CI + DOCKER,
        r"(?<![\w.-])((?:[\w.-]+/)+)(?<!service/){name}(?=:[\w.-]|[\s`\"')\]]|$)",
        r"\g<1>{name}",
        "image references in prose (sesamcommunity/connector:1.0.0)",
    ),
    Place(
        DOCS,
        r"(`[a-z0-9_-]*?)\b{name}\b(?=[a-z0-9_-]*`)",
        r"\g<1>{name}",
        "`quoted` pipe and system ids and compose service names",
    ),
    Place(
        DOCS,
        r"\A# (?:The reference Sesam connector|{name}: a Sesam connector)",
        "# {name}: a Sesam connector",
        "the README title",
    ),
)


# The ids of the Sesam config (systems, pipes, datasets), and the descriptions that name
# them in prose: "the feed pipe connector-people", "expected/connector-people-endpoint.json".
SESAM_IDS = re.compile(r'"(?:_id|system|dataset)"\s*:\s*"([^"\\]+)"')
DESCRIPTION = re.compile(r'("description"\s*:\s*")((?:[^"\\]|\\.)*)(")')
ID_LIKE = re.compile(r"[A-Za-z0-9_-]+")


def sesam_ids(configs: dict[Path, str]) -> set[str]:
    """The ids the Sesam config files declare or refer to, and the files' own names."""
    found: set[str] = set()
    for path, text in configs.items():
        found.update(SESAM_IDS.findall(text))
        found.add(path.name.split(".")[0])
    return found


def rename_described_ids(text: str, old: Names, new: Names, known: set[str]) -> tuple[str, int]:
    """In the config's descriptions, the ids that name the connector (``connector-people``,
    ``people-to-connector``) renamed as the ids themselves are: a word of an id only, and
    only an id the config knows (before or after the rename), so that prose ("the
    connector's feed") and other names (a secret's, ``connector-password``) stay."""
    word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(old.name)}(?![A-Za-z0-9])")
    count = 0

    def one(match: re.Match[str]) -> str:
        nonlocal count
        token = match.group(0)
        if token == old.name or not word.search(token):
            return token
        renamed = word.sub(new.name, token)
        if token not in known and renamed not in known:
            return token
        count += 1
        return renamed

    def described(match: re.Match[str]) -> str:
        return match.group(1) + ID_LIKE.sub(one, match.group(2)) + match.group(3)

    return DESCRIPTION.sub(described, text), count


class Refused(Exception):
    """A rename that must not happen; the message is the one line the user sees."""


@dataclass(frozen=True)
class Names:
    name: str
    module: str

    @classmethod
    def of(cls, name: str) -> Names:
        return cls(name, module_for(name))


def module_for(name: str) -> str:
    return name.replace("-", "_")


def check_name(name: str) -> None:
    """Refuse a name that Sesam's microservice ids or Python's module names cannot take."""
    if not SESAM_ID.fullmatch(name):
        raise Refused(
            f"{name!r} is not a Sesam microservice id: use 2 to 63 lower-case ASCII letters, "
            "digits, '-' and '_', starting with a letter or digit"
        )
    module = module_for(name)
    if name[0].isdigit():
        raise Refused(
            f"{name!r} starts with a digit: the Python module service/{module}.py "
            "could not be imported; start it with a letter"
        )
    if keyword.iskeyword(module) or not module.isidentifier():
        raise Refused(
            f"{name!r} gives the Python module name {module!r}, a keyword or not "
            "an identifier; pick another name"
        )
    if module in RESERVED:
        raise Refused(
            f"{name!r} clashes with service/{module}, part of the plumbing or "
            "the layout; pick another name"
        )


def walk(root: Path) -> Iterator[Path]:
    """Every file of the fork, minus virtual environments, caches and .git."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
        for file in sorted(files):
            yield Path(directory, file)


def place_files(root: Path, place: Place) -> list[Path]:
    found: set[Path] = set()
    for pattern in place.files:
        found.update(
            p
            for p in root.glob(pattern)
            if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(root).parts)
        )
    return sorted(p for p in found if p.relative_to(root).as_posix() not in LEFT_ALONE)


def connector_module(root: Path) -> str:
    """The current connector module in service/: it defines create_app and is no plumbing."""
    candidates = []
    for path in sorted((root / "service").glob("*.py")):
        if path.stem in RESERVED or path.stem.startswith("_"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"(?m)^(def create_app\(|create_app = )", text):
            candidates.append((("FORK:" not in text), path.stem))
    if not candidates:
        raise Refused(
            "no connector module in service/ (a module that defines create_app); "
            "run this from the root of a fork"
        )
    tagged = [stem for untagged, stem in candidates if not untagged]
    if len(tagged) == 1:
        return tagged[0]
    if len(candidates) == 1:
        return candidates[0][1]
    names = ", ".join(f"service/{stem}.py" for _, stem in candidates)
    raise Refused(f"cannot tell which module is the connector: {names}")


def current_names(root: Path) -> Names:
    """The fork's current name: its module, and the spelling its compose file or README uses."""
    module = connector_module(root)
    if module == ORIGINAL:
        return Names(ORIGINAL, ORIGINAL)
    spelled = "[-_]".join(re.escape(part) for part in module.split("_"))
    texts = [root / f for f in COMPOSE] + [root / "README.md"]
    looks = [
        rf"(?m)^\s+({spelled}):\s*$",
        rf"\bdocker[- ]compose(?:\s+\S+)*?\s+exec\s+({spelled})\b",
    ]
    for path in texts:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for look in looks:
                match = re.search(look, text)
                if match:
                    return Names(match.group(1), module)
    return Names(module.replace("_", "-") if "_" in module else module, module)


def rewrite(text: str, place: Place, old: Names, new: Names) -> tuple[str, int]:
    def fill(template: str, names: Names, escape: bool) -> str:
        name, module = names.name, names.module
        if escape:
            name, module = re.escape(name), re.escape(module)
        return template.replace("{name}", name).replace("{module}", module)

    return re.subn(fill(place.pattern, old, True), fill(place.replacement, new, False), text)


SERVICE_IMPORT = re.compile(r"(?:from (service\.[\w.]+) import \S.*|import (service\.[\w.]+))")


def sort_service_imports(text: str) -> str:
    """Keep ``from service.x import y`` blocks in isort order after a module changed name."""
    lines = text.split("\n")
    start = 0
    while start < len(lines):
        if not SERVICE_IMPORT.fullmatch(lines[start]):
            start += 1
            continue
        end = start
        while end < len(lines) and SERVICE_IMPORT.fullmatch(lines[end]):
            end += 1

        def key(line: str) -> tuple[bool, str]:
            match = SERVICE_IMPORT.fullmatch(line)
            assert match is not None
            return line.startswith("from "), (match.group(1) or match.group(2)).lower()

        lines[start:end] = sorted(lines[start:end], key=key)
        start = end
    return "\n".join(lines)


@dataclass
class Plan:
    old: Names
    new: Names
    edits: dict[Path, tuple[str, list[str]]]
    moves: list[tuple[Path, Path]]


def plan(root: Path, new: Names, old: Names) -> Plan:
    """Every edit and move, computed before anything is written."""
    edits: dict[Path, tuple[str, list[str]]] = {}
    olds = [old] if old.module == ORIGINAL else [old, Names(ORIGINAL, ORIGINAL)]
    for place in PLACES:
        for path in place_files(root, place):
            try:
                text, notes = edits.get(path) or (path.read_text(encoding="utf-8"), [])
            except UnicodeDecodeError:
                continue
            for former in olds:
                text, count = rewrite(text, place, former, new)
                if count:
                    notes.append(f"{place.what} ({count})")
            edits[path] = (text, notes)
    configs = {
        path: path.read_text(encoding="utf-8")
        for path in place_files(root, Place(SESAM, "", "", ""))
    }
    known = sesam_ids(configs) | sesam_ids(
        {path: (edits.get(path) or (text,))[0] for path, text in configs.items()}
    )
    for path in configs:
        text, notes = edits.get(path) or (configs[path], [])
        for former in olds:
            text, count = rename_described_ids(text, former, new, known)
            if count:
                notes.append(f"the Sesam ids named in descriptions ({count})")
        edits[path] = (text, notes)
    for path, (text, notes) in list(edits.items()):
        if path.suffix == ".py" and notes:
            text = sort_service_imports(text)
        if text == path.read_text(encoding="utf-8"):
            del edits[path]
        else:
            edits[path] = (text, notes)
    moves = []
    for former in olds:
        if former.module == new.module:
            continue
        module = root / "service" / f"{former.module}.py"
        if module.is_file():
            moves.append((module, module.with_name(f"{new.module}.py")))
        for test in sorted((root / "service" / "tests").glob(f"**/test_{former.module}.py")):
            moves.append((test, test.with_name(f"test_{new.module}.py")))
    for former in olds:
        if former.name == new.name:
            continue
        named = re.compile(rf"\b{re.escape(former.name)}\b")
        for config in sorted((root / "sesam").glob("**/*.json")):
            if named.search(config.name):
                # the first, as in the ids inside (a collection may share the name)
                moved = named.sub(new.name, config.name, count=1)
                moves.append((config, config.with_name(moved)))
    for source, target in moves:
        if target.exists():
            raise Refused(
                f"{target.relative_to(root)} already exists; "
                f"{source.relative_to(root)} cannot move there"
            )
    return Plan(old, new, edits, moves)


def stale(root: Path, module: str) -> list[str]:
    """Places anywhere in the fork that still name an old module after the rename."""
    look = re.compile(rf"\bservice[./]{re.escape(module)}\b")
    found = []
    for path in walk(root):
        relative = path.relative_to(root).as_posix()
        if relative in LEFT_ALONE or path.suffix in (".pyc", ".sqlite", ".db"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if look.search(line):
                found.append(f"{relative}:{number}: {line.strip()[:100]}")
    return found


def find_ruff(root: Path) -> str | None:
    """The fork's own ruff first (``.venv``, where ``python3 -m service.tools.dev`` installs
    the pins), then one beside this Python, then one on PATH."""
    places = [
        root / ".venv" / ("Scripts" if os.name == "nt" else "bin"),
        Path(sys.executable).parent,
    ]
    search = os.pathsep.join([*map(str, places), os.environ.get("PATH", "")])
    return shutil.which("ruff", path=search)


def reformat(root: Path, edited: list[Path]) -> None:
    """A longer name can push a line past the line length: let ruff wrap the edited
    Python files again, by the fork's own ruff settings."""
    python = [str(path) for path in edited if path.suffix == ".py" and path.exists()]
    if not python or not (root / "service" / "ruff.toml").is_file():
        return
    ruff = find_ruff(root)
    if ruff is None:
        print("ruff is not installed: run `ruff format service` before you commit")
        return
    if subprocess.run([ruff, "format", "--quiet", *python], cwd=root).returncode != 0:
        print("ruff format failed: run `ruff format service` and look")


def rename(root: Path, name: str, force: bool = False, dry_run: bool = False) -> int:
    check_name(name)
    if not (root / "service" / "__init__.py").is_file():
        raise Refused(f"no service/ package in {root}: run this from the root of a fork")
    new = Names.of(name)
    old = current_names(root)
    if old.module not in (ORIGINAL, new.module) and not force:
        raise Refused(
            f"this fork is already renamed to {old.name!r}; pass --force to rename it to {name!r}"
        )
    for taken in (f"{new.module}.py", new.module):
        if new.module != old.module and (root / "service" / taken).exists():
            raise Refused(f"service/{taken} already exists; pick another name")
    work = plan(root, new, old)
    if not work.edits and not work.moves:
        print(f"already named {name}: nothing to change")
        return 0
    for path, (_, notes) in sorted(work.edits.items()):
        print(f"edit {path.relative_to(root)}: {', '.join(notes)}")
        if not dry_run:
            path.write_text(work.edits[path][0], encoding="utf-8")
    for source, target in work.moves:
        print(f"move {source.relative_to(root)} -> {target.relative_to(root)}")
        if not dry_run:
            source.rename(target)
    if dry_run:
        print(f"dry run: would rename {old.name} to {name}; nothing written")
        return 0
    moved = dict(work.moves)
    reformat(root, [moved.get(path, path) for path in work.edits])
    left = [
        line
        for former in sorted({old.module, ORIGINAL} - {new.module})
        for line in stale(root, former)
    ]
    if left:
        print(
            f"renamed {old.name} to {name}, but these places still name the old module "
            "(outside the places this command knows; edit them by hand):"
        )
        print("\n".join(f"  {line}" for line in left))
        return 1
    print(
        f"renamed {old.name} to {name}: {len(work.edits)} files edited, "
        f"{len(work.moves)} moved; next: grep -n 'FORK:' service/{new.module}.py"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.rename", description="Rename the connector in place."
    )
    parser.add_argument("name", help="the new name, e.g. acme-crm (module service/acme_crm.py)")
    parser.add_argument(
        "--force", action="store_true", help="rename a fork that is already renamed"
    )
    parser.add_argument("--dry-run", action="store_true", help="show, change nothing")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return rename(args.root.resolve(), args.name, force=args.force, dry_run=args.dry_run)
    except Refused as refused:
        print(f"rename: refused: {refused}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
