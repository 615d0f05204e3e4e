"""The Sesam config folder in the text sesam-py writes (standard library only).

    python -m service.tools.sesam_format           # rewrite sesam/ in that form
    python -m service.tools.sesam_format --check   # list the files not in it, change nothing

sesam-py compares text, not JSON: ``sesam status`` compares each local config file with
its own formatting of the node's copy, so a file written any other way always shows as
changed. ``sesam format`` writes that form; this is the same form, for a machine without
sesam-py, and for the test that keeps ``sesam/`` in it:

- config (``pipes/``, ``systems/``, ``node-metadata.conf.json``): the form of the Management
  Studio's editor with its default options. Keys in Sesam's conventional order (``_id``,
  ``type``, ``name``, ``description``, ``source``, ``sink``, ``transform``, ``pump``, ...),
  then the others alphabetically, internal keys last; two spaces a level; an array on one
  line, except that an array of arrays puts each on its own line and an object in an
  array opens on the array's line.
- ``expected/*.json`` (expected output and test specs): what ``sesam update`` writes, keys
  sorted, two spaces a level, ``<``, ``>`` and ``&`` as ``\\u`` escapes.
- the profile (``*-env.json``) is left as it is: sesam-py formats both sides before it
  compares it.

Exit status: 0 done (or every file in form), 1 files not in form (``--check``), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SESAM = ROOT / "sesam"
PROG = "python -m service.tools.sesam_format"

# Sesam's conventional key order; every other key comes after these.
CONVENTIONAL = (
    "_id",
    "type",
    "name",
    "description",
    "source",
    "sink",
    "transform",
    "pump",
    "metadata",
    "system",
    "datasets",
    "where",
    "return",
    "recurse",
    "max_depth",
    "exclude_root",
    "track-dependencies",
    "trace",
    "default",
)
_LAST = {"$audit", "$principals-from-user"}
INDENT = "  "


def key_order(key: str) -> tuple[int, int, str]:
    """Conventional keys first in their order, then the others, internal keys last."""
    if (key.startswith("_") and key != "_id") or key in _LAST:
        return (2, 0, key)
    if key in CONVENTIONAL:
        return (0, CONVENTIONAL.index(key), "")
    return (1, 0, key)


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _render(value: Any, level: int, in_array: bool) -> str:
    """``value`` at indent ``level``; an object inside an array keeps the array's level."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = level if in_array else level + 1
        pad = "\n" + INDENT * inner
        entries = [
            f"{_scalar(key)}: {_render(value[key], inner, False)}"
            for key in sorted(value, key=key_order)
        ]
        return "{" + pad + ("," + pad).join(entries) + "\n" + INDENT * (inner - 1) + "}"
    if isinstance(value, list):
        inner = level + 1
        text = "["
        for index, item in enumerate(value):
            if isinstance(item, list):  # an array in an array starts on a line of its own
                text += ("," if index else "") + "\n" + INDENT * inner
            elif index:
                text += ", "
            text += _render(item, inner, True)
        if value and isinstance(value[-1], list):
            text += "\n" + INDENT * level
        return text + "]"
    return _scalar(value)


def format_config(value: Any) -> str:
    """A pipe, system or node metadata as sesam-py formats config (``sesam format``)."""
    return _render(value, 0, False) + "\n"


def format_expected(value: Any) -> str:
    """Expected output or a test spec as ``sesam update`` and ``sesam format`` write it."""
    text = json.dumps(value, indent=INDENT, sort_keys=True, ensure_ascii=False) + "\n"
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def formatted(path: Path, folder: Path = SESAM) -> str | None:
    """The text sesam-py would have in ``path``, or None for a file it leaves as it is."""
    relative = path.relative_to(folder)
    value = json.loads(path.read_text(encoding="utf-8"))
    if relative.parts[0] == "expected":
        return format_expected(value)
    if relative.parts[0] in ("pipes", "systems") or relative.name == "node-metadata.conf.json":
        return format_config(value)
    return None


def files(folder: Path = SESAM) -> list[Path]:
    """The JSON files of the folder that sesam-py formats."""
    found = [folder / "node-metadata.conf.json"]
    for sub in ("pipes", "systems", "expected"):
        found += sorted((folder / sub).glob("*.json"))
    return [path for path in found if path.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list; write nothing")
    parser.add_argument("--sesam", type=Path, default=SESAM, help="the config folder")
    args = parser.parse_args(argv)
    unformatted = []
    for path in files(args.sesam):
        text = formatted(path, args.sesam)
        if text is None or path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            unformatted.append(str(path.relative_to(args.sesam)))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"formatted {path.relative_to(args.sesam)}")
    if unformatted:
        print(
            f"{PROG}: not in sesam-py's form (run without --check): {', '.join(unformatted)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
