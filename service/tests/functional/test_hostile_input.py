"""Broken and hostile input against the real server (gunicorn on loopback): every hole
issue 12 found is a 4xx with a JSON body, before anything is written."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from service.tests.framework_kit import REFERENCE_APP
from service.tests.framework_kit import ROOT
from service.tests.framework_kit import connector_environment
from service.tests.framework_kit import read_head
from service.tools.servers import free_port


def raw(url: str, data: bytes, *, then: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; answer (status, headers, body) of the response."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        if then:
            sock.sendall(then)
        status, headers, body = read_head(sock)
        length = int(headers.get("content-length", "-1"))
        while length >= 0 and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body


def writes(upstream) -> int:
    stats = upstream.stats()
    return stats.get("PUT", 0) + stats.get("DELETE", 0)


# --- bodies over the limit, however they are framed -----------------------------------------


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%X\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


POST_CHUNKED = (
    b"POST /people HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)


def test_a_chunked_body_over_the_limit_is_413_not_cut(connector_factory, upstream):
    """Werkzeug's limited stream stops at the limit without raising: a valid array followed
    by padding past the limit was written. It must be refused as with Content-Length."""
    connector = connector_factory(SINK_MAX_BODY_BYTES="2000")
    entity = b'[{"_id": "chunked-1", "name": "x"}]'
    status, _, body = raw(connector.url, POST_CHUNKED + chunked(entity, b" " * 4000))
    assert status == 413, body
    assert "SINK_MAX_BODY_BYTES (2000 bytes)" in json.loads(body)["detail"]
    assert writes(upstream) == 0


def test_a_chunked_body_under_the_limit_is_written(connector_factory, upstream):
    connector = connector_factory(SINK_MAX_BODY_BYTES="2000")
    entity = b'[{"_id": "chunked-2", "name": "x"}]'
    status, _, body = raw(connector.url, POST_CHUNKED + chunked(entity[:10], entity[10:]))
    assert status == 200, body
    assert "chunked-2" in upstream.live("people")


def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(connector_factory, upstream):
    connector = connector_factory(SINK_MAX_BODY_BYTES="2000")
    entity = b'[{"_id": "exact-1", "name": "x"}]'
    exact = entity + b" " * (2000 - len(entity))
    response = requests.post(f"{connector.url}/people", data=exact, timeout=30)
    assert response.status_code == 200, response.text
    response = requests.post(f"{connector.url}/people", data=exact + b" ", timeout=30)
    assert response.status_code == 413, response.text
    assert sorted(e for e in upstream.live("people") if e.startswith("exact")) == ["exact-1"]


def test_a_declared_length_over_the_limit_is_413_at_once_without_the_body(connector_factory):
    """Refused on its Content-Length, before any byte of the body is read and before it
    waits for room: a gigabyte declared is not held against WORKER_MEMORY_BUDGET (that
    would be a 503 after the admission wait, and Sesam would send it again)."""
    connector = connector_factory(SINK_MAX_BODY_BYTES="2000")
    head = (
        b"POST /people HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\nConnection: close\r\n\r\n"
    )
    status, _, body = raw(connector.url, head + b"[")
    assert status == 413, body
    assert "SINK_MAX_BODY_BYTES (2000 bytes)" in json.loads(body)["detail"]


def test_a_malformed_chunk_size_is_a_json_400_not_a_500(connector, upstream):
    before = len(connector.log_text())  # the session's connector: only this test's lines
    status, headers, body = raw(connector.url, POST_CHUNKED + b"zz\r\n[]\r\n0\r\n\r\n")
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "Bad Request"
    assert json.loads(body)["detail"].startswith("the body could not be read: ")
    assert "Traceback" not in connector.log_text()[before:]


def answer_of(sock: socket.socket) -> tuple[int, dict]:
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_body_shorter_than_its_length_is_a_400_even_when_what_came_is_json(connector, upstream):
    """The client went away after 18 of 50 bytes: what arrived is a valid batch, but not
    the batch that was sent, so nothing of it is written."""
    host, port = connector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /people HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 50\r\nConnection: close\r\n\r\n[{"_id": "cut-1"}]'
        )
        sock.shutdown(socket.SHUT_WR)
        status, answer = answer_of(sock)
    assert status == 400, answer
    assert answer["detail"] == "the body ended after 18 of its 50 bytes"
    assert writes(upstream) == 0


def test_a_body_that_trickles_in_past_client_timeout_is_a_408(connector_factory, upstream):
    """A byte every quarter second: no single read waits long, but the body as a whole
    takes longer than CLIENT_TIMEOUT (2 s here; the whole body would take 10 s)."""
    connector = connector_factory(CLIENT_TIMEOUT="2")
    body = b'[{"_id": "slow-1"}]'.ljust(40)
    host, port = connector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /people HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        answered = threading.Event()

        def trickle():
            for byte in body:
                if answered.wait(0.25):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return  # the server closed the connection: it has answered

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            status, answer = answer_of(sock)
        finally:
            answered.set()
            sender.join(30)
    assert status == 408, answer
    assert answer["detail"] == "the body did not arrive within CLIENT_TIMEOUT (2s)"
    assert writes(upstream) == 0


def test_the_transform_reads_its_body_as_the_sink_does(connector_factory, upstream):
    """Over the limit however framed 413, a broken chunk 400, a lone surrogate in _id 400:
    the same body rules as the sink's, and the upstream is asked nothing."""
    connector = connector_factory(SINK_MAX_BODY_BYTES="2000")
    post = POST_CHUNKED.replace(b"/people", b"/transform/people-record")
    asked = upstream.stats().get("GET", 0)
    entity = b'[{"_id": "p-1"}]'
    status, _, body = raw(connector.url, post + chunked(entity, b" " * 4000))
    assert status == 413, body
    assert "SINK_MAX_BODY_BYTES (2000 bytes)" in json.loads(body)["detail"]
    status, headers, body = raw(connector.url, post + b"zz\r\n[]\r\n0\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json", body
    status, _, body = raw(connector.url, post + chunked(entity[:8], entity[8:]))
    assert status == 200 and json.loads(body)[0]["_id"] == "p-1", body
    lone = b'[{"_id": "p-1"}, {"_id": "\\ud800"}]'
    response = requests.post(f"{connector.url}/transform/people-record", data=lone, timeout=30)
    assert response.status_code == 400, response.text
    assert "entity 1: _id" in response.json()["detail"]
    assert upstream.stats().get("GET", 0) == asked + 1  # only the one good batch's lookup


def test_the_sink_and_the_transform_share_one_budget_for_their_bodies(monkeypatch):
    """Bodies in flight are bounded per worker, not per endpoint: with the budget full,
    the sink and the transform both answer 503 with Retry-After, and neither reads."""
    from service.framework import memory
    from service.tools.reference import create_app

    monkeypatch.setattr(memory, "ADMISSION_WAIT_SECONDS", 0.2)
    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",
            "UPSTREAM_TOKEN": "test-token",
            "STATE_DIR": tempfile.mkdtemp(),
            "SINK_MAX_BODY_BYTES": "1000",
            "WORKER_MEMORY_BUDGET": "1048576",
        }
    )
    bodies = app.view_functions["sink"].__self__.bodies
    assert app.view_functions["transform"].__self__.bodies is bodies
    client = app.test_client()
    with bodies.budget.admit("a batch that fills the budget", base=1048576):
        for path in ("/people", "/transform/people-record"):
            response = client.post(path, data=b"[]")
            assert response.status_code == 503, (path, response.json)
            assert response.headers["Retry-After"] == "5"
            assert "of the WORKER_MEMORY_BUDGET of 1048576 are held" in response.json["detail"]
    assert client.post("/transform/people-record", data=b"[]").json == []


# --- ids --------------------------------------------------------------------------------------


def test_a_lone_surrogate_in_an_id_is_400_before_anything_is_written(connector, upstream):
    valid = [{"_id": f"fine-{i}", "name": "x"} for i in range(20)]
    body = json.dumps([*valid, {"_id": "\ud800", "name": "y"}]).encode()  # as \ud800
    response = requests.post(f"{connector.url}/people", data=body, timeout=30)
    assert response.status_code == 400, response.text
    assert "entity 20: _id" in response.json()["detail"]
    assert writes(upstream) == 0


def test_a_lone_surrogate_in_a_deleted_id_is_400_too(connector, upstream):
    body = b'[{"_id": "p-1", "_deleted": true}, {"_id": "\\udfff", "_deleted": true}]'
    response = requests.post(f"{connector.url}/people", data=body, timeout=30)
    assert response.status_code == 400, response.text
    assert writes(upstream) == 0


# --- authentication --------------------------------------------------------------------------


def test_raw_non_ascii_bytes_in_authorization_are_401_with_one_log_line(connector_factory):
    connector = connector_factory(AUTH_USERNAME="sesam", AUTH_PASSWORD="pw-s3cr3t")
    before = len(connector.log_text().splitlines())
    for value in (b"Basic \xc3\xa6\xff\xfe", b"Basic \xff", b"\xff\xfe"):
        status, headers, body = raw(
            connector.url,
            b"GET /people HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
            + value
            + b"\r\n\r\n",
        )
        assert status == 401, body
        assert headers["www-authenticate"].startswith("Basic")
        assert json.loads(body)["error"] == "Unauthorized"
    # one access-log line per request: no traceback, no flood
    wait = time.monotonic() + 10
    while len(connector.log_text().splitlines()) < before + 3 and time.monotonic() < wait:
        time.sleep(0.05)
    added = connector.log_text().splitlines()[before:]
    assert len(added) <= 3 * 2, added
    assert "Traceback" not in "\n".join(added)


def test_an_unexpected_error_is_one_json_500_and_one_traceback(caplog):
    """The catch-all handler answers JSON and does not itself raise (a second traceback)."""
    from service.tools.reference import create_app

    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",
            "UPSTREAM_TOKEN": "test-token",
            "STATE_DIR": tempfile.mkdtemp(),
        }
    )

    @app.before_request
    def explode() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level("ERROR"):
        response = app.test_client().get("/people")
    assert response.status_code == 500
    assert response.json == {
        "error": "Internal Server Error",
        "detail": "the connector failed; see its log",
    }
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["unhandled error"]


# --- since and limit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-13-45T99:99:99.000000Z"},
        {"since": "2026-02-30T00:00:00.000000Z"},
        {"since": "0000-01-01T00:00:00.000000Z"},
        {"since": "0000-01-01T00:00:00.000000Z_7031"},
        {"since": "٢٠٢٦-01-01T00:00:00.000000Z"},
        {"since": "2026-01-01T00:00:00.00000０Z"},
        {"limit": "５"},
        {"limit": "²"},
    ],
)
def test_impossible_dates_and_non_ascii_digits_are_400_and_never_reach_the_upstream(
    connector, upstream, params
):
    before = upstream.stats().get("GET", 0)
    response = connector.get("people", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "Bad Request"
    assert upstream.stats().get("GET", 0) == before


# --- errors gunicorn answers itself ----------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(120))
            + b"\r\n",
            431,
        ),
        (b"NOT A REQUEST LINE\r\n\r\n", 400),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    ],
)
def test_errors_gunicorn_answers_itself_are_json(connector, request_bytes, status):
    got, headers, body = raw(connector.url, request_bytes)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"error", "detail"}


# --- start-up --------------------------------------------------------------------------------


def test_an_upstream_url_with_credentials_is_refused_at_start_with_one_line(tmp_path, upstream):
    env = connector_environment(
        "https://someone:pa55-s3cr3t@records.example", free_port(), tmp_path / "state"
    )
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "-c", "service/gunicorn.conf.py", REFERENCE_APP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    output = (result.stdout + result.stderr).strip()
    assert output.splitlines() == [
        "configuration error: UPSTREAM_URL='https://***@records.example' must not hold "
        "credentials (user:password@): use the token setting"
    ]
    assert "pa55-s3cr3t" not in output and "someone" not in output


def test_each_instance_has_its_own_control_socket(connector_factory):
    """gunicorn 25+ opens a control socket at one path per user by default: stopping one
    instance removed the socket of every other on the machine."""
    first = control_socket(connector_factory())
    second = control_socket(connector_factory())
    assert first != second and os.path.exists(first) and os.path.exists(second)
    master = int(re.search(r"gunicorn-(\d+)\.ctl$", first).group(1))
    os.kill(master, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while os.path.exists(first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(first)
    assert os.path.exists(second)


def control_socket(connector) -> str:
    """The path the master logs once its control socket listens (soon after start-up)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"Control socket listening at (\S+)", connector.log_text())
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise AssertionError(connector.log_text()[-2000:])
