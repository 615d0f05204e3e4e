"""What the benchmarks add to ``service.tools.servers``: CPU time, the demo upstream as
they run it (under gunicorn, with keep-alive), the competitors started in front of it,
what every naive competitor starts with, and the machine as the reports name it."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import psutil

from service.tools import servers
from service.tools.apps import REFERENCE_APP  # never a fork's module
from service.tools.servers import Server as _Server
from service.tools.servers import free_port

if TYPE_CHECKING:
    import flask

__all__ = [
    "REFERENCE_APP",
    "RESOURCE",
    "Server",
    "TOKEN",
    "demo_upstream_command",
    "free_port",
    "machine",
    "naive_app",
    "start_app",
    "start_demo_upstream",
    "stop_all",
]

TOKEN = "bench-token"  # the demo upstream's, given to every competitor as UPSTREAM_TOKEN
RESOURCE = "bench"  # the one collection every benchmark reads, writes or looks up


def demo_upstream_command(port: int, token: str, *options: str) -> list[str]:
    """The demo Records API under gunicorn (keep-alive, as a real API would), unseeded."""
    return servers.demo_upstream_command(port, token, "--no-seed", "--server", "gunicorn", *options)


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """Their user and system CPU time, summed; a process gone meanwhile counts nothing."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class Server(_Server):
    """A server whose CPU time and memory the benchmarks measure."""

    def processes(self) -> list[psutil.Process]:
        """The process and all its children (gunicorn's master and workers)."""
        try:
            master = psutil.Process(self.process.pid)
            return [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children: less shaken than wall time."""
        return _cpu_seconds(self.processes())

    def worker_cpu_seconds(self) -> float:
        """CPU time of gunicorn's workers, the master's left out."""
        return _cpu_seconds(self.processes()[1:])

    def kill(self) -> None:
        for process in reversed(self.processes()):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def stop(self, seconds: float = 30) -> int:
        """SIGTERM; if gunicorn is still there after ``seconds``, kill it and its workers."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()


def start_demo_upstream(directory: Path, *options: str, seconds: float = 60) -> Server:
    """The demo Records API under gunicorn (``demo_upstream_command``), its log in
    ``directory``; ``seconds`` to wait for it (pre-encoding a large collection takes a
    while)."""
    port = free_port()
    command = demo_upstream_command(port, TOKEN, *options)
    log = directory / "upstream.log"
    return Server(
        "upstream", command, dict(os.environ), port, "_admin/health", log, seconds=seconds
    )


def contract_environment(
    upstream_url: str, token: str, port: int, state_dir: Path
) -> dict[str, str]:
    """The contract's variables, every tuning variable at its default: this process's own
    ``UPSTREAM_*``, ``SINK_*``, ``FULL_SYNC_*`` and tuning variables are left out."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UPSTREAM_", "SINK_", "FULL_SYNC_"))
        and key not in ("PORT", "WORKERS", "THREADS", "LOG_LEVEL", "STATE_DIR")
    }
    env.update(
        {
            "UPSTREAM_URL": upstream_url,
            "UPSTREAM_TOKEN": token,
            "PORT": str(port),
            "STATE_DIR": str(state_dir),  # not the shared default in /tmp
        }
    )
    return env


def start_app(name: str, app: str, upstream_url: str, directory: Path, **settings: str) -> Server:
    """A competitor under gunicorn with the contract's command and gunicorn settings
    (``app``: ``module:factory()``), its state and log in ``directory``; ``settings``
    are added to the contract's variables."""
    port = free_port()
    env = contract_environment(upstream_url, TOKEN, port, directory / f"{name}-state")
    env.update(settings)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [gunicorn, "-c", "service/gunicorn.conf.py", app]
    return Server(name, command, env, port, "health", directory / f"{name}-{port}.log")


def machine() -> str:
    """The system, its CPUs and this Python, for a report's head (the load is the caller's:
    when to read it differs)."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def naive_app(import_name: str) -> tuple[flask.Flask, str, dict[str, str]]:
    """What a naive competitor's factory starts with: a Flask app that answers ``/health``
    (what ``start_app`` waits for), the upstream's URL and its ``Authorization`` header,
    both from the contract's variables."""
    import flask

    app = flask.Flask(import_name)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    upstream = os.environ["UPSTREAM_URL"].rstrip("/")
    headers = {"Authorization": f"Bearer {os.environ['UPSTREAM_TOKEN']}"}
    return app, upstream, headers


def stop_all(servers: dict[str, Server]) -> None:
    for server in servers.values():
        server.stop()
