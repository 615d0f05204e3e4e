"""Deadlines for upstream requests: a bound on the whole of a request, not on each wait.

urllib3's timeouts bound each wait on the socket (the connect, each read): a server that
sends one byte a second never trips them, and one request could hold a thread for ever. A
``Deadline`` bounds all of a request: connecting, sending, the answer's head and its whole
body, retries and the waits between them. The connections a request uses are watched by
one background thread per process, which shuts their sockets when the deadline passes,
whatever the request is waiting for; the client then fails it as a timeout.

Deadlines nest: the sink's batch, the feed's stream and the transform's batch are deadlines
that every upstream request made inside them falls under, so a request ends by the
earliest of its own and theirs. ``cut()`` ends one at once, with every request inside it
(the feed's client has gone: its reads stop).

The watched connections are urllib3's, through ``DeadlineAdapter``, which the upstream
client and the OAuth2 token block mount on their sessions.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool
from urllib3 import HTTPSConnectionPool
from urllib3.response import HTTPResponse

#: What a retry reads of an error answer's body before it tries again (in pieces of 8 KiB,
#: while no more than this has come); the rest of a longer body (or one that never ends) is
#: not drained: the connection is closed instead.
DRAIN_BYTES = 65536

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "upstream_deadline", default=None
)


class DeadlinePassed(Exception):
    """A request was started, or went on, after its deadline passed or was cut."""


class Deadline:
    """The latest moment a request (or a batch of them) may end, and the connections it
    holds meanwhile. ``what`` names the bound for messages (a setting and its value)."""

    def __init__(self, seconds: float, what: str, parent: Deadline | None = None) -> None:
        expires = time.monotonic() + seconds
        if parent is not None and parent.expires < expires:
            expires, what = parent.expires, parent.what
        self.expires = expires
        self.what = what
        self.parent = parent
        self.cut_reason: str | None = None
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._children: set[Deadline] = set()
        self._done = False
        self._woken = threading.Event()
        if parent is not None:
            parent._adopt(self)

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.cut_reason is not None or time.monotonic() >= self.expires

    def reason(self) -> str:
        """Why the deadline ended a request: its bound, or why it was cut."""
        return self.cut_reason or f"it took longer than {self.what}"

    def check(self) -> None:
        if self.passed:
            raise DeadlinePassed(self.reason())

    def attach(self, connection: Any) -> None:
        """Watch a connection this request uses: shut when the deadline passes."""
        with self._lock:
            if not self._done:
                self._connections.append(connection)
        if self.passed:
            _shut(connection)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less: until the deadline, or until it is cut."""
        self._woken.wait(max(0.0, min(seconds, self.remaining())))

    def cut(self, reason: str) -> None:
        """End now: every connection of this request and of those inside it is shut."""
        with self._lock:
            if self.cut_reason is None:
                self.cut_reason = reason
            connections = list(self._connections)
            children = list(self._children)
        self._woken.set()
        for connection in connections:
            _shut(connection)
        for child in children:
            child.cut(reason)

    def expire(self) -> None:
        """The watcher's call when ``expires`` is reached."""
        if not self._done:
            self.cut(self.reason())

    def close(self) -> None:
        """The request is over: its connections are no longer watched."""
        with self._lock:
            self._done = True
            self._connections.clear()
        if self.parent is not None:
            self.parent._disown(self)

    def _adopt(self, child: Deadline) -> None:
        with self._lock:
            self._children.add(child)
            cut = self.cut_reason
        if cut is not None:
            child.cut(cut)

    def _disown(self, child: Deadline) -> None:
        with self._lock:
            self._children.discard(child)


def current() -> Deadline | None:
    """The innermost deadline of this context, if any."""
    return _current.get()


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[Deadline]:
    """The block is one request (or batch): it ends by ``seconds`` from now, or earlier if
    an enclosing deadline says so. A context variable: a thread started inside takes it
    along with ``contextvars.copy_context()``."""
    scope = Deadline(seconds, what, _current.get())
    token = _current.set(scope)
    _watcher().watch(scope)
    try:
        yield scope
    finally:
        scope.close()
        _watcher().forget(scope)
        _current.reset(token)


def bind(scope: Deadline) -> None:
    """Make ``scope`` this context's deadline for good: for a context made for one thread
    (the feed's read-ahead), whose requests then fall under it."""
    _current.set(scope)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watcher:
    """One thread that expires the deadlines of requests still running when their time
    comes (a request that ends is forgotten at once: nothing is kept per request)."""

    def __init__(self) -> None:
        self._active: set[Deadline] = set()
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="upstream-deadlines", daemon=True)
        self._thread.start()

    def watch(self, scope: Deadline) -> None:
        if scope.expires == float("inf"):
            return
        with self._wake:
            self._active.add(scope)
            self._wake.notify()

    def forget(self, scope: Deadline) -> None:
        with self._wake:
            self._active.discard(scope)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [scope for scope in self._active if scope.expires <= now]
                self._active.difference_update(due)
                if not due:
                    soonest = min((scope.expires for scope in self._active), default=None)
                    self._wake.wait(None if soonest is None else soonest - now)
            for scope in due:
                scope.expire()


_watcher_lock = threading.Lock()
_watcher_of: dict[int, _Watcher] = {}


def start() -> None:
    """Start this process's watcher now, with the app, rather than with its first request."""
    _watcher()


def _watcher() -> _Watcher:
    """This process's watcher (a forked worker starts its own: threads do not survive a
    fork)."""
    pid = os.getpid()
    watcher = _watcher_of.get(pid)
    if watcher is None:
        with _watcher_lock:
            watcher = _watcher_of.get(pid)
            if watcher is None:
                watcher = _watcher_of[pid] = _Watcher()
    return watcher


class _BoundedDrain(HTTPResponse):
    """urllib3's answer, except that a retry reads at most ``DRAIN_BYTES`` of an error's
    body before it tries again: an endless body is cut, and its connection closed."""

    def drain_conn(self) -> None:
        drained = 0
        with contextlib.suppress(Exception):  # the connection is closed below either way
            while drained <= DRAIN_BYTES:
                piece = self._raw_read(8192)
                if not piece:
                    return
                drained += len(piece)
        self.close()


class _Watched:
    """A connection pool whose connections are watched by the current deadline."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        scope = _current.get()
        if scope is not None:
            scope.check()
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        if scope is not None:
            scope.attach(connection)
        return connection

    def _make_request(self, *args: Any, **kwargs: Any) -> Any:
        response = super()._make_request(*args, **kwargs)  # type: ignore[misc]
        if type(response) is HTTPResponse:
            response.__class__ = _BoundedDrain
        return response


class WatchedHTTPConnectionPool(_Watched, HTTPConnectionPool):
    pass


class WatchedHTTPSConnectionPool(_Watched, HTTPSConnectionPool):
    pass


def _watch_pools(manager: Any) -> Any:
    manager.pool_classes_by_scheme = {
        "http": WatchedHTTPConnectionPool,
        "https": WatchedHTTPSConnectionPool,
    }
    return manager


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with every connection under the current ``Deadline``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        known = proxy in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **kwargs)
        return manager if known else _watch_pools(manager)
