"""The transform benchmark at a tiny size, so it cannot rot between the times someone runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_transform_benchmark_runs_and_both_answer_alike() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.tools.benchmarks.bench_transform",
            "--entities",
            "200",
            "--repeat",
            "1",
            "--latency-ms",
            "1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout)
    assert set(result["entities_per_second"]) == {"naive", "connector"}
    assert all(rate > 0 for rate in result["entities_per_second"].values())
    assert set(result["cpu_seconds_per_1k"]) == {"naive", "connector"}
