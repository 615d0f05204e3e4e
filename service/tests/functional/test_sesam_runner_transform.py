"""The local Sesam runner's ``transform``: a feed run through the connector's HTTP
transform, as a pipe with an ``http`` transform would, against real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.tools.sesam_runner import RunnerError
from service.tools.sesam_runner import check_transformed

ROOT = Path(__file__).resolve().parents[3]
RUNNER = [sys.executable, "-m", "service.tools.sesam_runner"]


def test_a_feed_piped_through_the_transform(connector, upstream, tmp_path):
    out = tmp_path / "people-with-records.json"
    pull = subprocess.Popen(
        [*RUNNER, "pull", f"{connector.url}/people", "--full", "--page-size", "7",
         "--state", str(tmp_path / "state.json"), "--out", "-"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    result = subprocess.run(
        [*RUNNER, "transform", f"{connector.url}/transform/people-record", "-",
         "--batch-size", "6", "--out", str(out)],
        cwd=ROOT, stdin=pull.stdout, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pull.wait(timeout=60) == 0
    assert result.returncode == 0, result.stderr
    entities = json.loads(out.read_text(encoding="utf-8"))
    # Paging asks with since after the first page, so the tombstone p-21 comes too.
    live = [e["_id"] for e in connector.get("people").json()]
    assert [e["_id"] for e in entities] == [*live, "p-21"]
    assert [e["records:found"] for e in entities] == [True] * 20 + [False]
    assert entities[-1]["_deleted"] is True
    assert "in 4 requests" in result.stderr  # 21 entities in batches of 6


def test_a_failing_transform_fails_the_run_and_writes_nothing(connector, upstream, tmp_path):
    source = tmp_path / "in.json"
    source.write_text(json.dumps([{"_id": "p-1"}, {"_id": "p-2"}]), encoding="utf-8")
    out = tmp_path / "out.json"
    upstream.faults(storm={"status": 500, "count": 1_000_000, "retry_after": None})
    result = subprocess.run(
        [*RUNNER, "transform", f"{connector.url}/transform/people-record", str(source),
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "HTTP 502" in result.stderr and "batch 1" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"_id": "a"}', "not an array"),
        (b'[{"_id": 1}]', "string _id"),
        (b"[{", "not valid JSON"),
    ],
)
def test_an_answer_sesam_would_not_take_is_a_failure(body, problem):
    with pytest.raises(RunnerError, match=problem):
        check_transformed(body)
