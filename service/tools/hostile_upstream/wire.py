"""HTTP/1.1 on a raw socket: just enough to read a request and to write any bytes back.

No HTTP library here on purpose: a library would fix what this server must be able to get
wrong (lengths, framing, pace). Every wait polls in short slices, so a connection notices
both a client that has gone and a server that is stopping, and a client that stops reading
never blocks a thread for good.
"""

from __future__ import annotations

import email.utils
import http
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

SLICE = 0.25  # seconds: how often a waiting connection looks at the stop flag
MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024
Headers = list[tuple[str, str]]
NO_BODY = frozenset({*range(100, 200), 204, 304})  # statuses that carry no framing headers


class ClientGone(Exception):
    """The client closed or reset the connection."""


class Stopping(Exception):
    """The server is stopping (SIGTERM), or a reset aborted this connection."""


class BadRequest(Exception):
    """A request this server cannot read; answered 400 (or ``status``), then closed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str  # the path with its query, as received
    version: str
    headers: Headers
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The first header of that name (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("Connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class Reply:
    """A whole answer: the status, the headers in order, and the body."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


def json_reply(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, [("Content-Type", "application/json"), *headers], text)


def error_reply(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    return json_reply(status, {"error": message}, headers)


def reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Whatever"


def head(status: int, headers: Headers, *, length: int | None, close: bool) -> bytes:
    """The status line and headers. ``length`` adds Content-Length (None: chunked), and
    ``close`` a ``Connection: close``, unless ``headers`` already name them: a rule may set
    any framing header, false ones included."""
    names = {name.lower() for name, _ in headers}
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if "date" not in names:
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    if "server" not in names:
        lines.append("Server: hostile-upstream")
    if not names & {"content-length", "transfer-encoding"} and status not in NO_BODY:
        if length is None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {length}")
    if close and "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty ``data`` is the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Peer:
    """One accepted connection: buffered reads, counted writes, and whether the client is
    still there. The socket is non-blocking; every wait is a poll in short slices."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self.sock = sock
        self.stopping = stopping
        self.aborted = threading.Event()
        self.buffer = bytearray()
        self.body_bytes = 0
        sock.setblocking(False)

    # --- waiting ------------------------------------------------------------------------

    def _check(self) -> None:
        if self.stopping.is_set() or self.aborted.is_set():
            raise Stopping()

    def _wait(self, events: int, seconds: float) -> bool:
        poller = select.poll()
        poller.register(self.sock, events)
        return bool(poller.poll(seconds * 1000))

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``; leave early, by exception, as soon as the client goes or the
        server stops (a long trickle interval notices a client that left within a slice)."""
        deadline = time.monotonic() + seconds
        while True:
            self._check()
            if self.client_gone():
                raise ClientGone()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stopping.wait(min(left, SLICE))

    def client_gone(self) -> bool:
        """Whether the client has closed its side (or reset): its FIN is waiting to be read."""
        if not self._wait(select.POLLIN, 0):
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def wait_until_gone(self) -> None:
        """Hold the connection, answering nothing, until the client goes (ClientGone) or the
        server stops. Whatever the client still sends is read and dropped."""
        while True:
            self._check()
            if self._wait(select.POLLIN, SLICE):
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    raise ClientGone() from None
                if not data:
                    raise ClientGone()

    # --- reading ------------------------------------------------------------------------

    def _fill(self) -> bool:
        """More bytes into the buffer; False at the client's end of stream."""
        while True:
            self._check()
            if not self._wait(select.POLLIN, SLICE):
                continue
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                raise ClientGone() from None
            if not data:
                return False
            self.buffer += data
            return True

    def _line(self, limit: int) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > limit:
                raise BadRequest("line too long")
            if not self._fill():
                raise ClientGone()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ClientGone()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_request(self) -> Request | None:
        """The next request, body included; None when the client closes between requests."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise BadRequest("request head too large", 431)
            if not self._fill():
                if self.buffer.strip():
                    raise ClientGone()
                return None
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(f"not an HTTP/1.x request line: {lines[0][:100]!r}")
        headers: Headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(f"malformed header line: {line[:100]!r}")
            headers.append((name, value.strip()))
        request = Request(parts[0], parts[1], parts[2], headers)
        if (request.header("Expect") or "").lower() == "100-continue":
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = self._body(request)
        return request

    def _body(self, request: Request) -> bytes:
        coding = (request.header("Transfer-Encoding") or "").lower()
        if coding:
            if coding.split(",")[-1].strip() != "chunked":
                raise BadRequest("a Transfer-Encoding that does not end in chunked")
            return self._chunked_body()
        length = request.header("Content-Length")
        if length is None:
            return b""
        if not length.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(length) > MAX_BODY:
            raise BadRequest("request body too large", 413)
        return self._exactly(int(length))

    def _chunked_body(self) -> bytes:
        body = bytearray()
        while True:
            size_text = self._line(1024).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest("malformed chunk size") from None
            if size == 0:
                while self._line(MAX_HEAD):  # trailers, up to the empty line
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise BadRequest("request body too large", 413)
            body += self._exactly(size)
            self._line(2)

    # --- writing ------------------------------------------------------------------------

    def send(self, data: bytes, *, body: int = 0) -> None:
        """Write all of ``data``, of which ``body`` bytes count as body bytes sent."""
        view = memoryview(data)
        while view:
            self._check()
            if not self._wait(select.POLLOUT, SLICE):
                continue
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                continue
            except OSError:
                raise ClientGone() from None
            view = view[sent:]
        self.body_bytes += body

    def send_reply(self, reply: Reply, *, close: bool, counted: bool = True) -> None:
        """Send a whole answer; ``counted``: its body counts as body bytes sent (the admin
        API's answers do not)."""
        length = len(reply.body)
        self.send(head(reply.status, reply.headers, length=length, close=close))
        self.send(reply.body, body=length if counted else 0)

    def abort(self) -> None:
        """End this connection from another thread (a reset of the tool's state)."""
        self.aborted.set()

    def close(self, *, reset: bool = False) -> None:
        """Close; with ``reset``, with a TCP RST instead of a FIN."""
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass
