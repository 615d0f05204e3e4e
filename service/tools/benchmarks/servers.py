"""Child processes serving HTTP on loopback, for the benchmarks: start, measure, stop."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_upstream_command(port: int, token: str, *options: str) -> list[str]:
    """The demo Records API under gunicorn (keep-alive, as a real API would)."""
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
        "--no-seed",
        "--server",
        "gunicorn",
        *options,
    ]


class Server:
    """A child process serving HTTP on loopback, stopped with SIGTERM."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], port: int, health: str, log: Path
    ) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self.wait_until_up(f"{self.url}/{health}")
        except BaseException:
            self.stop()
            raise

    def wait_until_up(self, url: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not come up at {url} in {seconds:.0f}s")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def processes(self) -> list[psutil.Process]:
        """The process and all its children (gunicorn's master and workers)."""
        try:
            master = psutil.Process(self.process.pid)
            return [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children: less shaken than wall time."""
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def kill(self) -> None:
        for process in reversed(self.processes()):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
