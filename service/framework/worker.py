"""The gunicorn worker: gunicorn's threaded worker, hardened against slow and stalled clients.

Gunicorn's ``gthread`` worker hands a connection to a thread once its first bytes arrive,
and the thread then waits on the client without a timeout: a few clients that send half a
request, or stop reading a feed, hold every thread, and the service stops answering,
``/health`` included (in Sesam a stalled connection is a network fault, not only an attack;
a failing health check restarts the container in a loop). This worker changes that:

- A request's head is read by the worker's event loop, not by a thread: a thread is taken
  only once the head is complete. A head that is not complete within ``CLIENT_TIMEOUT``
  closes the connection, so a client stalled mid-request costs a socket, never a thread.
- A thread's reads from and writes to a client time out after ``CLIENT_TIMEOUT`` seconds
  without progress. Answers are written in pieces of at most 64 KB, so the timeout measures
  progress and a slow but steady reader gets the whole feed. A stalled client is reset, with
  one log line, and its thread goes back to the pool.
- Errors gunicorn answers itself (a malformed request line, 414, 431) have JSON bodies.

With TLS or HTTP/2 configured in gunicorn the stock behaviour is kept (the event loop
cannot read their heads); the connector serves plain HTTP/1.1 behind Sesam.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import logging
import selectors
import socket
import struct
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.workers import gthread

from service.framework.masking import mask
from service.framework.masking import mask_handlers

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 65536  # a longer head goes to a thread, and gunicorn's own limits
PIECE_BYTES = 65536
READ_BYTES = 16384
ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, for 0 s: close() resets the connection


class HardenedConnection(gthread.TConn):
    """A connection whose head the event loop reads; its socket times out in a thread."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, timeout: float):
        super().__init__(cfg, sock, client, server)
        self.client_timeout = timeout
        self.head = bytearray()
        # While the event loop reads its head: the head's (deadline, connection) entry in
        # the worker's ``heads``; None otherwise.
        self.reading_head: tuple[float, HardenedConnection] | None = None
        self.stalled = False

    def init(self) -> None:
        super().init()
        if self.head:  # the bytes the event loop read belong to the parser
            self.parser.unreader.unread(bytes(self.head))
            self.head.clear()
        self.sock.settimeout(self.client_timeout)

    def close(self, graceful: bool = False) -> None:
        """Close without lingering on the event loop's thread (gunicorn's graceful close
        waits up to two seconds there for the client's FIN): send FIN, drop what the client
        sent that is already here, close. A client that stopped reading (``stalled``) is
        reset instead: the answer queued for it in the kernel, up to megabytes and charged
        to the container, is dropped at once, not kept while the kernel retries a reader
        that is not there."""
        if self.stalled:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT)
        elif graceful:
            try:
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.setblocking(False)
                self.sock.recv(PIECE_BYTES)
            except OSError:
                pass
        util.close(self.sock)


class ConnectorWorker(gthread.ThreadWorker):
    """``gthread`` with heads read by the event loop and client timeouts; see the module."""

    client_timeout = 30.0  # gunicorn.conf.py sets CLIENT_TIMEOUT here before workers start

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hardened = not self.cfg.is_ssl and self.cfg.http2_cleartext in (None, "", "off")
        # (deadline, connection) of each head read, in deadline order
        self.heads: collections.deque[tuple[float, HardenedConnection]] = collections.deque()
        self.head_cap = float("inf")

    def init_process(self) -> None:
        limit_malloc_arenas()  # before any thread: each would take an arena of its own
        util.write_error = write_json_error
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = in_pieces(self.wsgi)
        # gunicorn's own lines (a traceback of a broken feed, the access log) are masked
        # like the app's: no secret in any of them.
        for name in ("gunicorn.error", "gunicorn.access"):
            mask_handlers(logging.getLogger(name))
        # What is loaded now (modules, the app, its clients) lives as long as the worker:
        # out of the cyclic collector's full passes, which then walk a feed's pages only.
        gc.freeze()

    # --- heads, read by the event loop --------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        if not self.hardened:
            super().accept(listener)
            return
        try:
            sock, client = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        self.nr_conns += 1
        connection = HardenedConnection(
            self.cfg, sock, client, listener.getsockname(), self.client_timeout
        )
        self.read_head(connection)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request: its head is read here too."""
        if not self.hardened:
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.read_head(conn)

    def read_head(self, connection: HardenedConnection) -> None:
        connection.sock.setblocking(False)
        entry = (time.monotonic() + self.client_timeout, connection)
        connection.reading_head = entry
        self.heads.append(entry)
        self.poller.register(
            connection.sock, selectors.EVENT_READ, partial(self.on_head_readable, connection)
        )

    def on_head_readable(self, connection: HardenedConnection, _sock: Any) -> None:
        try:
            data = connection.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was complete
            self.drop_head(connection)
            return
        searched_from = max(0, len(connection.head) - len(HEAD_END) + 1)
        connection.head += data
        if HEAD_END in connection.head[searched_from:] or len(connection.head) >= MAX_HEAD_BYTES:
            self.poller.unregister(connection.sock)
            connection.reading_head = None
            connection.data_ready = True
            self.enqueue_req(connection)

    def drop_head(self, connection: HardenedConnection) -> None:
        try:
            self.poller.unregister(connection.sock)
        except (KeyError, ValueError, OSError):
            pass
        connection.reading_head = None
        self.nr_conns -= 1
        connection.close()

    def murder_pending(self) -> None:
        """Also close the connections whose head did not arrive in time."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads and min(self.heads[0][0], self.head_cap) <= now:
            entry = self.heads.popleft()
            connection = entry[1]
            if connection.reading_head is entry:  # still this head, not done nor a later one
                self.log.debug("closing %s: no complete request in time", connection.client)
                self.drop_head(connection)

    def _cap_keepalive(self, deadline: float) -> None:
        """Stopping: heads still being read get as long as kept-alive connections."""
        super()._cap_keepalive(deadline)
        self.head_cap = deadline

    # --- threads: a stalled client is closed, with one line ----------------------------

    def handle_request(self, req: Any, conn: Any) -> bool:
        try:
            return bool(super().handle_request(req, conn))
        except TimeoutError:
            conn.stalled = True
            self.log.warning(
                "closed the connection of %s %s from %s: no progress in %gs (CLIENT_TIMEOUT)",
                req.method,
                req.path,
                conn.client[0] if conn.client else "?",
                self.client_timeout,
            )
            return False


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """At most two malloc arenas per worker. glibc gives each of up to 8 × cores threads an
    arena of its own, and memory freed in one is rarely given back: after a load of
    concurrent feeds and batches a worker kept tens of MB. With two, the memory trimmed
    when the worker falls idle (``service.framework.memory``) goes back to the system.
    Nothing where the C library has no ``mallopt`` (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)


class Pieces:
    """A WSGI answer written in pieces of at most PIECE_BYTES, so that the client timeout
    bounds each piece, not a whole page of a feed."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        for item in self.result:
            if len(item) <= PIECE_BYTES:
                yield item
                continue
            for start in range(0, len(item), PIECE_BYTES):
                yield item[start : start + PIECE_BYTES]

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def in_pieces(app: Callable[..., Any]) -> Callable[..., Any]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        result = app(environ, start_response)
        if isinstance(result, environ.get("wsgi.file_wrapper", ())):
            return result
        return Pieces(result)

    return wsgi


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answers (``util.write_error``), as JSON like the app's, and
    masked like them (gunicorn quotes a refused request line back)."""
    body = json.dumps({"error": reason, "detail": mask(message)}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
