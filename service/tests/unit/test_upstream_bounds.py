"""The upstream client against answers it must not believe (issue 18): every answer is
bounded in bytes (on the wire and inflated) and in time (the whole request, not each
read), and a write is never sent on by a redirect.

The upstream is a socket server on loopback that writes exactly the bytes each test
gives it, at the pace it says: a real server, since these are faults of the wire.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from service.framework import deadlines
from service.framework import memory
from service.framework.upstream import UpstreamClient
from service.framework.upstream_auth import OAuth2ClientCredentials
from service.framework.upstream_errors import AnswerTooLarge
from service.framework.upstream_errors import UpstreamError
from service.framework.upstream_errors import UpstreamTimeout
from service.tests.unit.keepalive_upstream import KeepAliveUpstream
from service.tests.unit.keepalive_upstream import keepalive_upstream

Answer = Callable[[socket.socket, bytes], None]


class RawUpstream:
    """Accepts connections; each request is answered by ``answer(sock, request_bytes)``,
    taken in turn from ``answers`` (the last one repeats). With ``tls`` (a server context)
    it is an https upstream: the answers write into the TLS connection."""

    def __init__(self, *answers: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.tls = tls
        self.requests: list[bytes] = []
        self.closed_by_client = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(sock,), daemon=True).start()

    def handle(self, plain: socket.socket) -> None:
        with plain, contextlib.ExitStack() as tls:
            sock = plain
            if self.tls is not None:
                try:
                    sock = tls.enter_context(self.tls.wrap_socket(plain, server_side=True))
                except OSError:
                    return
            head = b""
            while b"\r\n\r\n" not in head:
                piece = sock.recv(65536)
                if not piece:
                    return
                head += piece
            self.requests.append(head)
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            try:
                answer(sock, head)
                sock.shutdown(socket.SHUT_WR)  # a graceful close: no reset of what is unread
                sock.settimeout(5)
                while sock.recv(65536):
                    pass
            except OSError:
                self.closed_by_client.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_upstream() -> Iterator[Callable[..., RawUpstream]]:
    servers: list[RawUpstream] = []

    def start(*answers: Answer, tls: bool = False) -> RawUpstream:
        """``tls``: an https upstream with the loopback certificate (LOOPBACK_TLS)."""
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(LOOPBACK_TLS)
        servers.append(RawUpstream(*answers, tls=context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def fixed(status: int, body: bytes, **headers: str) -> Answer:
    def answer(sock: socket.socket, _: bytes) -> None:
        lines = [
            f"HTTP/1.1 {status} X",
            *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
        ]
        if "Content_Length" not in headers and "Transfer_Encoding" not in headers:
            lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return answer


def trickle(data: bytes, interval: float) -> Answer:
    """``data`` (head and body) a byte at a time, ``interval`` seconds apart."""

    def answer(sock: socket.socket, _: bytes) -> None:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(interval)

    return answer


def endless(status: int, head: str = "") -> Answer:
    def answer(sock: socket.socket, _: bytes) -> None:
        sock.sendall(f"HTTP/1.1 {status} X\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = b" " * 65536
        chunk = b"%X\r\n%s\r\n" % (len(piece), piece)
        while True:
            sock.sendall(chunk)

    return answer


PAGE = b'{"data": [], "next_cursor": null}'


def client(url: str, **kwargs) -> UpstreamClient:
    kwargs.setdefault("retries", 0)
    return UpstreamClient(url, "test-token-4b5c", **kwargs)


def follower(url: str) -> UpstreamClient:
    """A client for redirects: urllib3 pools the connection of an answer without a body
    as soon as it has read its head, before this server's close reaches it, so the next
    request may go out on it and fail at once; one retry of the connection covers that."""
    return client(url, retries=1, backoff_factor=0)


# --- bytes ------------------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_after_the_limit_not_inflated(raw_upstream):
    inflated = 64 * 1024 * 1024
    bomb = gzip.compress(b'{"data": [' + b" " * inflated, compresslevel=9)
    upstream = raw_upstream(fixed(200, bomb, Content_Encoding="gzip"))
    with pytest.raises(AnswerTooLarge, match=r"UPSTREAM_MAX_ANSWER_BYTES \(1048576 bytes"):
        client(upstream.url, max_answer_bytes=1 << 20).get_json(f"{upstream.url}/people")
    assert len(bomb) < 200_000  # what was sent: a small body that inflates 300-fold


def test_a_declared_length_over_the_limit_is_refused_before_it_is_read(raw_upstream):
    upstream = raw_upstream(fixed(200, b"", Content_Length=str(200 * 1024 * 1024)))
    started = time.monotonic()
    with pytest.raises(AnswerTooLarge, match="UPSTREAM_MAX_ANSWER_BYTES"):
        client(upstream.url, max_answer_bytes=1 << 20).get_json(f"{upstream.url}/people")
    assert time.monotonic() - started < 10  # nothing of the 200 MB was waited for


def test_an_endless_chunked_body_is_cut_at_the_limit(raw_upstream):
    upstream = raw_upstream(endless(200))
    reader = client(upstream.url, max_answer_bytes=1 << 20)  # alive: its pool too
    with pytest.raises(AnswerTooLarge) as raised:
        reader.get_json(f"{upstream.url}/people")
    # closed at once, even while the failure is held (a broken request's traceback is a
    # cycle that lives until the collector runs)
    assert upstream.closed_by_client.wait(10), "the connection was not closed"
    assert raised.value


def test_an_endless_chunked_body_that_declares_a_small_length_is_cut_at_the_limit_too(
    raw_upstream,
):
    """Chunked framing wins over a Content-Length (HTTP says so): the length is no bound."""
    upstream = raw_upstream(endless(200, "Content-Length: 40\r\n"))
    reader = client(upstream.url, max_answer_bytes=1 << 20)
    with pytest.raises(AnswerTooLarge) as raised:
        reader.get_json(f"{upstream.url}/people")
    assert upstream.closed_by_client.wait(10), "the connection was not closed"
    assert raised.value


def test_an_answer_of_exactly_the_limit_is_read(raw_upstream):
    body = PAGE + b" " * (4096 - len(PAGE))
    for framing in ({}, {"Transfer_Encoding": "chunked"}):
        data = b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body) if framing else body
        upstream = raw_upstream(fixed(200, data, **framing))
        assert client(upstream.url, max_answer_bytes=4096).get_json(upstream.url) == {
            "data": [],
            "next_cursor": None,
        }
        upstream = raw_upstream(fixed(200, data + (b"" if framing else b" ")))
        if not framing:
            with pytest.raises(AnswerTooLarge):
                client(upstream.url, max_answer_bytes=len(body)).get_json(upstream.url)


def framed_page(_upstream: KeepAliveUpstream, request: http.server.BaseHTTPRequestHandler):
    """The page with a Content-Length, or chunked, or gzipped, as the path ends."""
    if request.path.endswith("chunked"):
        return 200, {"Transfer-Encoding": "chunked"}, b"%X\r\n%s\r\n0\r\n\r\n" % (len(PAGE), PAGE)
    if request.path.endswith("gzip"):
        return 200, {"Content-Encoding": "gzip"}, gzip.compress(PAGE)
    return 200, {}, PAGE


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
def test_pages_read_whole_keep_their_connection_for_the_next_request(framing):
    """An upstream sees one connection for a whole walk, not one per page."""
    with keepalive_upstream(framed_page) as upstream:
        reader = client(upstream.url)
        for _ in range(3):
            assert reader.get_json(f"{upstream.url}/people/{framing}")["data"] == []
        assert upstream.connections == 1


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (fixed(200, b'5\r\n{"dat\r\nZZ\r\n', Transfer_Encoding="chunked"), "ProtocolError"),
        (fixed(200, b"not gzip at all", Content_Encoding="gzip"), "DecodeError"),
    ],
)
def test_a_body_broken_on_the_wire_is_an_unreachable_upstream_not_an_empty_page(
    raw_upstream, answer, named
):
    upstream = raw_upstream(answer)
    with pytest.raises(UpstreamError, match=f"upstream unreachable after retries: .*: {named}"):
        client(upstream.url).get_json(upstream.url)


def test_a_body_that_stalls_past_the_read_timeout_is_a_timeout_not_an_empty_page(raw_upstream):
    stalled = threading.Event()

    def half(sock: socket.socket, _: bytes) -> None:
        sock.sendall(b"HTTP/1.1 200 X\r\nContent-Length: 100\r\n\r\n" + PAGE[:10])
        stalled.wait(30)  # until the test ends

    upstream = raw_upstream(half)
    try:
        with pytest.raises(UpstreamTimeout, match="upstream timed out after retries"):
            client(upstream.url, read_timeout=0.5).get_json(upstream.url)
    finally:
        stalled.set()


def test_a_call_may_ask_for_a_smaller_limit(raw_upstream):
    upstream = raw_upstream(fixed(200, b'{"id": "' + b"x" * 5000 + b'"}'))
    with pytest.raises(AnswerTooLarge, match=r"answer to GET .*/people/x .*\(1024 bytes"):
        client(upstream.url).request("GET", f"{upstream.url}/people/x", max_bytes=1024)


def test_an_error_with_an_endless_body_fails_at_once_with_its_status(raw_upstream):
    upstream = raw_upstream(endless(503))
    reader = client(upstream.url)  # alive: a connection left in its pool would stay open
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="upstream answered 503") as raised:
        reader.get_json(f"{upstream.url}/people")
    assert time.monotonic() - started < 10
    # closed, not pooled with the rest of the body unread
    assert upstream.closed_by_client.wait(10), "the connection was not closed"
    assert raised.value


def test_a_retried_error_with_an_endless_body_is_not_drained(raw_upstream):
    """urllib3 reads an error's whole body before it retries: an endless one, for ever."""
    upstream = raw_upstream(endless(503), fixed(200, PAGE))
    started = time.monotonic()
    assert client(upstream.url, retries=1, backoff_factor=0).get_json(upstream.url)["data"] == []
    assert time.monotonic() - started < 10
    assert len(upstream.requests) == 2


def test_the_answer_counts_against_the_request_being_served(raw_upstream):
    body = b'{"data": [' + b",".join([b"{}"] * 1000) + b"]}"
    upstream = raw_upstream(fixed(200, body))
    budget = memory.MemoryBudget(10 * 1024 * 1024, slots=4)
    with budget.admit("a feed", holds=3) as ledger:
        client(upstream.url).get_json(upstream.url)
        assert ledger.reserved == 3 * memory.estimate(body) == budget.held
    assert budget.held == 0


# --- time -------------------------------------------------------------------------------------


def test_an_upstream_that_trickles_its_answer_is_cut_at_the_deadline(raw_upstream):
    """A byte every 0.2 s never trips a 5 s read timeout; the deadline ends it."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PAGE), PAGE)
    upstream = raw_upstream(trickle(answer, 0.2))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"UPSTREAM_REQUEST_DEADLINE \(2s\)"):
        client(upstream.url, read_timeout=5, deadline=2).get_json(upstream.url)
    assert time.monotonic() - started < 4


def test_a_trickled_head_is_cut_at_the_deadline_too(raw_upstream):
    upstream = raw_upstream(trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1000, 0.1))
    with pytest.raises(UpstreamTimeout, match="no complete answer in time"):
        client(upstream.url, read_timeout=5, deadline=1.5).get_json(upstream.url)


def test_an_enclosing_deadline_ends_a_request_sooner_and_is_named(raw_upstream):
    upstream = raw_upstream(trickle(b"HTTP/1.1 200 OK\r\n" + b"x" * 1000, 0.1))
    with deadlines.deadline(1, "UPSTREAM_SINK_DEADLINE (1s)"):
        with pytest.raises(UpstreamTimeout, match=r"UPSTREAM_SINK_DEADLINE \(1s\)"):
            client(upstream.url, deadline=60).get_json(upstream.url)


def test_retries_end_at_the_deadline_not_after_their_budget(raw_upstream):
    """The wait before a fourth try would pass the deadline: the third answer is the
    failure, at once, rather than a wait until the deadline cuts the request."""
    upstream = raw_upstream(fixed(503, b"{}", Retry_After="1"))
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"^upstream answered 503 to GET http"):
        client(upstream.url, retries=50, retry_budget=600, deadline=2.5).get_json(upstream.url)
    assert time.monotonic() - started < 4
    assert len(upstream.requests) <= 3  # the next wait would pass the deadline: no more


def test_a_retry_after_that_fills_the_retry_budget_exactly_is_waited(raw_upstream):
    upstream = raw_upstream(fixed(503, b"{}", Retry_After="1"), fixed(200, PAGE))
    reader = client(upstream.url, retries=1, retry_budget=1)
    assert reader.get_json(upstream.url)["data"] == []
    assert len(upstream.requests) == 2


def test_a_retry_after_date_past_the_retry_budget_is_not_waited_for(raw_upstream):
    """An HTTP date an hour ahead: no retry, and no backoff in its place."""
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
    upstream = raw_upstream(fixed(503, b"{}", Retry_After=later))
    with pytest.raises(UpstreamError):
        client(upstream.url, retries=3, backoff_factor=0).get_json(upstream.url)
    assert len(upstream.requests) == 1


def test_a_cut_scope_ends_the_read_in_flight(raw_upstream):
    upstream = raw_upstream(trickle(b"HTTP/1.1 200 OK\r\n" + b"x" * 1000, 0.1))
    scope = deadlines.Deadline(float("inf"), "the feed")
    failed = []

    def read() -> None:
        deadlines.bind(scope)
        try:
            client(upstream.url, deadline=60).get_json(upstream.url)
        except UpstreamError as error:
            failed.append(error)

    import contextvars

    thread = threading.Thread(target=contextvars.Context().run, args=(read,))
    thread.start()
    upstream_seen = time.monotonic() + 10
    while not upstream.requests and time.monotonic() < upstream_seen:
        time.sleep(0.01)
    scope.cut("the client has gone")
    thread.join(5)
    assert not thread.is_alive(), "the read went on after the scope was cut"
    assert "the client has gone" in str(failed[0])


def test_a_cut_scope_ends_a_retrys_wait_at_once(raw_upstream):
    """Sesam has gone while the upstream asked for 30 s of patience: no request waits."""
    upstream = raw_upstream(fixed(503, b"{}", Retry_After="30"))
    scope = deadlines.Deadline(float("inf"), "the feed")
    failed = []

    def read() -> None:
        deadlines.bind(scope)
        try:
            client(upstream.url, retries=1, retry_budget=600, deadline=60).get_json(upstream.url)
        except UpstreamError as error:
            failed.append(error)

    import contextvars

    thread = threading.Thread(target=contextvars.Context().run, args=(read,))
    thread.start()
    upstream_seen = time.monotonic() + 10
    while not upstream.requests and time.monotonic() < upstream_seen:
        time.sleep(0.01)
    scope.cut("the client has gone")
    thread.join(15)
    assert not thread.is_alive(), "the retry waited on after the scope was cut"
    assert "the client has gone" in str(failed[0])
    assert len(upstream.requests) == 1


def test_a_request_begun_in_a_cut_scope_is_not_sent(raw_upstream):
    """Sesam went away before the next page was asked for: the upstream is not asked."""
    upstream = raw_upstream(fixed(200, PAGE))
    scope = deadlines.Deadline(float("inf"), "the feed")
    scope.cut("the client has gone")
    failed = []

    def read() -> None:
        deadlines.bind(scope)
        try:
            client(upstream.url, deadline=60).get_json(upstream.url)
        except UpstreamError as error:
            failed.append(error)

    import contextvars

    contextvars.Context().run(read)
    assert "the client has gone" in str(failed[0])
    assert upstream.requests == []


# --- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_write_is_a_failure_naming_the_location(raw_upstream, status):
    upstream = raw_upstream(fixed(status, b"", Location="http://elsewhere.example/people/p-1"))
    with pytest.raises(UpstreamError) as failed:
        client(upstream.url).request(
            "PUT", f"{upstream.url}/people/p-1", json_body={"n": 1}, ok=(200, 201, 204)
        )
    assert f"answered {status} to PUT" in str(failed.value)
    assert "http://elsewhere.example/people/p-1" in str(failed.value)
    assert "nothing was written" in str(failed.value)
    assert len(upstream.requests) == 1


def test_a_read_follows_a_redirect_within_the_origin(raw_upstream):
    upstream = raw_upstream(fixed(301, b"", Location="/v2/people"), fixed(200, PAGE))
    assert follower(upstream.url).get_json(f"{upstream.url}/people")["data"] == []
    assert upstream.requests[1].startswith(b"GET /v2/people ")
    assert b"Authorization: Bearer test-token-4b5c" in upstream.requests[1]


def test_a_head_request_follows_a_redirect_within_the_origin_too(raw_upstream):
    upstream = raw_upstream(fixed(301, b"", Location="/v2/people"), fixed(200, b""))
    assert follower(upstream.url).request("HEAD", f"{upstream.url}/people").status_code == 200
    assert upstream.requests[1].startswith(b"HEAD /v2/people ")


def test_an_errors_text_is_read_up_to_64_kib(raw_upstream):
    """What is read of an error answer is its text, not a flood: 64 KiB, then cut."""

    def error(size: int) -> bytes:
        head = b'{"error": "the index is rebuilding", "pad": "'
        return head + b" " * (size - len(head) - 2) + b'"}'

    upstream = raw_upstream(fixed(500, error(65536)), fixed(500, error(65537)))
    with pytest.raises(UpstreamError, match=": the index is rebuilding$"):
        client(upstream.url).get_json(upstream.url)
    with pytest.raises(UpstreamError) as raised:
        client(upstream.url).get_json(upstream.url)
    assert "rebuilding" not in str(raised.value)  # cut: no JSON, so no text of it


def test_a_read_redirected_to_another_port_is_not_followed(raw_upstream):
    other = raw_upstream(fixed(200, PAGE))
    upstream = raw_upstream(fixed(302, b"", Location=f"{other.url}/people"))
    with pytest.raises(UpstreamError, match="another origin"):
        follower(upstream.url).get_json(f"{upstream.url}/people")
    assert other.requests == []


def test_a_redirect_loop_within_the_origin_ends(raw_upstream):
    upstream = raw_upstream(fixed(302, b"", Location="/people"))
    with pytest.raises(UpstreamError, match="more than 5 times"):
        follower(upstream.url).get_json(f"{upstream.url}/people")
    assert len(upstream.requests) == 6


# --- TLS --------------------------------------------------------------------------------------

#: A self-signed certificate for 127.0.0.1 (valid until 2126) and its key: the test's own.
LOOPBACK_TLS = Path(__file__).with_name("loopback-tls.pem")


def broken_tls_record(sock: socket.socket, _head: bytes) -> None:
    """A head and the start of a body, then bytes on the wire outside TLS: the client's
    TLS layer fails mid-body (a bad record)."""
    sock.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"data": [')
    os.write(sock.fileno(), b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    sock.recv(1)  # until the client gives up


def test_a_tls_answer_broken_mid_body_is_an_unreachable_upstream_not_an_empty_page(
    raw_upstream,
):
    upstream = raw_upstream(broken_tls_record, tls=True)
    reader = client(upstream.url)
    reader.session.verify = str(LOOPBACK_TLS)
    with pytest.raises(UpstreamError, match=r"upstream unreachable after retries: .*SSLError"):
        reader.get_json(f"{upstream.url}/people")


def test_every_request_asks_for_json(raw_upstream):
    upstream = raw_upstream(fixed(200, PAGE))
    client(upstream.url).get_json(f"{upstream.url}/people")
    assert b"\r\nAccept: application/json\r\n" in upstream.requests[0]


@pytest.mark.parametrize("body", [b"<html>busy</html>", b'{"message": "busy"}', b'{"error": 7}'])
def test_an_error_without_an_error_text_of_its_own_is_named_by_its_status_alone(raw_upstream, body):
    upstream = raw_upstream(fixed(500, body))
    with pytest.raises(UpstreamError) as raised:
        client(upstream.url).get_json(f"{upstream.url}/people")
    assert str(raised.value) == f"upstream answered 500 to GET {upstream.url}/people"


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_an_https_upstream_signed_by_the_ca_the_environment_names_is_trusted(
    monkeypatch, raw_upstream, variable
):
    """A company's own CA, named the way requests reads it (``REQUESTS_CA_BUNDLE``, or
    curl's ``CURL_CA_BUNDLE``): the client reads the environment once, with requests'
    own reading turned off, and keeps it. And an https upstream gets the client's retries
    (its adapter), as a plain one does: a 503 is asked again."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv(variable, str(LOOPBACK_TLS))
    upstream = raw_upstream(fixed(503, b"busy"), fixed(200, PAGE), tls=True)
    reader = client(upstream.url, retries=1, backoff_factor=0)
    assert reader.get_json(f"{upstream.url}/people") == {"data": [], "next_cursor": None}
    assert len(upstream.requests) == 2


def test_a_ca_a_fork_pins_on_the_client_is_not_replaced_by_the_environments(
    monkeypatch, raw_upstream
):
    """A fork that pins its upstream's CA (``client.session.verify``) keeps it on a node
    whose environment names another bundle: requests, reading the environment on every
    request, would put ``REQUESTS_CA_BUNDLE`` in its place."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # public CAs only
    upstream = raw_upstream(fixed(200, PAGE), tls=True)
    reader = client(upstream.url)
    reader.session.verify = str(LOOPBACK_TLS)
    assert reader.get_json(f"{upstream.url}/people") == {"data": [], "next_cursor": None}


def test_an_https_upstream_whose_certificate_no_known_ca_signed_is_refused(
    monkeypatch, raw_upstream
):
    """With no CA bundle in the environment, an https upstream is checked against the
    public CAs: one whose certificate is its own (a stand-in for a man in the middle) is
    not read, and the token is not sent to it."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    upstream = raw_upstream(fixed(200, PAGE), tls=True)
    with pytest.raises(UpstreamError, match="unreachable after retries: .*: SSLError"):
        client(upstream.url).get_json(f"{upstream.url}/people")
    assert upstream.requests == []


def endless_redirect(sock: socket.socket, _head: bytes) -> None:
    """A redirect whose body never ends."""
    sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: /people/moved\r\n")
    sock.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
    while True:
        sock.sendall(b"2000\r\n" + b" " * 0x2000 + b"\r\n")


def test_a_redirect_with_an_endless_body_is_closed_and_the_read_goes_on(raw_upstream):
    """Before 2.0.1 requests read a redirect's whole body into memory even with redirects
    off (to offer ``Response.next``): an endless one held the request until its deadline,
    growing. Its body is not read, its connection is closed before the read goes on."""
    closed_first: list[bool] = []

    def page_once_the_redirect_is_closed(sock: socket.socket, head: bytes) -> None:
        closed_first.append(upstream.closed_by_client.wait(10))
        fixed(200, PAGE)(sock, head)

    upstream = raw_upstream(endless_redirect, page_once_the_redirect_is_closed)
    reader = follower(upstream.url)
    assert reader.get_json(f"{upstream.url}/people") == {"data": [], "next_cursor": None}
    assert closed_first == [True]


def test_a_token_endpoints_redirect_with_an_endless_body_fails_the_token_at_once(
    raw_upstream,
):
    """A token request is never sent on, and the redirect's body is not read."""
    upstream = raw_upstream(endless_redirect)
    tokens = OAuth2ClientCredentials(f"{upstream.url}/token", "connector", "s3cret-9f1e")
    with pytest.raises(UpstreamError, match="larger than the token answer's limit"):
        tokens.token()
    assert upstream.closed_by_client.wait(10)


def test_a_closed_client_closes_the_connections_it_kept():
    with keepalive_upstream(framed_page) as upstream:
        reader = client(upstream.url)
        assert reader.get_json(f"{upstream.url}/people")["data"] == []
        reader.close()
        assert upstream.ended.wait(10), "the kept connection is still open"
