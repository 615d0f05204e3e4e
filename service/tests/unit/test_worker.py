"""The hardened worker's event loop (``service/framework/worker.py``), one step at a time:
a real ``ConnectorWorker`` on gunicorn's own configuration and real sockets, its loop not
running. The cases here are the ones a client cannot bring about on demand (a wake-up with
nothing to read, another worker taking the connection first, a worker told to stop); what
a client sees of the same code is in functional/test_worker_http.py."""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from service.framework.worker import ConnectorWorker
from service.framework.worker import HardenedConnection
from service.framework.worker import Pieces
from service.framework.worker import in_pieces
from service.tools.servers import ROOT


class Lines(Logger):
    """gunicorn's logger, keeping the debug lines it is given."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.lines: list[str] = []

    def debug(self, msg: str, *args: object, **kwargs: object) -> None:
        self.lines.append(msg % args)


@pytest.fixture
def worker() -> Iterator[ConnectorWorker]:
    """A worker as its loop finds itself: a poller, connections handed on kept in
    ``handed``, nothing running."""
    cfg = Config()
    worker = ConnectorWorker(0, 0, [], None, 30, cfg, Lines(cfg))
    worker.poller = selectors.DefaultSelector()
    worker.handed = []
    worker.enqueue_req = worker.handed.append
    yield worker
    worker.poller.close()
    worker.tmp.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def connected(
    worker: ConnectorWorker, listener: socket.socket
) -> tuple[HardenedConnection, socket.socket]:
    """A client connected and accepted by the worker, its head being read."""
    client = socket.create_connection(listener.getsockname(), timeout=10)
    wait_until_pending(listener)
    worker.accept(listener)
    (entry,) = [entry for entry in worker.heads if entry[1].reading_head is entry]
    return entry[1], client


def wait_until_pending(listener: socket.socket) -> None:
    with selectors.DefaultSelector() as ready:
        ready.register(listener, selectors.EVENT_READ)
        assert ready.select(timeout=10), "the connection did not arrive"


def is_closed(sock: socket.socket) -> bool:
    return sock.fileno() == -1


def test_a_wake_up_for_a_connection_another_worker_took_changes_nothing(worker, listener):
    """Workers share the listening socket, and each is woken for a new connection: the one
    that finds it taken goes on (a crash here would cut every answer it is writing)."""
    worker.accept(listener)  # nothing to accept: BlockingIOError inside
    assert worker.nr_conns == 0 and not worker.heads


def test_under_tls_one_wake_up_takes_one_connection_the_stock_way(worker, listener):
    """With TLS, gthread's own accept takes the connection; a second one waiting must not
    then be taken as plain HTTP, whose head the loop would read out of its TLS handshake."""
    worker.hardened = False
    first = socket.create_connection(listener.getsockname(), timeout=10)
    second = socket.create_connection(listener.getsockname(), timeout=10)
    try:
        wait_until_pending(listener)
        worker.accept(listener)
        assert worker.nr_conns == 1 and len(worker.handed) == 1
        assert not isinstance(worker.handed[0], HardenedConnection) and not worker.heads
    finally:
        first.close()
        second.close()
        for connection in worker.handed:
            connection.sock.close()


def test_a_wake_up_with_nothing_to_read_leaves_the_head_being_read(worker, listener):
    connection, client = connected(worker, listener)
    with client:
        worker.on_head_readable(connection, connection.sock)  # BlockingIOError inside
        assert connection.reading_head is not None and not connection.head
        assert not is_closed(connection.sock) and worker.nr_conns == 1
        connection.sock.close()


def test_a_client_gone_mid_head_is_closed_and_uncounted_at_once(worker, listener):
    connection, client = connected(worker, listener)
    client.sendall(b"GET /health HTTP/1.1\r\n")
    client.close()
    deadline = time.monotonic() + 10
    while not is_closed(connection.sock):  # its bytes, then its end
        assert time.monotonic() < deadline, "the connection was not closed"
        worker.on_head_readable(connection, connection.sock)
    assert worker.nr_conns == 0 and connection.reading_head is None
    worker.murder_pending()  # its head's deadline is 30 s away: nothing more to do
    assert worker.nr_conns == 0


def test_a_head_past_its_deadline_is_closed_with_a_debug_line(worker, listener):
    worker.client_timeout = 0
    connection, client = connected(worker, listener)
    with client:
        worker.murder_pending()
        assert is_closed(connection.sock) and worker.nr_conns == 0
        assert client.recv(100) == b""
    assert worker.log.lines == [f"closing {connection.client}: no complete request in time"]


def test_a_connection_gthread_set_aside_is_still_closed_after_its_keep_alive(worker, listener):
    """gthread sets aside a TLS connection that sends nothing for 5 s (``pending_conns``);
    the worker's own deadlines do not replace gthread's for those."""
    connection, client = connected(worker, listener)
    with client:
        worker.heads.clear()
        connection.reading_head = None
        worker.poller.unregister(connection.sock)
        connection.timeout = time.monotonic() - 1
        worker.pending_conns.append(connection)
        worker.murder_pending()
        assert is_closed(connection.sock) and not worker.pending_conns


def test_a_kept_alive_connection_that_sends_its_next_request_is_not_expired_with_it(
    worker, listener
):
    """A kept-alive connection that begins its next request leaves the keep-alive list:
    its keep-alive running out later does not close it mid-request."""
    connection, client = connected(worker, listener)
    with client:
        client.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + 10
        while not worker.handed:
            assert time.monotonic() < deadline, "the head was not handed on"
            worker.on_head_readable(connection, connection.sock)
        connection.set_timeout()
        worker.keepalived_conns.append(connection)
        worker.poller.register(connection.sock, selectors.EVENT_READ, None)
        client.sendall(b"GET /health HTTP/1.1\r\n")
        worker.on_client_socket_readable(connection, connection.sock)
        worker.murder_keepalived(force=True)  # as a stopping worker does
        assert not is_closed(connection.sock) and connection.reading_head is not None
        connection.sock.close()


def test_a_stopping_worker_gives_kept_alive_connections_its_linger_only(worker, listener):
    """Stopping, a worker keeps its kept-alive connections a moment (for a request already
    on its way), not their whole keep-alive (75 s), and heads still being read the same."""
    connection, client = connected(worker, listener)
    with client:
        connection.timeout = time.monotonic() + 75
        worker.keepalived_conns.append(connection)
        deadline = time.monotonic() + 2
        worker._cap_keepalive(deadline)
        assert connection.timeout == deadline and worker.head_cap == deadline
        connection.sock.close()


def test_a_connection_closed_after_its_answer_is_closed(worker, listener):
    connection, client = connected(worker, listener)
    with client:
        connection.close(graceful=True)
        assert is_closed(connection.sock) and client.recv(100) == b""


MALLOC_ARENAS_OF_A_WORKER = textwrap.dedent(
    """
    import ctypes, sys, threading
    from gunicorn.config import Config
    from gunicorn.glogging import Logger
    from service.framework.worker import ConnectorWorker

    libc = ctypes.CDLL(None)
    libc.fdopen.restype = ctypes.c_void_p

    class Probe(ConnectorWorker):
        def load_wsgi(self):
            pass

        def run(self):  # instead of the loop: eight threads allocating at once
            together = threading.Barrier(9)
            def allocate():
                kept = [bytearray(4000) for _ in range(100)]
                together.wait()
                together.wait()
            threads = [threading.Thread(target=allocate) for _ in range(8)]
            for thread in threads:
                thread.start()
            together.wait()
            out = libc.fdopen(1, b"w")
            libc.malloc_info(0, ctypes.c_void_p(out))
            libc.fflush(ctypes.c_void_p(out))
            together.wait()
            sys.exit(0)

    cfg = Config()
    Probe(0, 0, [], None, 30, cfg, Logger(cfg)).init_process()
    """
)


def test_a_workers_threads_share_at_most_two_malloc_arenas() -> None:
    """glibc gives each of up to 8 x cores threads an arena, and what is freed in one is
    rarely given back: a worker's threads share two (glibc's own count, ``malloc_info``)."""
    if not hasattr(__import__("ctypes").CDLL(None), "malloc_info"):
        pytest.skip("not glibc: no malloc arenas to limit")
    done = subprocess.run(
        [sys.executable, "-c", MALLOC_ARENAS_OF_A_WORKER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 1 <= done.stdout.count("<heap nr=") <= 2, done.stdout


def test_an_answer_is_written_in_pieces_of_at_most_64_kib_in_order() -> None:
    """The client timeout bounds the write of one piece: a page of a feed larger than
    64 KiB is cut, and the pieces joined are the page."""
    page, small = bytes(range(256)) * 800, b"]"  # 200 KiB, then the closing bracket
    pieces = list(Pieces([page, small]))
    assert [len(piece) for piece in pieces] == [65536, 65536, 65536, 8192, 1]
    assert b"".join(pieces) == page + small


def test_the_answers_close_reaches_the_app() -> None:
    """A feed's answer releases its upstream reads in its close(): gunicorn calls the
    pieces' close, and it must reach the answer's own."""
    ended = []

    def answer() -> Iterator[bytes]:
        try:
            yield b"["
            yield b"]"
        finally:
            ended.append(True)

    pieces = Pieces(answer())
    assert next(iter(pieces)) == b"["
    pieces.close()
    assert ended == [True]
    Pieces([b"[]"]).close()  # an answer without close(): nothing to do


def test_a_file_the_app_sends_is_left_to_gunicorns_sendfile() -> None:
    class FileWrapper:
        def __init__(self, file: object) -> None:
            self.file = file

    sent = FileWrapper(object())
    app = in_pieces(lambda environ, start_response: sent)
    assert app({"wsgi.file_wrapper": FileWrapper}, None) is sent
    assert isinstance(app({}, None), Pieces)
