"""sesam/ is in the text sesam-py writes, so ``sesam status`` on a node just uploaded says
"up-to-date" instead of a difference for every file (it compares text: each local config
file with sesam-py's formatting of the node's copy; ``sesam update`` writes expected output
in its own form).

The expected strings below are what sesam-py's own formatter (``jsonformat.format_json``,
the Management Studio's editor with its default options) answers for the same values."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from service.tools.sesam_format import SESAM
from service.tools.sesam_format import files
from service.tools.sesam_format import format_config
from service.tools.sesam_format import format_expected
from service.tools.sesam_format import formatted

ROOT = Path(__file__).resolve().parents[3]


def test_every_file_sesam_py_compares_as_text_is_in_its_form():
    checked = [path.relative_to(SESAM).as_posix() for path in files()]
    assert any(p.startswith("systems/") for p in checked)
    assert any(p.startswith("pipes/") for p in checked)
    assert any(p.startswith("expected/") for p in checked)
    unformatted = [
        path.relative_to(SESAM).as_posix()
        for path in files()
        if path.read_text(encoding="utf-8") != formatted(path)
    ]
    assert unformatted == [], (
        "sesam status would report these as changed: python -m service.tools.sesam_format "
        "(or sesam format all)"
    )


def test_config_keys_come_in_sesams_conventional_order_then_alphabetically_internal_last():
    pipe = {
        "pump": {"cron_expression": "*/5 * * * *"},
        "zeta": [1, "a"],
        "_ts": 1,
        "source": {"url": "people", "type": "json", "system": "connector"},
        "type": "pipe",
        "_id": "p",
        "name": "Bjørn [x]",
        "$audit": {},
    }
    assert format_config(pipe) == (
        "{\n"
        '  "_id": "p",\n'
        '  "type": "pipe",\n'
        '  "name": "Bjørn [x]",\n'
        '  "source": {\n'
        '    "type": "json",\n'
        '    "system": "connector",\n'
        '    "url": "people"\n'
        "  },\n"
        '  "pump": {\n'
        '    "cron_expression": "*/5 * * * *"\n'
        "  },\n"
        '  "zeta": [1, "a"],\n'
        '  "$audit": {},\n'
        '  "_ts": 1\n'
        "}\n"
    )


def test_config_arrays_are_laid_out_as_the_management_studio_does():
    value = {"matrix": [[1, 2], [3, []]], "rows": [{"b": 1, "a": {}}, {}], "empty": []}
    assert format_config(value) == (
        "{\n"
        '  "empty": [],\n'
        '  "matrix": [\n'
        "    [1, 2],\n"
        "    [3,\n"
        "      []\n"
        "    ]\n"
        "  ],\n"
        '  "rows": [{\n'
        '    "a": {},\n'
        '    "b": 1\n'
        "  }, {}]\n"
        "}\n"
    )
    assert format_config([{"_id": "a"}, {"_id": "b"}]) == (
        '[{\n  "_id": "a"\n}, {\n  "_id": "b"\n}]\n'
    )


def test_expected_output_is_sorted_and_escapes_html_as_sesam_update_writes_it():
    assert format_expected([{"name": "<Ada & Bo>", "_id": "p-1", "n": 1}]) == (
        "[\n"
        "  {\n"
        '    "_id": "p-1",\n'
        '    "n": 1,\n'
        '    "name": "\\u003cAda \\u0026 Bo\\u003e"\n'
        "  }\n"
        "]\n"
    )


def run_format(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.tools.sesam_format", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_names_a_file_out_of_form_and_the_command_puts_it_back(tmp_path):
    folder = tmp_path / "sesam"
    shutil.copytree(SESAM, folder)
    system = next((folder / "systems").glob("*.conf.json"))
    system.write_text(json.dumps(json.loads(system.read_text()), indent=4), encoding="utf-8")
    checked = run_format("--check", "--sesam", str(folder))
    assert checked.returncode == 1
    assert f"systems/{system.name}" in checked.stderr
    assert run_format("--sesam", str(folder)).returncode == 0
    assert system.read_text(encoding="utf-8") == (SESAM / "systems" / system.name).read_text(
        encoding="utf-8"
    )
    assert run_format("--check", "--sesam", str(folder)).returncode == 0
