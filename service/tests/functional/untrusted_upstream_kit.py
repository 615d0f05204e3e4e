"""What the tests of an untrusted upstream share (``test_untrusted_upstream_*.py``).

Each runs the real server, the reference connector under gunicorn, in front of the hostile
upstream (``service/tools/hostile_upstream``, docs/hostile-upstream.md), and looks at both
ends: what Sesam, the connector's HTTP client, gets, and what the upstream saw. Here: the
connector with its gunicorn processes and its log (``HostileConnector``), ``/health``
polled while a test runs (``HealthWatch``), a feed read as Sesam reads it (``read_feed``),
and the peak memory of the connector's processes (``PeakRss``).

Every wait is for a condition with a deadline; nothing is shared on disk or by port, so the
modules run in parallel (each pytest-xdist worker has its own hostile upstream).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

# The hostile upstream's kit is these tests' pytest plugin too: rewritten, it is imported here
# first (before a test module names it in ``pytest_plugins``).
pytest.register_assert_rewrite("service.tests.hostile_kit")

from service.tests.framework_kit import Connector  # noqa: E402
from service.tests.framework_kit import start_connector  # noqa: E402
from service.tests.hostile_kit import HOSTILE_TOKEN  # noqa: E402
from service.tests.hostile_kit import HostileUpstream  # noqa: E402
from service.tools.apps import REFERENCE_APP  # noqa: E402
from service.tools.servers import stop  # noqa: E402
from service.tools.servers import wait_until  # noqa: E402

MB = 1024 * 1024
# The connector's own defaults for its processes ("" reads as unset: one worker, 32
# threads), with the hostile upstream's token; a test adds the bounds it tightens.
HOSTILE_SETTINGS = {"UPSTREAM_TOKEN": HOSTILE_TOKEN, "WORKERS": "", "THREADS": ""}
# /health must answer within this, while a test's hostile answers are being handled: loose
# for a busy two-core machine, tight next to "never" (what issue 18 measured).
HEALTH_SECONDS = 5.0
ANSWERED_500 = re.compile(r'" 500 \d')  # gunicorn's access log: '"GET /people HTTP/1.1" 500 123'


class HostileConnector(Connector):
    """The connector under gunicorn in front of the hostile upstream, with its processes."""

    def __init__(self, process: subprocess.Popen[bytes], connector: Connector) -> None:
        super().__init__(connector.url, connector.log)
        self.process = process

    def get(self, path: str, *, timeout: float = 60, **kwargs: Any) -> requests.Response:
        return self.http.get(f"{self.url}/{path}", timeout=timeout, **kwargs)

    def post(self, path: str, *, timeout: float = 60, **kwargs: Any) -> requests.Response:
        return self.http.post(f"{self.url}/{path}", timeout=timeout, **kwargs)

    def processes(self) -> list[psutil.Process]:
        """The gunicorn master and its workers."""
        master = psutil.Process(self.process.pid)
        return [master, *master.children(recursive=True)]

    def mark(self) -> int:
        """Where the log ends now: ``log_after(mark)`` is what a test wrote."""
        return len(self.log_text())

    def log_after(self, mark: int) -> str:
        return self.log_text()[mark:]

    def wait_for_log(self, text: str, *, after: int = 0, seconds: float = 30) -> str:
        """The log after ``after``, once it holds ``text``."""

        def holds() -> str | None:
            log = self.log_after(after)
            return log if text in log else None

        return wait_until(holds, what=f"{text!r} in the connector's log", seconds=seconds)

    def health(self) -> None:
        """``/health`` answers 200, over a new connection, within HEALTH_SECONDS."""
        started = time.monotonic()
        response = requests.get(f"{self.url}/health", timeout=HEALTH_SECONDS)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < HEALTH_SECONDS


def start_over_hostile(
    hostile: HostileUpstream, directory: Path, *, app: str = REFERENCE_APP, **settings: str
) -> HostileConnector:
    """A connector in front of ``hostile`` (``UPSTREAM_URL``, its token, the default
    workers and threads), with ``settings`` on top; the caller stops its process."""
    directory.mkdir(parents=True, exist_ok=True)
    process, connector = start_connector(
        hostile.url, directory, app=app, **{**HOSTILE_SETTINGS, **settings}
    )
    return HostileConnector(process, connector)


@contextlib.contextmanager
def serving(
    hostile: HostileUpstream, directory: Path, *, app: str = REFERENCE_APP, **settings: str
) -> Iterator[HostileConnector]:
    """``start_over_hostile``, stopped at the end of the block; its log must then hold no
    500 (an unexpected error, logged with its traceback) and no token."""
    connector = start_over_hostile(hostile, directory, app=app, **settings)
    try:
        yield connector
    finally:
        quit_quickly(connector)
    log = connector.log_text()
    assert "unhandled error" not in log and not ANSWERED_500.search(log), log[-3000:]
    assert HOSTILE_TOKEN not in log


def quit_quickly(connector: HostileConnector) -> None:
    """Stop gunicorn with SIGINT, its quick shutdown: SIGTERM's graceful one waits about
    2.5 s for the worker, and these tests leave nothing for it to finish."""
    connector.http.close()
    if connector.process.poll() is None:
        connector.process.send_signal(signal.SIGINT)
    stop(connector.process, seconds=15)


class HealthWatch:
    """``/health`` asked every 0.1 s over a new connection while the block runs, and once
    after it: each must answer 200 within HEALTH_SECONDS."""

    def __init__(self, connector: HostileConnector) -> None:
        self.connector = connector
        self.answers: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, name="health-watch", daemon=True)

    def _ask(self) -> None:
        while True:
            started = time.monotonic()
            try:
                got: int | str = requests.get(
                    f"{self.connector.url}/health", timeout=HEALTH_SECONDS
                ).status_code
            except requests.RequestException as error:
                got = type(error).__name__
            self.answers.append((time.monotonic() - started, got))
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if kind is not None:
            return  # the test's own failure says more
        assert self.answers, "/health was never asked"
        bad = [(round(s, 2), got) for s, got in self.answers if got != 200 or s > HEALTH_SECONDS]
        assert not bad, f"/health while the upstream misbehaved: {bad}"
        self.connector.health()


@dataclasses.dataclass
class Feed:
    """A feed as Sesam reads it: the status, the headers, every byte of the body that came,
    and whether the body ended as HTTP says a body ends (its last chunk)."""

    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def broken(self) -> bool:
        """Sesam cannot take it for an answer: cut short and no JSON (no closing ``]``)."""
        try:
            json.loads(self.body)
        except ValueError:
            return not self.complete
        return False


def read_feed(
    url: str, path: str, *, params: dict[str, str] | None = None, timeout: float = 60
) -> Feed:
    """``GET url/path`` read to its end, or to where the connection broke."""
    started = time.monotonic()
    body = bytearray()
    complete = True
    with requests.get(f"{url}/{path}", params=params, stream=True, timeout=timeout) as response:
        try:
            for piece in response.iter_content(65536):
                body += piece
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            complete = False
    return Feed(
        response.status_code,
        dict(response.headers),
        bytes(body),
        complete,
        time.monotonic() - started,
    )


def requests_to(hostile: HostileUpstream, method: str, listener: str = "main") -> int:
    """How many ``method`` requests ``listener`` received since the stats were cleared."""
    return int(hostile.stats()["requests"][listener].get(method, 0))


def entries(hostile: HostileUpstream, method: str | None = None, **where: str) -> list[Any]:
    """The tool's log entries on either listener, of ``method`` when given."""
    return [
        entry
        for entry in hostile.log()
        if (method is None or entry["method"] == method)
        and all(entry[key] == value for key, value in where.items())
    ]


def closed(hostile: HostileUpstream, action: str, count: int) -> list[dict[str, Any]]:
    """The connections a rule of ``action`` answered on main, once ``count`` of them have
    ended and none is open."""

    def ended(stats: dict[str, Any]) -> list[dict[str, Any]] | None:
        found = [c for c in stats["connections"] if c["action"] == action]
        open_ = [c for c in stats["open_connections"] if c["action"] == action]
        return found if len(found) >= count and not open_ else None

    return hostile.wait_for(ended, f"{count} connections answered by {action} closed")
