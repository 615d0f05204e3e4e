"""What the feed does with the bodies of the upstream's list pages as they arrive on the
wire: whole in one read (issue 11), and never taken for whole when they are not.

An upstream that closes the connection halfway through a page, or stops sending in the
middle of one, must fail the feed as an upstream failure: a status and a JSON error when
it is the first page, a connection dropped without the closing ``]`` after that, never a
valid and shorter answer. A compressed or chunked page is read as a plain one.

The upstream here is a small socket server on loopback, because the demo Records API
always sends whole bodies; the connector runs under gunicorn as everywhere else.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.tests.framework_kit import running_connector
from service.tools.servers import free_port

READ_TIMEOUT = 2  # UPSTREAM_READ_TIMEOUT for these tests, in seconds


def page(ids: list[str], cursor: str | None) -> bytes:
    records = [
        {"id": i, "updated_at": "2026-01-01T00:00:00.000000Z", "name": "x" * 200} for i in ids
    ]
    return json.dumps({"data": records, "next_cursor": cursor}).encode()


FIRST = page([f"a{n:03d}" for n in range(100)], "second")
SECOND = page([f"b{n:03d}" for n in range(100)], None)


class CuttingUpstream:
    """Serves ``/<collection>`` pages: the first whole, the second (``?cursor=second``) as
    the collection's name says, after its first word: ``whole``, ``cut`` (half the
    body, then the connection closed), ``stall`` (half the body, then silence), ``gzip``
    (compressed), ``chunked`` (chunked transfer encoding). With ``first-`` before the
    word, the first page is served that way."""

    def __init__(self) -> None:
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.stalled: list[socket.socket] = []
        self.closing = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                conn.close()
                return
            head += data
        target = head.split(b" ", 2)[1].decode()
        path, _, query = target.partition("?")
        collection = path.strip("/")
        second = "cursor=second" in query
        kind = collection.removeprefix("first-").split("-")[0]
        if collection.startswith("first-") == second:
            kind = "whole"  # the other page is served whole
        body = SECOND if second else FIRST
        self.send(conn, kind, body)

    def send(self, conn: socket.socket, kind: str, body: bytes) -> None:
        headers = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        if kind == "gzip":
            body = gzip.compress(body)
            headers += "Content-Encoding: gzip\r\n"
        if kind == "chunked":
            conn.sendall(f"{headers}Transfer-Encoding: chunked\r\n\r\n".encode())
            for start in range(0, len(body), 1000):
                piece = body[start : start + 1000]
                conn.sendall(b"%X\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
            conn.close()
            return
        conn.sendall(f"{headers}Content-Length: {len(body)}\r\n\r\n".encode())
        if kind in ("cut", "stall"):
            conn.sendall(body[: len(body) // 2])
            if kind == "stall":
                self.stalled.append(conn)  # open and silent until the test ends
                return
        else:
            conn.sendall(body)
        conn.close()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()
        for conn in self.stalled:
            conn.close()


@pytest.fixture(scope="module")
def cutting_upstream() -> Iterator[CuttingUpstream]:
    upstream = CuttingUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def connector(cutting_upstream, tmp_path_factory):
    yield from running_connector(
        cutting_upstream.url,
        Path(tmp_path_factory.mktemp("bodies")),
        UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT),
        UPSTREAM_RETRIES="0",
    )


def ids(response: requests.Response) -> list[str]:
    return [entity["_id"] for entity in response.json()]


EVERY_ID = [f"a{n:03d}" for n in range(100)] + [f"b{n:03d}" for n in range(100)]


@pytest.mark.parametrize("collection", ["whole", "gzip", "chunked", "first-gzip"])
def test_compressed_and_chunked_pages_are_read_whole(connector, collection):
    response = connector.get(collection)
    assert response.status_code == 200
    assert ids(response) == EVERY_ID


def test_a_first_page_cut_off_is_a_502_with_a_json_error(connector):
    response = connector.get("first-cut")
    assert response.status_code == 502
    error = response.json()
    assert error["error"] == "Bad Gateway"
    assert "upstream" in error["detail"] and "/first-cut" in error["detail"]


def test_a_first_page_that_stops_arriving_is_a_504(connector):
    response = connector.get("first-stall")
    assert response.status_code == 504
    error = response.json()
    assert error["error"] == "Upstream Timeout"
    assert "timed out" in error["detail"] and "/first-stall" in error["detail"]


@pytest.mark.parametrize("collection", ["cut", "stall"])
def test_a_later_page_cut_off_or_stalled_breaks_the_answer(connector, collection):
    """The first page is streamed already: the feed drops the connection without the
    closing ``]``, so Sesam cannot take the hundred entities it got for the collection."""
    with connector.http.get(f"{connector.url}/{collection}", stream=True, timeout=60) as answer:
        assert answer.status_code == 200
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in answer.iter_content(65536):
                received += chunk
    assert received.startswith(b'[{"id":"a000"')
    assert not received.rstrip().endswith(b"]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)
