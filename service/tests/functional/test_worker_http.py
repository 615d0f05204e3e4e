"""The hardened gunicorn worker (``service/framework/worker.py``) at the socket: request
heads read by the event loop however they arrive, kept-alive connections, clients that
stall or go away mid-head, and a reader that stops reading, each seen as a client (or the
operator, in the log) would see it. Quick cases only: the loads and the slow readers are
in test_slow_clients.py."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.tests.framework_kit import REFERENCE_APP
from service.tests.framework_kit import UPSTREAM_TOKEN
from service.tests.framework_kit import Connector
from service.tests.framework_kit import Upstream
from service.tests.framework_kit import connector_environment
from service.tests.framework_kit import read_head
from service.tests.framework_kit import running_connector
from service.tests.loads import processes
from service.tools.servers import ROOT
from service.tools.servers import free_port
from service.tools.servers import start
from service.tools.servers import stop

CLIENT_TIMEOUT = 2  # seconds: what a stalled client is given here
READ_BYTES = 16384  # what the event loop reads of a head at once (worker.READ_BYTES)


@pytest.fixture(scope="module")
def served(
    upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connector]:
    """One worker, so that every connection meets the same event loop."""
    yield from running_connector(
        upstream_server.url,
        tmp_path_factory.mktemp("worker"),
        WORKERS="1",
        CLIENT_TIMEOUT=str(CLIENT_TIMEOUT),
    )


def connect(connector: Connector) -> socket.socket:
    host, port = connector.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer: (status, headers, body, chunked as it came); the socket stays open."""
    status, headers, body = read_head(sock)

    def more() -> None:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the body"
        nonlocal body
        body += chunk

    if headers.get("transfer-encoding") == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            more()
    else:
        while len(body) < int(headers["content-length"]):
            more()
    return status, headers, body


def dechunk(body: bytes) -> bytes:
    """A chunked body's data."""
    data = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return data
        data += rest[:size]
        body = rest[size + 2 :]


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds}s: {what}")


def health(connector: Connector) -> None:
    assert requests.get(f"{connector.url}/health", timeout=30).json() == {"status": "ok"}


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to the socket's timeout) for the server to close; True if it did."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("after", [0, 1, 2, 3])
def test_a_head_whose_end_straddles_two_reads_is_answered(served: Connector, after: int) -> None:
    """The event loop reads a head READ_BYTES at a time: a blank line that ends one read and
    begins the next is still the end of the head (``after`` of its 4 bytes come in the
    second read)."""
    start = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 5000 + b"\r\n"
    start += b"X-Pad: " + b"p" * 5000 + b"\r\nX-Pad: "
    pad = READ_BYTES + after - len(start) - 4
    head = start + b"p" * pad + b"\r\n\r\n"  # each header under gunicorn's 8190 bytes
    assert len(head) == READ_BYTES + after
    with connect(served) as sock:
        sock.sendall(head)
        status, _, body = read_answer(sock)
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_a_head_sent_a_byte_at_a_time_is_answered(served: Connector) -> None:
    with connect(served) as sock:
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n":
            sock.sendall(bytes([byte]))
        status, _, body = read_answer(sock)
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_a_kept_alive_connection_answers_each_of_its_requests(
    served: Connector, upstream: Upstream
) -> None:
    """Each answer is its own request's: the feed's page after the health check, not the
    health check again."""
    with connect(served) as sock:
        for path in ("/health", "/people?limit=1", "/health"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body = read_answer(sock)
            assert status == 200, path
            assert headers.get("connection", "keep-alive").lower() != "close"
            if headers.get("transfer-encoding") == "chunked":
                body = dechunk(body)
            answer = json.loads(body)
            if path == "/health":
                assert answer == {"status": "ok"}
            else:
                assert isinstance(answer, list) and len(answer) == 1 and "_id" in answer[0]


def test_a_head_that_never_ends_is_closed_after_client_timeout(served: Connector) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        health(served)  # answered meanwhile: the stalled head holds no thread
        started = time.monotonic()
        assert closed_by_server(sock)
    assert time.monotonic() - started < 30  # CLIENT_TIMEOUT (2 s), far from the 60 s wait


def test_a_kept_alive_connection_that_starts_a_head_and_stalls_is_closed(
    served: Connector,
) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        health(served)
        assert closed_by_server(sock)


def test_clients_that_go_away_mid_head_leave_room_for_the_next(served: Connector) -> None:
    """More than gunicorn's worker_connections (256) clients send half a head and hang
    up: each is forgotten, and the worker still takes new connections."""
    for _ in range(300):
        with connect(served) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        health(served)
    health(served)


def test_a_reader_that_stops_reading_is_reset_with_one_log_line(
    served: Connector, upstream: Upstream
) -> None:
    """A feed larger than the socket buffers, whose reader takes a few bytes and stops:
    after CLIENT_TIMEOUT without progress the worker resets the connection, says so once
    in the log, and serves on."""
    upstream.insert("wide", [{"id": f"w-{n:05d}", "text": "x" * 400} for n in range(20000)])
    with connect(served) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /wide HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        line = (
            "closed the connection of GET /wide from 127.0.0.1: no progress in 2s (CLIENT_TIMEOUT)"
        )
        wait_for(lambda: line in served.log_text(), 60, "the stalled reader's log line")
        # Reset, not ended: the rest of the answer, queued in the kernel for a reader that
        # is not there, was dropped (what reached this side is still read first).
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    health(served)
    assert served.log_text().count(line) == 1


def test_an_answer_on_its_way_when_the_connection_closes_arrives_whole(
    served: Connector, upstream: Upstream
) -> None:
    """A feed asked for with ``Connection: close`` and a body the feed does not read, by a
    client with a small receive window: the connector has written the answer and closed
    while most of it is still queued for the client. The unread body is taken off the
    socket first: closed with it there, the kernel would reset the connection and drop
    what was still queued, and the client would get part of the feed (RFC 9112, 9.6)."""
    upstream.insert("few", [{"id": f"f-{n:02d}", "text": "z" * 500} for n in range(12)])
    body = b"x" * 30000  # more than the event loop reads with the head
    head = f"GET /few HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}"
    host, port = served.url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the smallest window
        sock.settimeout(60)
        sock.connect((host, int(port)))
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        worker = processes(served.url)[1]
        mine = sock.getsockname()

        def closed_by_the_connector() -> bool:
            return all(c.raddr != mine for c in worker.net_connections("tcp"))

        wait_for(closed_by_the_connector, 30, "the connector closing after its answer")
        status, headers, answer = read_answer(sock)  # a reset here: the answer was cut
        assert sock.recv(65536) == b""
    assert status == 200 and headers["connection"] == "close"
    assert [e["_id"] for e in json.loads(dechunk(answer))] == [f"f-{n:02d}" for n in range(12)]


def test_a_head_of_64_kib_without_its_end_gets_a_json_414_at_once(served: Connector) -> None:
    """The event loop hands a head to gunicorn at 64 KiB even before its end: a request
    line that long is refused at once, not left waiting for CLIENT_TIMEOUT."""
    with connect(served) as sock:
        sock.sendall(b"GET /" + b"a" * (65536 - len(b"GET /")))
        status, _, body = read_answer(sock)
    assert status == 414 and json.loads(body)["error"] == "URI Too Long"


def test_a_secret_in_a_malformed_request_line_is_hidden_in_gunicorns_error_log(
    served: Connector,
) -> None:
    """gunicorn refuses a request line without its HTTP version itself (``400``), and logs
    it (``Invalid request from ip=...``) in its error log, not the app's: masked all the
    same, in the log and in the answer."""
    with connect(served) as sock:
        sock.sendall(f"GET /people?note={UPSTREAM_TOKEN}\r\n\r\n".encode())
        status, _, answer = read_answer(sock)
    assert status == 400 and "Invalid Request Line" in json.loads(answer)["detail"]
    assert UPSTREAM_TOKEN not in answer.decode()
    wait_for(lambda: "note=<hidden>" in served.log_text(), 30, "gunicorn's line for the request")
    assert UPSTREAM_TOKEN not in served.log_text()


def test_a_feed_of_pieces_larger_than_64_kib_arrives_whole(
    served: Connector, upstream: Upstream
) -> None:
    """The worker writes an answer in pieces of at most 64 KiB: cut and joined again, a
    feed of pages far larger than that (100 records of 2 KB a page) is every entity, in
    order."""
    records = [{"id": f"w-{n:05d}", "text": "y" * 2000} for n in range(1000)]
    upstream.insert("wide", records)
    response = requests.get(f"{served.url}/wide", timeout=120)
    assert response.status_code == 200
    assert [e["_id"] for e in response.json()] == [r["id"] for r in records]


def test_kept_alive_connections_that_stall_mid_head_hold_no_thread(connector_factory) -> None:
    """Four kept-alive connections begin their next request and stall, beside a worker of
    two threads: their heads are the event loop's to wait for, so a new client is answered
    at once, not after CLIENT_TIMEOUT (30 s here)."""
    few = connector_factory(WORKERS="1", THREADS="2", CLIENT_TIMEOUT="30")
    stalled = []
    try:
        for _ in range(4):
            sock = connect(few)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock)[0] == 200
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
            stalled.append(sock)
        assert requests.get(f"{few.url}/health", timeout=10).json() == {"status": "ok"}
    finally:
        for sock in stalled:
            sock.close()


LOOPBACK_TLS = ROOT / "service" / "tests" / "unit" / "loopback-tls.pem"


def test_with_tls_configured_in_gunicorn_the_stock_worker_serves(
    upstream_server: Upstream, tmp_path
) -> None:
    """The event loop cannot read a TLS head: with a certificate given to gunicorn, the
    worker keeps gthread's own way, and answers over https, kept-alive requests too."""
    port = free_port()
    log = tmp_path / "connector.log"
    env = connector_environment(upstream_server.url, port, tmp_path / "state")
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    tls = ["--certfile", str(LOOPBACK_TLS), "--keyfile", str(LOOPBACK_TLS)]
    command = [gunicorn, "-c", "service/gunicorn.conf.py", *tls, REFERENCE_APP]
    process = start(command, log=log, env=env)
    try:
        with requests.Session() as https:
            https.trust_env = False  # no CA bundle from the environment in place of ours
            https.verify = str(LOOPBACK_TLS)
            url = f"https://127.0.0.1:{port}"

            def up() -> bool:
                assert process.poll() is None, log.read_text(errors="replace")
                try:
                    return https.get(f"{url}/health", timeout=5).status_code == 200
                except requests.ConnectionError:
                    return False

            wait_for(up, 30, "the connector answering over https")
            for _ in range(2):  # the second on the kept-alive connection
                assert https.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    finally:
        stop(process, seconds=15)
