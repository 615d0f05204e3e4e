"""The README's run command: the demo upstream and the connector, up at once, down together;
or, with UPSTREAM_URL set, the connector alone against that upstream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from service.tools.servers import free_port
from service.tools.servers import listening
from service.tools.servers import start
from service.tools.servers import wait_until

ROOT = Path(__file__).resolve().parents[3]


def dev_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UPSTREAM_", "SINK_", "FULL_SYNC_", "PYTEST_", "DEV_"))
    }
    env.update(SERVICE_DEV_PYTHON=sys.executable, STATE_DIR=str(tmp_path / "state"), **settings)
    return env


def start_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start([sys.executable, "-m", "service.tools.dev", "run"], log=log, env=env)


def wait_for_line(line: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """The run command prints its ready line after its own health check: wait for that
    line, not for the port (the connector may answer a moment before it is printed)."""
    wait_until(
        lambda: line in log.read_text(errors="replace"),
        what=f"printing {line!r}",
        seconds=60,
        process=process,
        log=log,
    )


def test_run_serves_the_demo_people_and_stops_both_on_sigterm(tmp_path):
    port, upstream_port = free_port(), free_port()
    env = dev_environment(tmp_path, PORT=str(port), DEMO_UPSTREAM_PORT=str(upstream_port))
    log = tmp_path / "run.log"
    process = start_run(env, log)
    try:
        wait_for_line(f"curl http://localhost:{port}/people", process, log)
        response = requests.get(f"http://127.0.0.1:{port}/people", timeout=5)
        assert response.status_code == 200
        people = response.json()
        assert people and all(entity["_id"].startswith("p-") for entity in people)
        assert f"curl http://localhost:{port}/people" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    assert not listening(port), "the connector outlived the run command"
    assert not listening(upstream_port), "the demo upstream outlived the run command"


def test_run_with_upstream_url_starts_no_demo_and_shows_dev_collection(tmp_path, upstream):
    port, upstream_port = free_port(), free_port()
    env = dev_environment(
        tmp_path,
        PORT=str(port),
        DEMO_UPSTREAM_PORT=str(upstream_port),
        UPSTREAM_URL=upstream.url,
        UPSTREAM_TOKEN=upstream.token,
        DEV_COLLECTION="companies",
    )
    log = tmp_path / "run.log"
    process = start_run(env, log)
    try:
        wait_for_line(f"curl http://localhost:{port}/companies", process, log)
        response = requests.get(f"http://127.0.0.1:{port}/companies", timeout=5)
        assert response.status_code == 200, response.text
        assert response.json() and all(e["_id"].startswith("c-") for e in response.json())
        assert not listening(upstream_port), "a demo upstream started beside UPSTREAM_URL"
        assert f"upstream: {upstream.url}" in log.read_text()
        assert "Ctrl-C stops it" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    assert not listening(port), "the connector outlived the run command"
    assert requests.get(f"{upstream.url}/_admin/stats", timeout=5).ok  # not ours to stop
