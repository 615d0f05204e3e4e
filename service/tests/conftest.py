"""Shared fixtures: the app from ``create_app``, a real demo upstream, a real connector.

The functional fixtures start real servers on loopback: the demo Records API
(``python -m service.tools.demo_upstream``) and the connector under gunicorn with the
contract's command. Both are started once per test session; ``upstream`` resets the
demo's data and faults before each test that uses it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.connector import create_app

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_TOKEN = "test-token-s3cr3t"
GUNICORN_COMMAND = [
    "gunicorn",
    "-c",
    "service/gunicorn.conf.py",
    "service.connector:create_app()",
]


def pytest_configure(config: pytest.Config) -> None:
    """The test image's PYTEST_ADDOPTS (Dockerfile, stage test) points a bare ``pytest``
    at this suite; once read, drop it, so that the pytest runs some tests start in
    directories of their own do not inherit options meant for this one."""
    os.environ.pop("PYTEST_ADDOPTS", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], log: Path | None = None, seconds: float = 20
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            shown = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"server exited with {process.returncode}: {shown}")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except (requests.ConnectionError, requests.Timeout):  # still starting, or busy
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not come up in {seconds}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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

    def stats(self) -> dict[str, int]:
        return self._admin("GET", "stats")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A Records API call as a client would make it."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.request(
            method, f"{self.url}/{path}", headers=headers, timeout=60, **kwargs
        )


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.tools.demo_upstream",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--token",
                UPSTREAM_TOKEN,
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_admin/stats", process, log)
        yield Upstream(url, UPSTREAM_TOKEN)
    finally:
        stop(process)


@pytest.fixture
def upstream(upstream_server: Upstream) -> Iterator[Upstream]:
    upstream_server.reset(seed=True)
    yield upstream_server
    upstream_server.clear_faults()


def connector_environment(
    upstream_url: str, port: int, state_dir: Path, **extra: str
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UPSTREAM_", "SINK_", "FULL_SYNC_"))
    }
    env.update(
        {
            "UPSTREAM_URL": upstream_url,
            "UPSTREAM_TOKEN": UPSTREAM_TOKEN,
            "PORT": str(port),
            "WORKERS": "2",
            "THREADS": "4",
            "UPSTREAM_FEED_RETRY_BUDGET": "10",
            "UPSTREAM_READ_TIMEOUT": "5",
            "STATE_DIR": str(state_dir),
            "LOG_LEVEL": "INFO",
            "UPSTREAM_PAGE_SIZE": "100",
        }
    )
    env.update(extra)
    return env


class Connector:
    """The connector under gunicorn, started with the contract's command."""

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
    upstream_url: str, directory: Path, **extra: str
) -> tuple[subprocess.Popen[bytes], Connector]:
    port = free_port()
    log = directory / "connector.log"
    env = connector_environment(upstream_url, port, directory / "state", **extra)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [gunicorn, *GUNICORN_COMMAND[1:]],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, log)
    except BaseException:
        stop(process)
        raise
    return process, Connector(url, log)


@pytest.fixture(scope="session")
def connector_server(
    upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connector]:
    process, connector = start_connector(upstream_server.url, tmp_path_factory.mktemp("connector"))
    try:
        yield connector
    finally:
        stop(process)


@pytest.fixture
def connector(connector_server: Connector, upstream: Upstream) -> Connector:
    """The running connector, with the upstream reset to its demo data."""
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
        stop(process)


@pytest.fixture
def app(upstream_server: Upstream, tmp_path: Path) -> Any:
    """The Flask app from the factory, in process, for pytest-flask's ``client``."""
    app = create_app(
        {
            "UPSTREAM_URL": upstream_server.url,
            "UPSTREAM_TOKEN": UPSTREAM_TOKEN,
            "UPSTREAM_FEED_RETRY_BUDGET": "4",
            "STATE_DIR": str(tmp_path / "state"),
        }
    )
    app.config["TESTING"] = True
    return app


# --- The conformance suite's fixtures (service/tests/conformance/) -------------------------
# The suite is the same in every fork; these fixtures are what it tests. A fork points them
# at its own connector and upstream, and names any check it skips, with the reason.

CONFORMANCE_SKIPS: dict[str, str] = {}
CONFORMANCE_COLLECTION = "conformance"


class ConformanceConnector:
    """The running connector and the collection the suite reads and writes."""

    def __init__(
        self, url: str, collection: str, auth: Any = None, transform: str | None = None
    ) -> None:
        self.url = url
        self.collection = collection
        self.auth = auth
        self.transform = transform


class RecordsConformanceUpstream:
    """The demo Records API as the conformance suite seeds, breaks and inspects it."""

    page_size = 100  # UPSTREAM_PAGE_SIZE in connector_environment()

    def __init__(self, upstream: Upstream, collection: str) -> None:
        self.upstream = upstream
        self.collection = collection
        upstream.create(collection)

    def seed(self, count: int, tie: int) -> None:
        before = (count - tie) // 2
        times = (
            [f"2025-12-31T23:59:59.{n:06d}Z" for n in range(before)]
            + ["2026-01-01T00:00:00.000000Z"] * tie
            + [f"2026-01-01T00:00:01.{n:06d}Z" for n in range(count - tie - before)]
        )
        # ids out of time order, so the feed's order is (time, id) and not insertion order
        self.upstream.insert(
            self.collection,
            [
                {"id": f"rec-{(n * 7919) % count:05d}", "updated_at": at, "n": n}
                for n, at in enumerate(times)
            ],
        )

    def delete(self, entity_id: str) -> None:
        from service.framework.upstream import segment

        response = self.upstream.api("DELETE", f"{self.collection}/{segment(entity_id)}")
        assert response.status_code == 204, response.text

    def break_before_first_page(self) -> None:
        self.upstream.faults(storm={"status": 500, "count": 1_000_000, "retry_after": None})

    def break_after_first_page(self) -> None:
        self.upstream.faults(fail_after_pages={"pages": 1, "status": 500, "mode": "status"})

    def heal(self) -> None:
        self.upstream.clear_faults()

    def entity(self, number: int) -> dict[str, Any]:
        return {
            "_id": f"conformance-{number}",
            "name": f"Entity {number}",
            "n": number,
            "tags": ["a", "b"],
            "address": {"city": "Oslo"},
        }

    def written(self) -> dict[str, dict[str, Any]]:
        return {
            record_id: {k: v for k, v in record.items() if k != "updated_at"}
            for record_id, record in self.upstream.live(self.collection).items()
        }

    def writes(self) -> int:
        stats = self.upstream.stats()
        return stats.get("PUT", 0) + stats.get("DELETE", 0)


@pytest.fixture
def conformance_connector(connector: Connector) -> ConformanceConnector:
    return ConformanceConnector(
        connector.url, CONFORMANCE_COLLECTION, transform=f"{CONFORMANCE_COLLECTION}-record"
    )


@pytest.fixture
def conformance_upstream(upstream: Upstream) -> RecordsConformanceUpstream:
    return RecordsConformanceUpstream(upstream, CONFORMANCE_COLLECTION)


@pytest.fixture
def conformance_skips() -> dict[str, str]:
    return CONFORMANCE_SKIPS
