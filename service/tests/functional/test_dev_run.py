"""The README's run command: the demo upstream and the connector, up at once, down together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_serves_the_demo_people_and_stops_both_on_sigterm(tmp_path):
    port, upstream_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UPSTREAM_", "SINK_", "FULL_SYNC_", "PYTEST_"))
    }
    env.update(
        PORT=str(port),
        DEMO_UPSTREAM_PORT=str(upstream_port),
        SERVICE_DEV_PYTHON=sys.executable,
        STATE_DIR=str(tmp_path / "state"),
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.tools.dev", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                response = requests.get(f"http://127.0.0.1:{port}/people", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert response.status_code == 200
        people = response.json()
        assert people and all(entity["_id"].startswith("p-") for entity in people)
        assert f"curl http://localhost:{port}/people" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    assert not listening(port), "the connector outlived the run command"
    assert not listening(upstream_port), "the demo upstream outlived the run command"
