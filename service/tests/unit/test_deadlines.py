"""The deadlines' own promises, beside the upstream tests that show them on the wire
(test_upstream_bounds.py): a finished request leaves nothing behind in a connector that
runs for months, a connection back in the pool is never shut by the request that used it
before, the watcher sleeps when it has nothing to do and survives a deadline without end,
and a retried error's body is read up to 64 KiB before its connection is reused.

The connections here are socket pairs: a shut socket is one whose peer reads the end.
"""

from __future__ import annotations

import gc
import math
import socket
import threading
import time
import types
import weakref
from collections.abc import Iterator

import pytest

from service.framework.deadlines import DRAIN_BYTES
from service.framework.deadlines import Deadline
from service.framework.deadlines import WatchedHTTPSConnectionPool
from service.framework.deadlines import _Watcher
from service.framework.deadlines import deadline
from service.framework.upstream import UpstreamClient
from service.framework.upstream_auth import OAuth2ClientCredentials
from service.framework.upstream_errors import UpstreamTimeout
from service.tests.unit.keepalive_upstream import KeepAliveUpstream
from service.tests.unit.keepalive_upstream import keepalive_upstream

PAGE = b'{"data": [], "next_cursor": null}'


@pytest.fixture
def connection() -> Iterator[tuple[types.SimpleNamespace, socket.socket]]:
    """A connection as urllib3 holds it (its ``sock``), and the upstream's end of it."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)
    yield types.SimpleNamespace(sock=ours), theirs
    ours.close()
    theirs.close()


def is_open(connection: types.SimpleNamespace, theirs: socket.socket) -> bool:
    """The connection still carries bytes both ways."""
    try:
        connection.sock.sendall(b"x")
        theirs.sendall(b"y")
        return theirs.recv(1) == b"x" and connection.sock.recv(1) == b"y"
    except OSError:
        return False


def test_nothing_is_kept_of_the_requests_a_batch_has_finished():
    """A sink batch makes thousands of requests under its deadline: each one's deadline
    goes when the request ends, not when the batch (or its bound) does."""
    finished = []
    with deadline(300, "UPSTREAM_SINK_DEADLINE (300s)"):
        for _ in range(3):
            with deadline(60, "UPSTREAM_DEADLINE (60s)") as request:
                finished.append(weakref.ref(request))
            del request
        gc.collect()
        assert [ref() for ref in finished] == [None, None, None]


def test_a_connection_back_in_the_pool_is_not_shut_by_its_last_requests_deadline(connection):
    """The request is over and its connection serves the next one: the old request's
    deadline, cut or expired later (a feed's client leaving), must not shut it."""
    conn, theirs = connection
    scope = Deadline(60, "UPSTREAM_DEADLINE (60s)")
    scope.attach(conn)
    scope.close()
    scope.cut("the client went away")
    scope.expire()
    assert is_open(conn, theirs)


def test_a_connection_taken_after_a_request_ended_is_not_watched_by_it(connection):
    conn, theirs = connection
    scope = Deadline(60, "UPSTREAM_DEADLINE (60s)")
    scope.close()
    scope.attach(conn)
    scope.cut("the client went away")
    assert is_open(conn, theirs)


def test_a_connection_taken_after_the_deadline_passed_is_shut_at_once(connection):
    conn, theirs = connection
    scope = Deadline(0, "UPSTREAM_DEADLINE (0s)")
    scope.attach(conn)
    assert theirs.recv(1) == b"", "the upstream should see the connection end"


def test_a_connection_not_yet_connected_is_passed_over_when_a_deadline_is_cut(connection):
    """urllib3 hands out connections before they connect (no socket yet): cutting the
    deadline still shuts the others, without an error of its own."""
    conn, theirs = connection
    scope = Deadline(60, "UPSTREAM_DEADLINE (60s)")
    scope.attach(types.SimpleNamespace(sock=None))
    scope.attach(conn)
    scope.cut("the client went away")
    assert theirs.recv(1) == b""


@pytest.mark.parametrize(("seconds", "bound", "waited"), [(0.25, 60, 0.25), (3, 0, 0.0)])
def test_a_wait_under_a_deadline_is_what_was_asked_and_never_past_it(seconds, bound, waited):
    """A retry's back-off waits what it asked for, or nothing once the deadline passed."""
    scope = Deadline(bound, f"UPSTREAM_DEADLINE ({bound}s)")
    waits: list[float] = []
    scope._woken = types.SimpleNamespace(wait=waits.append)
    scope.sleep(seconds)
    assert waits == [pytest.approx(waited, abs=0.01)]


class Counted(Deadline):
    """A deadline that counts how often the watcher expires it and looks at its bound."""

    def __init__(self, seconds: float, what: str) -> None:
        self.expired = 0
        self.looks = 0
        super().__init__(seconds, what)

    @property  # type: ignore[override]
    def expires(self) -> float:
        self.looks += 1
        return self._expires

    @expires.setter
    def expires(self, value: float) -> None:
        self._expires = value

    def expire(self) -> None:
        self.expired += 1
        super().expire()


def test_a_deadline_without_end_does_not_stop_the_others_from_expiring():
    """A bound of infinity (a feed's own) is never watched: the watcher goes on, and
    does not wait on it for ever (or fail to, and end) once the others have expired."""
    watcher = _Watcher()
    endless = Counted(math.inf, "the feed of people")
    watcher.watch(endless)
    first = Deadline(0.05, "UPSTREAM_DEADLINE (0.05s)")
    watcher.watch(first)
    assert first._woken.wait(10), "the first deadline was not expired"
    if endless.looks > 1:  # the watcher weighed it: let it come to wait on it alone
        for _ in range(200):
            if not watcher._thread.is_alive():
                break
            time.sleep(0.01)
    second = Deadline(0.05, "UPSTREAM_DEADLINE (0.05s)")
    watcher.watch(second)
    assert second._woken.wait(10), "the watcher stopped expiring deadlines"
    assert second.reason() == "it took longer than UPSTREAM_DEADLINE (0.05s)"


def test_an_expired_deadline_is_expired_once():
    watcher = _Watcher()
    first = Counted(0.01, "UPSTREAM_DEADLINE (0.01s)")
    watcher.watch(first)
    assert first._woken.wait(10)
    later = Deadline(0.1, "UPSTREAM_DEADLINE (0.1s)")
    watcher.watch(later)
    assert later._woken.wait(10)
    assert first.expired == 1


def test_the_watcher_sleeps_until_the_next_deadline_is_due():
    """An idle connector's watcher takes no CPU: between deadlines it waits, it does not
    look at the ones it watches again and again."""
    watcher = _Watcher()
    far = Counted(3600, "UPSTREAM_SINK_DEADLINE (3600s)")
    watcher.watch(far)
    near = Deadline(0.2, "UPSTREAM_DEADLINE (0.2s)")
    watcher.watch(near)
    assert near._woken.wait(10)
    assert far.looks < 40


def error_then_page(error_bytes: int, closed_first: list[bool]):
    """The first answer a 503 with a body of ``error_bytes``, the others a page. A retry on
    a new connection notes in ``closed_first`` whether the error's had ended by then."""

    def answer(upstream: KeepAliveUpstream, _request: object):
        if upstream.answered == 1:
            return 503, {}, b" " * error_bytes
        if upstream.connections > 1:
            closed_first.append(upstream.ended.wait(10))
        return 200, {}, PAGE

    return answer


@pytest.mark.parametrize(
    ("error_bytes", "connections"),
    [(3 * 8192, 1), (DRAIN_BYTES + 8192, 1), (DRAIN_BYTES + 8193, 2), (4 * DRAIN_BYTES, 2)],
)
def test_a_retried_errors_body_is_read_up_to_72_kib_then_its_connection_is_closed(
    error_bytes, connections
):
    """A retried error's body is read in pieces of 8 KiB while no more than 64 KiB has
    come: one of up to 72 KiB is read whole and its connection kept for the retry; of a
    longer one no more is read, and its connection is closed: the retry takes a new one.
    Either way the retry gets its own answer whole, never the rest of the error's."""
    closed_first: list[bool] = []
    with keepalive_upstream(error_then_page(error_bytes, closed_first)) as upstream:
        reader = UpstreamClient(upstream.url, "test-token-4b5c", retries=1, backoff_factor=0)
        assert reader.get_json(f"{upstream.url}/people") == {"data": [], "next_cursor": None}
        assert upstream.answered == 2
        assert upstream.connections == connections
        if connections == 2:
            assert closed_first == [True], "the error's connection was left open"


def test_an_https_upstreams_connections_are_under_the_deadline_too():
    """No TLS server here: the pool an https upstream's requests (and an https token
    endpoint's) are sent through is the one whose connections the deadline watches."""
    url = "https://records.example/people"
    reader = UpstreamClient("https://records.example", "test-token-4b5c")
    tokens = OAuth2ClientCredentials("https://auth.example/token", "connector", "s3cret-9f1e")
    for session in (reader.session, tokens._session):
        pool = session.get_adapter(url).poolmanager.connection_from_url(url)
        assert isinstance(pool, WatchedHTTPSConnectionPool)


class StalledProxy:
    """An HTTP proxy that answers a head and then nothing: the body never comes."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(sock)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536) or b"\r\n\r\n"
            self.requests.append(head)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")

    def close(self) -> None:
        self.listener.close()
        for sock in self.held:
            sock.close()


@pytest.mark.parametrize("requests_made", [1, 2])
def test_a_request_through_a_proxy_is_cut_at_the_deadline(monkeypatch, requests_made):
    """HTTP_PROXY is honoured, and the proxy's connections are under the deadline like
    any other: the second request through the same proxy too."""
    proxy = StalledProxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        reader = UpstreamClient(
            "http://records.example", "test-token-4b5c", retries=0, read_timeout=20, deadline=1
        )
        for _ in range(requests_made):
            with pytest.raises(UpstreamTimeout, match=r"UPSTREAM_REQUEST_DEADLINE \(1s\)"):
                reader.get_json("http://records.example/people")
        assert proxy.requests[0].startswith(b"GET http://records.example/people HTTP/1.1")
    finally:
        proxy.close()
