"""The README's run command: the demo upstream and the connector, up at once, down together;
or, with UPSTREAM_URL set, the connector alone against that upstream.

What ``run`` does around a connector is tested with the reference adapter (``run --app``),
the same in every fork; the README's command itself runs this repository's connector,
which the demo serves only if it reads the Records API's settings: a fork to another
upstream gets one line that names the settings to set.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from service.framework.settings import variables
from service.tools.apps import REFERENCE_APP
from service.tools.apps import connector_factory
from service.tools.apps import factory
from service.tools.apps import reads_the_demo
from service.tools.dev import default_collection
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


TICKETS_APP = "service.tools.examples.tickets:create_app()"  # another upstream's settings


def run_command(app: str | None) -> list[str]:
    """``dev run`` for ``app``; None: the README's command, this repository's connector."""
    return [sys.executable, "-m", "service.tools.dev", "run", *(["--app", app] if app else [])]


def start_run(
    env: dict[str, str], log: Path, app: str | None = REFERENCE_APP
) -> subprocess.Popen[bytes]:
    return start(run_command(app), log=log, env=env)


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
    # people, a demo collection, whatever .env.example shows (a fork shows its own).
    env = dev_environment(
        tmp_path, PORT=str(port), DEMO_UPSTREAM_PORT=str(upstream_port), DEV_COLLECTION="people"
    )
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


def required(app: str | None) -> list[str]:
    settings = (factory(app) if app else connector_factory()).settings_class
    return [v.name for v in variables(settings) if v.default is None]


def test_run_of_a_connector_to_another_upstream_names_the_settings_to_set(tmp_path):
    """Without UPSTREAM_URL, a connector that does not read the Records API's settings gets
    no demo upstream (it could not read it), but one line naming what it needs."""
    upstream_port = free_port()
    env = dev_environment(tmp_path, PORT=str(free_port()), DEMO_UPSTREAM_PORT=str(upstream_port))
    result = subprocess.run(
        run_command(TICKETS_APP), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    names = ", ".join(required(TICKETS_APP))
    assert result.stderr.strip() == (
        "dev run: service.tools.examples.tickets does not read the demo Records API, so set "
        f"its upstream's settings: {names} (docs/connector.md)"
    )
    assert result.stdout == ""
    assert not listening(upstream_port)


def test_the_readmes_run_command_serves_the_demo_or_names_the_settings_to_set(tmp_path):
    """``python3 -m service.tools.dev run`` as the README has it, for this repository's
    connector: over the demo when the connector reads it (the reference), else one line."""
    port, upstream_port = free_port(), free_port()
    env = dev_environment(tmp_path, PORT=str(port), DEMO_UPSTREAM_PORT=str(upstream_port))
    if not reads_the_demo(connector_factory().settings_class):
        result = subprocess.run(run_command(None), env=env, capture_output=True, timeout=60)
        assert result.returncode != 0
        assert ", ".join(required(None)).encode() in result.stderr, result.stderr
        assert not listening(upstream_port) and not listening(port)
        return
    log = tmp_path / "run.log"
    process = start_run(env, log, app=None)
    collection = default_collection()
    try:
        wait_for_line(f"curl http://localhost:{port}/{collection}", process, log)
        response = requests.get(f"http://127.0.0.1:{port}/{collection}", timeout=5)
        assert response.status_code == 200, response.text
        assert response.json() and all("_id" in entity for entity in response.json())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    assert not listening(port), "the connector outlived the run command"
    assert not listening(upstream_port), "the demo upstream outlived the run command"


# --- what dev says and how it fails (issue 21: a newcomer's first hour) --------------------


def dev(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.tools.dev", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dev_without_a_command_lists_every_command_it_takes(tmp_path):
    result = dev(env=dev_environment(tmp_path))
    assert result.returncode == 2
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["run", "run", "test", "setup"], result.stdout
    for name in ("PORT", "DEMO_UPSTREAM_PORT", "DEV_HOST", "SERVICE_DEV_PYTHON", "UPSTREAM_URL"):
        assert name in result.stdout, name


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on, on every address (as a stray server would)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))  # as a stray server often does
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("which", ["PORT", "DEMO_UPSTREAM_PORT"])
def test_run_stops_with_a_non_zero_status_and_one_line_when_a_port_is_taken(
    tmp_path, taken_port, which
):
    ports = {"PORT": str(free_port()), "DEMO_UPSTREAM_PORT": str(free_port())}
    ports[which] = str(taken_port)
    result = dev("run", "--app", REFERENCE_APP, env=dev_environment(tmp_path, **ports))
    name = {"PORT": "the connector", "DEMO_UPSTREAM_PORT": "the demo Records API"}[which]
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"dev run: port {taken_port} is taken, so {name} cannot listen on "
        f"127.0.0.1:{taken_port}: stop what listens there, or set {which} to a free port"
    )
    assert "ready:" not in result.stdout
    for port in ports.values():
        if port != str(taken_port):
            assert not listening(int(port)), "a server outlived the failed run"


def listeners(port: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def test_run_listens_on_loopback_only_and_fails_when_a_server_dies(tmp_path):
    """No auth in a dev run, so nothing but this machine may reach it; and a server that
    stops under it ends the run with a non-zero status, naming which one stopped."""
    port, upstream_port = free_port(), free_port()
    env = dev_environment(tmp_path, PORT=str(port), DEMO_UPSTREAM_PORT=str(upstream_port))
    log = tmp_path / "run.log"
    process = start_run(env, log)
    try:
        wait_for_line(f"curl http://localhost:{port}/", process, log)
        assert listeners(port) == {"127.0.0.1"}
        assert listeners(upstream_port) == {"127.0.0.1"}
        demo = next(
            child
            for child in psutil.Process(process.pid).children()
            if "service.tools.demo_upstream" in child.cmdline()
        )
        demo.kill()
        assert process.wait(timeout=40) != 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=40)
    assert "dev run: the demo Records API stopped with status -9" in log.read_text()
    assert not listening(port), "the connector outlived the run command"


def test_the_first_set_up_says_what_it_does_while_it_installs(tmp_path):
    """``dev setup`` (and the first ``run`` or ``test``) in a fresh copy of the tool, with
    requirements files that install nothing: it names each step as it starts it."""
    copy = tmp_path / "repo"
    (copy / "service" / "tools").mkdir(parents=True)
    tools = ("dev.py", "servers.py", "ownership.py")
    for name in ("__init__.py", "tools/__init__.py", *(f"tools/{tool}" for tool in tools)):
        shutil.copy(ROOT / "service" / name, copy / "service" / name)
    for name in ("requirements.txt", "requirements-dev.txt"):
        (copy / "service" / name).write_text("# nothing to install\n")
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_DEV_PYTHON"}
    env["PIP_NO_INDEX"] = "1"  # pip is as it came: no registry needed
    command = [sys.executable, "-m", "service.tools.dev", "setup"]
    first = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    steps = [line for line in first.stdout.splitlines() if line.startswith("dev setup: ")]
    assert steps[:4] == [
        "dev setup: .venv/ with the pinned requirements (the first time takes a minute or so)",
        "dev setup: creating .venv/",
        "dev setup: upgrading pip",
        "dev setup: installing service/requirements-dev.txt",
    ]
    assert re.fullmatch(r"dev setup: \.venv/ ready in \d+s", steps[-1]), steps
    again = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "", "a second set-up redid the work"
