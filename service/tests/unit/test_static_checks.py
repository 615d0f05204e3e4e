"""Static security checks (bandit), as CI runs them: the runtime with every check, each
finding fixed or waived in place with a reason; the tools with the waivers in
service/tools/bandit.yaml. pip-audit needs its vulnerability service: CI runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The image's code: the framework, the connector's module, gunicorn's config (service/*.py).
RUNTIME = [
    "service/framework",
    *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("service/*.py")),
]


def bandit(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bandit", "--quiet", "--recursive", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_bandit_finds_nothing_in_the_runtime():
    result = bandit(*RUNTIME)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bandit_finds_nothing_in_the_tools_but_what_is_waived_with_a_reason():
    result = bandit("--configfile", "service/tools/bandit.yaml", "service/tools")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_waiver_in_the_runtime_names_its_check_and_a_reason():
    waivers = [
        (path, line)
        for path in sorted((ROOT / "service").rglob("*.py"))
        if "tests" not in path.parts and "tools" not in path.parts
        for line in path.read_text(encoding="utf-8").splitlines()
        if "# nosec" in line
    ]
    assert waivers, "expected the known waivers (SQL marks, the dev STATE_DIR, type asserts)"
    for path, line in waivers:
        waiver = line.split("# nosec", 1)[1]
        assert waiver.startswith(" B") and ": " in waiver, f"{path}: {line.strip()}"
