"""Child processes serving HTTP on loopback: a free port, start, wait, stop (stdlib only).

One place for what the test fixtures, the benchmarks, the dev runner and the tests of the
artefacts all do: start a server as a child process with its output in a log file, wait
until it answers, stop it with SIGTERM (then SIGKILL). Every wait is for a condition with
a deadline, and fails at once, with the log's tail, when the process dies first.

Standard library only: ``python3 -m service.tools.dev run`` uses it on the system Python,
before ``.venv`` exists.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


class ServerError(RuntimeError):
    """A server that exited, or a condition that did not hold in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the OS picks it).

    Between this answer and the server's bind, another process may be handed the same
    port. Under pytest-xdist (``PYTEST_XDIST_WORKER``, ``PYTEST_XDIST_WORKER_COUNT``, which
    the servers a test starts inherit), each worker takes only ports of its own share, so
    that two workers of one run never race for one port: the port's half (bind() is handed
    odd ports first, so halving keeps every share the same size) modulo the worker count.
    """
    worker, count = _worker_share()
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if (port // 2) % count == worker:
            return port
    raise ServerError(f"no free port in worker {worker}'s share of {count} after 1000 tries")


def _worker_share() -> tuple[int, int]:
    """This pytest-xdist worker's index and the number of workers; (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if name.startswith("gw") and name[2:].isdigit() and count.isdigit() and int(count) > 0:
        return int(name[2:]) % int(count), int(count)
    return 0, 1


def listening(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts connections on ``port``."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def status_of(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):  # refused, reset, timed out, or a half-written answer
        return None


def log_tail(log: Path | None, size: int = 3000) -> str:
    if log is None:
        return ""
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-size:]
    except OSError:
        return ""


def wait_until(
    condition: Callable[[], T],
    *,
    what: str,
    seconds: float = 30,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until it answers something true, and answer that.

    Raises ServerError naming ``what`` (and showing the log's tail) when ``seconds`` pass
    first, or as soon as ``process`` exits: a dead server never comes up.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise ServerError(
                f"exited with {process.returncode} before {what}: {log_tail(log)}".rstrip()
            )
        if time.monotonic() >= deadline:
            raise ServerError(f"not {what} within {seconds:g}s: {log_tail(log)}".rstrip())
        time.sleep(interval)


def wait_until_up(
    url: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    seconds: float = 30,
    *,
    ok: Callable[[int], bool] = lambda status: status < 500,
) -> int:
    """Wait until ``url`` answers a status that ``ok`` accepts (by default any below 500:
    the server is up, whatever it thinks of the request); answers that status."""

    def answered() -> int | None:
        status = status_of(url)
        return status if status is not None and ok(status) else None

    return wait_until(
        answered,
        what=f"answering at {url}",
        seconds=seconds,
        process=process,
        log=log,
    )


def start(
    command: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """``command`` as a child process, stdout and stderr into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes], seconds: float = 30) -> int:
    """SIGTERM, then SIGKILL after ``seconds``; answers the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class Server:
    """A child process serving HTTP on loopback, up once constructed, stopped with SIGTERM.

    ``health`` is the path polled until it answers below 500. Use it as a context manager,
    or call ``stop()``.
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None,
        port: int,
        health: str,
        log: Path,
        *,
        cwd: Path = ROOT,
        seconds: float = 30,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.log = log
        self.process = start(command, log=log, env=env, cwd=cwd)
        try:
            wait_until_up(f"{self.url}/{health.lstrip('/')}", self.process, log, seconds)
        except ServerError as error:
            self.stop()
            raise ServerError(f"{name} {error}") from None
        except BaseException:
            self.stop()
            raise

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, seconds: float = 30) -> int:
        return stop(self.process, seconds)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def demo_upstream_command(port: int, token: str, *options: str) -> list[str]:
    """The demo Records API on loopback at ``port``, accepting ``token``, with more
    ``options`` (``--no-seed``, ``--server gunicorn``, ``--synthetic ...``)."""
    return [
        sys.executable,
        "-m",
        "service.tools.demo_upstream",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--token",
        token,
        *options,
    ]
