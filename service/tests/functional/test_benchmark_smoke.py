"""The benchmarks at tiny sizes, so they cannot rot between the times someone runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_benchmark(name: str, *options: str) -> str:
    """``python -m service.tools.benchmarks.<name>`` from the repository root; it must exit
    0. Answers what it printed."""
    finished = subprocess.run(
        [sys.executable, "-m", f"service.tools.benchmarks.{name}", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def test_the_feed_benchmark_runs_and_all_four_deliver_every_record_from_both_upstreams(
    tmp_path: Path,
) -> None:
    results = tmp_path / "bench.json"
    printed = run_benchmark(
        "bench_feed", "--records", "2000", "--repeat", "1", "--pause", "0", "--json", str(results)
    )
    results = json.loads(results.read_text())
    for upstream in ("fast", "computed"):  # pre-encoded pages, and pages computed per request
        summaries = results[f"{upstream} 2000"]
        for name in ("limit", "parse", "naive", "connector"):
            assert summaries[name]["error"] is None, (upstream, name, summaries[name]["error"])
            assert summaries[name]["entities"] == 2000, (upstream, name)
            assert summaries[name]["cpu_seconds_per_100k"] > 0, (upstream, name)
        assert summaries["connector"]["server_peak_mb"] > 0  # the RSS sampler saw gunicorn
    # The table it prints is the one docs/benchmarks.md shows: same columns, same rows.
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    (header,) = {line for line in page.splitlines() if line.startswith("| upstream | records |")}
    assert header in printed
    assert "| fast | 2,000 | connector |" in printed
    assert "| computed | 2,000 | connector |" in printed


def test_the_sink_benchmark_runs_and_reports_parsing_and_every_sink() -> None:
    printed = run_benchmark(
        "bench_sink", "--entities", "200", "--repeat", "1", "--latency-ms", "0", "--json"
    )
    result = json.loads(printed)
    assert set(result["parse"]) == {
        "stdlib json",
        "parse_body (orjson)",
        "the sink's walk (stdlib, 2 passes)",
    }
    parse = result["parse"]
    walk = parse.pop("the sink's walk (stdlib, 2 passes)")
    assert all(cost["ms"] > 0 and cost["held_bytes"] > 0 for cost in parse.values())
    # The sink's walk holds one entity at a time: far less than either parsed batch.
    assert walk["ms"] > 0 and 0 < walk["peak_bytes"] < min(c["held_bytes"] for c in parse.values())
    (at,) = result["latencies"]
    assert at["upstream_latency_ms"] == 0
    assert all(rate > 0 for rate in at["entities_per_second"].values())
    assert at["sink_cpu_seconds_per_1k"]["connector"] > 0


def test_the_transform_benchmark_runs_and_both_answer_alike() -> None:
    printed = run_benchmark(
        "bench_transform", "--entities", "200", "--repeat", "1", "--latency-ms", "1", "--json"
    )
    result = json.loads(printed)
    assert set(result["entities_per_second"]) == {"naive", "connector"}
    assert all(rate > 0 for rate in result["entities_per_second"].values())
    assert set(result["cpu_seconds_per_1k"]) == {"naive", "connector"}
