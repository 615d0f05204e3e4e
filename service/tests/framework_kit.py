"""The framework's test kit: the fixtures its own tests use, the same in every fork.

They start real servers on loopback: the demo Records API (``python -m
service.tools.demo_upstream``) and the reference adapter (``service/tools/reference.py``)
under gunicorn with the contract's command, once per test session; ``upstream`` resets the
demo's data and faults before each test that uses it. ``service/tests/conftest.py`` imports
them; a fork leaves this module alone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.tools.apps import REFERENCE_APP
from service.tools.servers import demo_upstream_command
from service.tools.servers import free_port
from service.tools.servers import start
from service.tools.servers import stop
from service.tools.servers import wait_until_up

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_TOKEN = "test-token-s3cr3t"
# The reference adapter's own settings, beside the upstream's URL, for the demo upstream:
# every connector started with the reference app gets them; a fork's wiring passes its
# connector's settings itself (``running_connector(..., app=APP, **settings)``).
DEMO_SETTINGS = {"UPSTREAM_TOKEN": UPSTREAM_TOKEN, "UPSTREAM_PAGE_SIZE": "100"}


def pytest_configure(config: pytest.Config) -> None:
    """The test image's PYTEST_ADDOPTS (Dockerfile, stage test) points a bare ``pytest``
    at this suite; once read, drop it, so that the pytest runs some tests start in
    directories of their own do not inherit options meant for this one."""
    os.environ.pop("PYTEST_ADDOPTS", None)


@pytest.fixture(autouse=True)
def secrets_of_this_test_only() -> Iterator[None]:
    """The secrets a test's settings and auth objects register (``masking``) are the
    process's: forgotten after the test, so one test's token (``"token"``, say) does not
    mask another test's text."""
    from service.framework import masking

    saved = masking.registered()
    yield
    masking.restore(saved)


class Upstream:
    """The demo Records API on loopback, with its admin switches."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.http = requests.Session()

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.url}/_admin/{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json() if response.content else None

    def reset(self, seed: bool = True) -> None:
        self._admin("POST", "reset", {"seed": seed})

    def insert(self, resource: str, records: list[dict[str, Any]]) -> None:
        self._admin("POST", f"records/{resource}", records)

    def create(self, resource: str) -> None:
        self._admin("POST", f"collections/{resource}")

    def records(self, resource: str) -> list[dict[str, Any]]:
        return self._admin("GET", f"records/{resource}")

    def live(self, resource: str) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.records(resource) if not r.get("deleted")}

    def faults(self, **faults: Any) -> None:
        self._admin("PUT", "faults", faults)

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def clock(self, **switches: Any) -> dict[str, Any]:
        """``tick=1`` (coarse), ``freeze=True`` (or a time), ``advance=2`` (seconds)."""
        return self._admin("PUT", "clock", switches)

    def thaw_clock(self) -> None:
        self._admin("DELETE", "clock")

    def stats(self) -> dict[str, int]:
        return self._admin("GET", "stats")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A Records API call as a client would make it."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.request(
            method, f"{self.url}/{path}", headers=headers, timeout=60, **kwargs
        )


def running_demo_upstream(directory: Path, *options: str, seconds: float = 60) -> Iterator[str]:
    """The demo Records API on a free port, for a fixture to yield its URL; stopped after."""
    port = free_port()
    log = directory / "upstream.log"
    process = start(demo_upstream_command(port, UPSTREAM_TOKEN, *options), log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_admin/stats", process, log, seconds=seconds)
        yield url
    finally:
        stop(process, seconds=15)


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    for url in running_demo_upstream(tmp_path_factory.mktemp("upstream"), seconds=20):
        yield Upstream(url, UPSTREAM_TOKEN)


@pytest.fixture
def upstream(upstream_server: Upstream) -> Iterator[Upstream]:
    upstream_server.reset(seed=True)
    yield upstream_server
    upstream_server.clear_faults()


def compose_runs_the_demo() -> bool:
    """docker-compose.yml runs the demo Records API as the connector's upstream service."""
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return "service.tools.demo_upstream" in compose["services"].get("upstream", {}).get(
        "command", []
    )


def reference_app(
    upstream: Upstream, state_dir: Path, adapter_class: Any = None, **settings: str
) -> Any:
    """The reference adapter (or ``adapter_class``, a subclass of it) as an app in this
    process, over the demo upstream: for tests that patch or count what runs inside."""
    from service.framework.app import build_app
    from service.tools.reference import Records
    from service.tools.reference import ReferenceSettings

    environ = {"UPSTREAM_URL": upstream.url, "UPSTREAM_TOKEN": upstream.token}
    environ.update(STATE_DIR=str(state_dir), **settings)
    return build_app(adapter_class or Records, ReferenceSettings, environ)


def connector_environment(
    upstream_url: str, port: int, state_dir: Path, *, app: str = REFERENCE_APP, **extra: str
) -> dict[str, str]:
    """The framework's settings for a connector under test, ``UPSTREAM_URL``, the demo's
    settings for the reference app (``DEMO_SETTINGS``), then ``extra``: nothing else of
    the environment this runs in that a connector reads."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UPSTREAM_", "SINK_", "FULL_SYNC_"))
    }
    env.update(
        {
            "UPSTREAM_URL": upstream_url,
            "PORT": str(port),
            "WORKERS": "2",
            "THREADS": "4",
            "UPSTREAM_FEED_RETRY_BUDGET": "10",
            "UPSTREAM_READ_TIMEOUT": "5",
            "STATE_DIR": str(state_dir),
            "LOG_LEVEL": "INFO",
        }
    )
    if app == REFERENCE_APP:
        env.update(DEMO_SETTINGS)
    env.update(extra)
    return env


class Connector:
    """A connector under gunicorn, started with the contract's command."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self.http = requests.Session()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(f"{self.url}/{path}", timeout=120, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(f"{self.url}/{path}", timeout=120, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_connector(
    upstream_url: str, directory: Path, *, app: str = REFERENCE_APP, **extra: str
) -> tuple[subprocess.Popen[bytes], Connector]:
    """A connector under gunicorn with the contract's command (``app``: the factory)."""
    port = free_port()
    log = directory / "connector.log"
    env = connector_environment(upstream_url, port, directory / "state", app=app, **extra)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    process = start([gunicorn, "-c", "service/gunicorn.conf.py", app], log=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, log, seconds=20)
    except BaseException:
        stop(process, seconds=15)
        raise
    return process, Connector(url, log)


@pytest.fixture(scope="session")
def connector_server(
    upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connector]:
    yield from running_connector(upstream_server.url, tmp_path_factory.mktemp("connector"))


def running_connector(
    upstream_url: str, directory: Path, *, app: str = REFERENCE_APP, **extra: str
) -> Iterator[Connector]:
    """A connector for a fixture to yield: started, and stopped when the fixture ends."""
    process, connector = start_connector(upstream_url, directory, app=app, **extra)
    try:
        yield connector
    finally:
        stop(process, seconds=15)


@pytest.fixture
def connector(connector_server: Connector, upstream: Upstream) -> Connector:
    """The reference connector, running, with the upstream reset to its demo data."""
    return connector_server


@pytest.fixture
def connector_factory(upstream_server: Upstream, tmp_path: Path) -> Iterator[Any]:
    """Start another connector with extra settings; stopped after the test."""
    processes = []

    def start(**extra: str) -> Connector:
        directory = tmp_path / f"connector-{len(processes)}"
        directory.mkdir()
        process, connector = start_connector(upstream_server.url, directory, **extra)
        processes.append(process)
        return connector

    yield start
    for process in processes:
        stop(process, seconds=15)


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """An answer's head read off a raw socket: the status, the headers (lower-case names),
    and the body bytes that came with the head; the socket stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head ended: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, rest
