"""The local Sesam runner as a developer runs it: ``python -m service.tools.sesam_runner``.

Pulls run against the connector under gunicorn and the demo Records API; the cases a
correct connector cannot produce (a since that does not advance, a sink's 409 or a
batch that keeps failing) run against a small fake server on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.tools.sesam_runner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pull(url: str, state: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = run("pull", url, "--state", str(state), "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, "the runner said nothing on stderr"
    return lines[-1]


def seed_bulk(upstream: Any, count: int, updated_at: str, prefix: str = "r") -> None:
    upstream.insert(
        "bulk",
        [{"id": f"{prefix}-{n:05d}", "updated_at": updated_at, "n": n} for n in range(count)],
    )


# --- pull against the connector -----------------------------------------------------------


def test_a_full_pull_then_an_incremental_one_picks_up_exactly_the_change(
    connector, upstream, tmp_path
):
    state, out = tmp_path / "state.json", tmp_path / "people.json"
    url = f"{connector.url}/people"
    first = pull(url, state, out, "--page-size", "7")
    live = upstream.live("people")
    assert sorted(e["_id"] for e in first if not e["_deleted"]) == sorted(live)
    assert {e["_id"] for e in first if e["_deleted"]} <= {
        r["id"] for r in upstream.records("people") if r["deleted"]
    }
    stored = json.loads(state.read_text())["pulls"][url]["since"]
    assert stored == first[-1]["_updated"]

    changed = upstream.api("PUT", "people/p-3", json={"name": "Ada Changed"})
    assert changed.status_code == 200
    second = pull(url, state, out, "--page-size", "7")
    assert [(e["_id"], e["name"]) for e in second] == [("p-3", "Ada Changed")]
    assert second[0]["_updated"] > stored

    assert pull(url, state, out, "--page-size", "7") == []  # nothing new: an empty array
    assert json.loads(state.read_text())["pulls"][url]["since"] == second[0]["_updated"]


def test_full_ignores_the_stored_since(connector, upstream, tmp_path):
    state, out = tmp_path / "state.json", tmp_path / "people.json"
    url = f"{connector.url}/people"
    everything = pull(url, state, out)
    assert pull(url, state, out) == []
    result = run("pull", url, "--state", str(state), "--out", str(out), "--full")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == everything
    assert "full run" in last_line(result)


def test_paging_over_a_tie_run_matches_one_big_page(connector, upstream, tmp_path):
    """1500 records share one updated_at: paging must neither lose nor repeat one."""
    seed_bulk(upstream, 1500, "2026-01-01T00:00:00.000000Z")
    url = f"{connector.url}/bulk"
    paged = pull(url, tmp_path / "a.json", tmp_path / "paged.json", "--page-size", "13")
    whole = pull(url, tmp_path / "b.json", tmp_path / "whole.json", "--page-size", "5000")
    assert len(paged) == 1500
    assert paged == whole


def test_progress_and_a_summary_go_to_stderr(connector, upstream, tmp_path):
    result = run(
        "pull",
        f"{connector.url}/people",
        "--state",
        str(tmp_path / "s.json"),
        "--page-size",
        "5",
        "--progress-every",
        "0",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("pull: 5 entities, 1 page, ")
    assert lines[1].startswith("pull: 10 entities, 2 pages, ")
    assert all("/s, " in line and "s elapsed" in line for line in lines)
    assert "full run, wrote stdout" in lines[-1]
    assert len(json.loads(result.stdout)) == 21  # the entities themselves on stdout


def test_a_broken_stream_fails_and_leaves_state_and_output_as_they_were(
    connector, upstream, tmp_path
):
    state, out = tmp_path / "state.json", tmp_path / "bulk.json"
    url = f"{connector.url}/bulk"
    seed_bulk(upstream, 50, "2026-01-01T00:00:00.000000Z", prefix="old")
    assert len(pull(url, state, out)) == 50
    state_before, out_before = state.read_bytes(), out.read_bytes()
    # 600 changes, then the upstream fails after two of its 100-record pages, so the
    # connector has started its answer and can only break it.
    seed_bulk(upstream, 600, "2026-01-02T00:00:00.000000Z")
    upstream.faults(fail_after_pages={"pages": 2, "status": 500})

    result = run("pull", url, "--state", str(state), "--out", str(out))

    assert result.returncode == 1
    assert "truncated" in last_line(result) and "/bulk" in last_line(result)
    assert state.read_bytes() == state_before
    assert out.read_bytes() == out_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bulk.json", "state.json"]


def test_a_broken_stream_on_stdout_leaves_text_that_does_not_parse(connector, upstream, tmp_path):
    seed_bulk(upstream, 600, "2026-01-02T00:00:00.000000Z")
    upstream.faults(fail_after_pages={"pages": 2, "status": 500})
    result = run("pull", f"{connector.url}/bulk", "--state", str(tmp_path / "s.json"))
    assert result.returncode == 1
    assert result.stdout.startswith("[")
    with pytest.raises(ValueError):
        json.loads(result.stdout)
    assert not (tmp_path / "s.json").exists()


def test_an_error_status_fails_with_one_line_naming_it(connector, tmp_path):
    result = run("pull", f"{connector.url}/no-such-things", "--state", str(tmp_path / "s.json"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "HTTP 404" in result.stderr and "no-such-things" in result.stderr
    assert result.stdout.strip() == "["  # begun, never closed: it does not parse


def test_a_connector_that_is_not_running_fails_clearly(tmp_path):
    result = run("pull", "http://127.0.0.1:9/people", "--state", str(tmp_path / "s.json"))
    assert result.returncode == 1
    assert "cannot connect" in result.stderr


# --- a fake server for what a correct connector never does --------------------------------


class FakeServer:
    """A real HTTP server on loopback that records requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answers to the next POSTs; then 200
        self.feed: list[dict[str, Any]] = []  # every GET gets this page, whatever it asks
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
                assert all(len(values) == 1 for values in query.values()), query
                fake.requests.append(
                    {
                        "method": self.command,
                        "params": {name: values[0] for name, values in query.items()},
                        "content_type": self.headers.get("Content-Type"),
                        "entities": json.loads(body) if body else None,
                    }
                )

            def answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.record()
                self.answer(200, fake.feed)

            def do_POST(self) -> None:
                self.record()
                status = fake.statuses.pop(0) if fake.statuses else 200
                if status == 200:
                    self.answer(200, {"accepted": len(fake.requests[-1]["entities"])})
                else:
                    self.answer(
                        status, {"error": f"fake {status}", "detail": "the fake sink says no"}
                    )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/things"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def entities_file(path: Path, count: int) -> list[dict[str, Any]]:
    entities = [{"_id": f"e-{n}", "name": f"Ærlig {n}", "_updated": n} for n in range(count)]
    path.write_text(json.dumps(entities, ensure_ascii=False), encoding="utf-8")
    return entities


def test_a_since_that_does_not_advance_fails_and_keeps_no_state(fake, tmp_path):
    fake.feed = [{"_id": "a", "_updated": "1"}, {"_id": "b", "_updated": "2"}]  # since ignored
    state = tmp_path / "s.json"
    result = run("pull", fake.url, "--state", str(state), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 1
    assert "since does not advance: asked since='2'" in last_line(result)
    assert [r["params"] for r in fake.requests] == [
        {"limit": "1000"},
        {"limit": "1000", "since": "2"},
    ]
    assert list(tmp_path.iterdir()) == []


# --- push against the fake sink -----------------------------------------------------------


def check_chain(posts: list[dict[str, Any]], *, full: bool) -> None:
    """One sequence_id, a new request_id each time, each naming the one before."""
    params = [p["params"] for p in posts]
    assert len({p["sequence_id"] for p in params}) == 1
    assert len({p["request_id"] for p in params}) == len(params)
    assert all(p["is_full"] == ("true" if full else "false") for p in params)
    assert "previous_request_id" not in params[0]
    for before, after in zip(params, params[1:], strict=False):
        assert after["previous_request_id"] == before["request_id"]
    assert all(p["content_type"] == "application/json; charset=UTF-8" for p in posts)


def test_an_incremental_push_sends_batches_then_an_empty_one(fake, tmp_path):
    entities = entities_file(tmp_path / "in.json", 150)
    result = run("push", fake.url, str(tmp_path / "in.json"))
    assert result.returncode == 0, result.stderr
    posts = fake.posts()
    assert [len(p["entities"]) for p in posts] == [100, 50, 0]
    assert [e for p in posts for e in p["entities"]] == entities
    check_chain(posts, full=False)
    assert not any("is_first" in p["params"] or "is_last" in p["params"] for p in posts)
    assert "150 entities in 3 requests" in last_line(result)


def test_a_full_push_runs_from_is_first_to_is_last_on_the_empty_batch(fake, tmp_path):
    entities_file(tmp_path / "in.json", 5)
    result = run("push", fake.url, str(tmp_path / "in.json"), "--full", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    posts = fake.posts()
    assert [len(p["entities"]) for p in posts] == [2, 2, 1, 0]
    check_chain(posts, full=True)
    assert [p["params"].get("is_first") for p in posts] == ["true", None, None, None]
    assert [p["params"].get("is_last") for p in posts] == [None, None, None, "true"]
    assert "full sync" in last_line(result)


def test_a_409_stops_the_push_at_once(fake, tmp_path):
    entities_file(tmp_path / "in.json", 5)
    fake.statuses = [200, 409]
    result = run("push", fake.url, str(tmp_path / "in.json"), "--full", "--batch-size", "2")
    assert result.returncode == 1
    line = last_line(result)
    assert "HTTP 409" in line and "restart the whole sync" in line and "batch 2" in line
    assert len(fake.posts()) == 2  # no retry and no further batch


def test_a_failed_batch_is_retried_as_the_same_request(fake, tmp_path):
    entities_file(tmp_path / "in.json", 3)
    fake.statuses = [200, 500, 503]
    result = run(
        "push",
        fake.url,
        str(tmp_path / "in.json"),
        "--full",
        "--batch-size",
        "2",
        "--retry-delay",
        "0",
    )
    assert result.returncode == 0, result.stderr
    posts = fake.posts()
    assert [len(p["entities"]) for p in posts] == [2, 1, 1, 1, 0]
    assert posts[1] == posts[2] == posts[3]  # same request_id: the sink can tell a retry
    check_chain([posts[0], posts[3], posts[4]], full=True)


def test_a_batch_that_keeps_failing_fails_the_push(fake, tmp_path):
    entities_file(tmp_path / "in.json", 3)
    fake.statuses = [500] * 10
    result = run(
        "push", fake.url, str(tmp_path / "in.json"), "--retries", "2", "--retry-delay", "0"
    )
    assert result.returncode == 1
    assert "failed 3 times" in last_line(result) and "HTTP 500" in last_line(result)
    assert "the fake sink says no" in last_line(result)
    assert len(fake.posts()) == 3


def test_a_push_progress_line_counts_against_the_total(fake, tmp_path):
    entities_file(tmp_path / "in.json", 30)
    result = run(
        "push", fake.url, str(tmp_path / "in.json"), "--batch-size", "10", "--progress-every", "0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith("push: 10 entities of 30, ")


# --- pull from the connector, change, push back through its sink --------------------------


def test_a_pulled_file_pushed_back_changes_exactly_what_was_edited(connector, upstream, tmp_path):
    entities = pull(f"{connector.url}/people", tmp_path / "s.json", tmp_path / "people.json")
    live = [e for e in entities if not e["_deleted"]]
    edited = [{**live[0], "name": "Edited"}, {**live[1], "_deleted": True}]
    (tmp_path / "edit.json").write_text(json.dumps(edited), encoding="utf-8")
    result = run("push", f"{connector.url}/people", str(tmp_path / "edit.json"))
    assert result.returncode == 0, result.stderr
    now = upstream.live("people")
    assert now[live[0]["_id"]]["name"] == "Edited"
    assert live[1]["_id"] not in now
    assert len(now) == len(live) - 1


def test_a_full_push_to_the_connector_deletes_what_it_did_not_send(
    upstream, connector_factory, tmp_path
):
    connector = connector_factory(FULL_SYNC_DELETE="true")
    keep = [{"_id": f"p-{n}", "name": f"Kept {n}"} for n in range(1, 11)]
    keep += [{"_id": f"new-{n:03d}", "name": f"New {n}"} for n in range(240)]
    (tmp_path / "keep.json").write_text(json.dumps(keep), encoding="utf-8")
    result = run("push", f"{connector.url}/people", str(tmp_path / "keep.json"), "--full")
    assert result.returncode == 0, result.stderr
    assert "250 entities in 4 requests" in last_line(result)  # 100, 100, 50, 0
    now = upstream.live("people")
    assert sorted(now) == sorted(e["_id"] for e in keep)  # p-11 to p-20 are gone
    assert all(now[e["_id"]]["name"] == e["name"] for e in keep)
