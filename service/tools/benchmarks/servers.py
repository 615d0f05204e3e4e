"""What the benchmarks add to ``service.tools.servers``: CPU time and the demo upstream as
they run it (under gunicorn, with keep-alive)."""

from __future__ import annotations

import contextlib
import signal
import subprocess

import psutil

from service.tools import servers
from service.tools.servers import Server as _Server
from service.tools.servers import free_port

__all__ = ["Server", "demo_upstream_command", "free_port"]


def demo_upstream_command(port: int, token: str, *options: str) -> list[str]:
    """The demo Records API under gunicorn (keep-alive, as a real API would), unseeded."""
    return servers.demo_upstream_command(port, token, "--no-seed", "--server", "gunicorn", *options)


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

    def stop(self, seconds: float = 30) -> int:
        """SIGTERM; if gunicorn is still there after ``seconds``, kill it and its workers."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()
