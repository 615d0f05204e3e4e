"""The expected output of ``sesam test``, made by the local Sesam runner.

    .venv/bin/python -m service.tools.sesam_expected http://localhost:5000           # write sesam/expected/
    .venv/bin/python -m service.tools.sesam_expected http://localhost:5000 --check   # compare, change nothing

sesam-py's ``sesam test`` (``sesam verify``) compares the entities of the node's output
and endpoint pipes with ``sesam/expected/<pipe>.json``, one file per test spec
``sesam/expected/<pipe>.test.json``. This command makes those files for every spec whose
pipe publishes (or writes out) a dataset that a feed pipe fills, as ``sesam update`` would
write them: it pulls that feed pipe's ``url`` from a running connector with the runner
(``pull --full``, with the pipe's ``page_size``) and keeps what sesam-py keeps: every
property but the internal ones (``_id`` stays, and ``_deleted`` when true), numbers as
sesam-py fixes them, deleted entities only when the spec says ``"ignore_deletes": false``,
sorted by ``_id``, in ``sesam update``'s text. Run it against the connector in front of the
demo Records API with its seed data (``python3 -m service.tools.dev run``); a test runs
``--check`` on every test run, so the files cannot drift from what the connector serves.

It runs the runner, which needs ``requests``: run it with the project's Python
(``.venv/bin/python``, which ``dev run``, ``dev test`` and ``dev setup`` create).

Exit status: 0 done (or no drift), 1 drift or a failed pull, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from service.tools.sesam_format import format_expected

ROOT = Path(__file__).resolve().parents[2]
SESAM = ROOT / "sesam"
PROG = ".venv/bin/python -m service.tools.sesam_expected"


class ExpectedError(Exception):
    """A spec this command cannot make output for, or a failed pull: one line."""


def load_configs(folder: Path) -> dict[str, dict[str, Any]]:
    """The pipes of the config folder, by ``_id`` (pipes/*.conf.json, as sesam-py reads them)."""
    pipes: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / "pipes").glob("*.conf.json")):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        for config in loaded if isinstance(loaded, list) else [loaded]:
            pipes[config["_id"]] = config
    return pipes


def specs(folder: Path) -> dict[str, dict[str, Any]]:
    """The test specs that compare output, by pipe (sesam-py: the file's name, or ``pipe``)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / "expected").glob("*.test.json")):
        spec = json.loads(path.read_text(encoding="utf-8"))
        if spec.get("ignore") is True:
            continue
        name = path.name[: -len(".test.json")]
        found[spec.get("pipe", name)] = {"file": spec.get("file", f"{name}.json"), **spec}
    return found


def dataset_of(pipe: dict[str, Any]) -> str:
    """The dataset a pipe writes: its dataset sink's, by default its own ``_id``."""
    sink = pipe.get("sink") or {}
    return sink.get("dataset", pipe["_id"]) if sink.get("type", "dataset") == "dataset" else ""


def feed_pipe_for(pipe_id: str, pipes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The feed pipe whose dataset the tested pipe reads, as it is (no transform)."""
    if pipe_id not in pipes:
        raise ExpectedError(f"a test spec names pipe {pipe_id!r}, which pipes/ does not have")
    pipe = pipes[pipe_id]
    source = pipe.get("source") or {}
    if source.get("type") != "dataset" or pipe.get("transform"):
        raise ExpectedError(
            f"pipe {pipe_id!r} does not publish a dataset as it is; make its expected "
            "output some other way"
        )
    for candidate in pipes.values():
        if dataset_of(candidate) == source["dataset"]:
            if (candidate.get("source") or {}).get("type") != "json" or candidate.get("transform"):
                break
            return candidate
    raise ExpectedError(f"no feed pipe (a json source, no transform) fills {source['dataset']!r}")


def as_sesam_verify_compares(entity: Any) -> Any:
    """What sesam-py compares and ``sesam update`` writes: internal properties dropped (but
    ``_id``, and ``_deleted`` when true), at every level; a float that prints as ``N.0`` as
    the integer N; an integer of more than 16 digits through a float, as sesam-py rounds it
    (unless it runs with ``-no-large-int-bugs``)."""
    if isinstance(entity, dict):
        return {
            key: as_sesam_verify_compares(value)
            for key, value in entity.items()
            if not key.startswith("_") or key == "_id" or (key == "_deleted" and value is True)
        }
    if isinstance(entity, list):
        return [as_sesam_verify_compares(value) for value in entity]
    if isinstance(entity, float) and str(entity).endswith(".0"):
        return int(entity)
    if isinstance(entity, int) and not isinstance(entity, bool) and len(str(entity)) > 16:
        return int(Decimal(str(float(entity))))
    return entity


def ignores_deletes(spec: dict[str, Any]) -> bool:
    """sesam-py's default: a spec compares deleted entities only with ``ignore_deletes: false``."""
    return spec.get("ignore_deletes", True) is True


def pull(url: str, page_size: int) -> list[dict[str, Any]]:
    """A full run of the feed with the local Sesam runner, as the pipe's json source pages."""
    with tempfile.TemporaryDirectory(prefix="sesam-expected-") as directory:
        out = Path(directory) / "out.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.tools.sesam_runner",
                "pull",
                url,
                "--full",
                "--page-size",
                str(page_size),
                "--state",
                str(Path(directory) / "state.json"),
                "--out",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise ExpectedError(f"the runner's pull of {url} failed: {result.stderr.strip()}")
        return json.loads(out.read_text(encoding="utf-8"))


def expected_outputs(connector_url: str, folder: Path = SESAM) -> dict[Path, str]:
    """Every expected output file's path and text, made from the running connector."""
    pipes = load_configs(folder)
    outputs: dict[Path, str] = {}
    for pipe_id, spec in specs(folder).items():
        feed = feed_pipe_for(pipe_id, pipes)
        source = feed["source"]
        entities = pull(
            f"{connector_url.rstrip('/')}/{source['url']}", source.get("page_size", 1000)
        )
        kept = [as_sesam_verify_compares(e) for e in entities]
        if ignores_deletes(spec):
            kept = [e for e in kept if e.get("_deleted", False) is False]
        compared = sorted(
            kept, key=lambda e: (e["_id"], json.dumps(e, sort_keys=True, ensure_ascii=False))
        )
        outputs[folder / "expected" / spec["file"]] = format_expected(compared)
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the running connector, e.g. http://localhost:5000")
    parser.add_argument("--check", action="store_true", help="compare; write nothing")
    parser.add_argument("--sesam", type=Path, default=SESAM, help="the config folder")
    args = parser.parse_args(argv)
    try:
        outputs = expected_outputs(args.url, args.sesam)
    except ExpectedError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    drift = []
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            drift.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if drift:
        print(f"{PROG}: out of date (run without --check): {', '.join(drift)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
