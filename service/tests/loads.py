"""Loads the framework's tests put on a running connector, and what it costs: clients
that read slowly or not at all, bodies of the largest size, /health asked throughout; the
memory of the gunicorn master and its workers (RSS, PSS, a peak sampled while a block
runs). Shared by the memory tests on loopback (test_slow_clients.py, the untrusted
upstream's tests) and in a container (test_docker_engine.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests

MB = 1024 * 1024


def processes(url: str) -> list[psutil.Process]:
    """The gunicorn master serving ``url`` and its workers."""
    port = int(url.rsplit(":", 1)[1])
    for connection in psutil.net_connections("tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == "LISTEN":
            master = psutil.Process(connection.pid)
            if master.parent() and "gunicorn" in " ".join(master.parent().cmdline()):
                master = master.parent()
            return [master, *master.children(recursive=True)]
    raise AssertionError(f"nothing listens at {url}")


def rss(group: list[psutil.Process]) -> int:
    total = 0
    for process in group:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def pss(group: list[psutil.Process]) -> int:
    """What the container is charged for: each page once, shared ones split (PSS)."""
    total = 0
    for process in group:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_full_info().pss
    return total


class PeakRss:
    """The peak of the summed RSS of a server's processes while the block runs, sampled
    every 20 ms (and at its end), and what they held when it began (``before``). RSS
    counts the pages master and worker share twice: a bound on it is stricter than the
    container's (``PeakPss``)."""

    measure = staticmethod(rss)
    interval = 0.02

    def __init__(self, group: list[psutil.Process]) -> None:
        self.group = group
        self.before = self.measure(group)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.measure(self.group))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure(self.group))


class PeakPss(PeakRss):
    """The same, for what a container is charged (PSS: a shared page once), every 100 ms."""

    measure = staticmethod(pss)
    interval = 0.1


def quick(url: str) -> float:
    """Seconds for /health, over a new connection."""
    started = time.monotonic()
    response = requests.get(f"{url}/health", timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    return sock


def small_entities_batch(limit: int) -> bytes:
    """The largest batch of small entities that fits ``limit`` bytes."""
    parts = []
    size = 2
    index = 0
    while True:
        entity = f'{{"_id":"e-{index:07d}","v":{index}}}'
        if size + len(entity) + 1 > limit:
            break
        parts.append(entity)
        size += len(entity) + 1
        index += 1
    return ("[" + ",".join(parts) + "]").encode()


def slow_feeds_beside_maximum_batches(
    url: str, feed: str, body: bytes, *, readers: int = 16, batches: int = 4
) -> tuple[list[socket.socket], list[int]]:
    """Issue 18's load: ``readers`` clients that ask for ``feed`` and stop reading after
    its first bytes, and ``batches`` sink requests of ``body`` (to a collection the
    upstream does not have), all at once, while /health is asked again and again and must
    answer within 5 s. Answers (the stalled readers' sockets, still open; every status).
    A 503 must carry Retry-After."""
    stalled: list[socket.socket] = []
    answers: list[int] = []

    def stalled_reader() -> None:
        sock = connect(url, receive_buffer=4096)
        sock.settimeout(60)
        sock.sendall(f"GET {feed} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = sock.recv(4096)
        stalled.append(sock)
        answers.append(int(head.split()[1]))
        if answers[-1] == 503:
            assert b"retry-after: 5" in head.lower()

    def batch() -> None:
        answer = requests.post(f"{url}/nosuch", data=body, timeout=120)
        answers.append(answer.status_code)
        if answer.status_code == 503:
            assert answer.headers["Retry-After"] == "5"

    with ThreadPoolExecutor(readers + batches) as pool:
        jobs = [pool.submit(stalled_reader) for _ in range(readers)]
        jobs += [pool.submit(batch) for _ in range(batches)]
        while not all(job.done() for job in jobs):
            assert quick(url) < 5  # /health, throughout
            time.sleep(0.2)  # pacing the checks, not waiting for anything
        for job in jobs:
            job.result()
    return stalled, answers
