"""The sink when its own state, Sesam's framing or an overlapping sync is what goes wrong
(issue 18, items 6 and 7, and the sink's transfer codings), against the real server: the
reference connector under gunicorn in front of the hostile upstream.

Each test checks what Sesam gets (a 503, 409 or 415 before anything is written), what the
upstream saw (no write, or no delete of what the newest sync sent) and that ``/health``
answers throughout and afterwards.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.tests.functional.untrusted_upstream_kit import HealthWatch
from service.tests.functional.untrusted_upstream_kit import HostileConnector
from service.tests.functional.untrusted_upstream_kit import entries
from service.tests.functional.untrusted_upstream_kit import requests_to
from service.tests.functional.untrusted_upstream_kit import serving
from service.tests.hostile_kit import HostileUpstream
from service.tests.hostile_kit import rule

pytest_plugins = ["service.tests.hostile_kit"]

SINK_DEADLINE = 3  # UPSTREAM_SINK_DEADLINE: how long a held write holds its batch


@pytest.fixture(scope="module")
def connector(
    hostile_server: HostileUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileConnector]:
    with serving(
        hostile_server,
        tmp_path_factory.mktemp("sink"),
        FULL_SYNC_DELETE="true",
        UPSTREAM_SINK_DEADLINE=str(SINK_DEADLINE),
    ) as served:
        yield served


def full_sync(
    sequence: str,
    request: str,
    *,
    previous: str | None = None,
    first: bool = False,
    last: bool = False,
) -> dict[str, str]:
    """The push protocol's parameters of one full-sync request."""
    params = {
        "is_full": "true",
        "sequence_id": sequence,
        "request_id": request,
        "is_first": str(first).lower(),
        "is_last": str(last).lower(),
    }
    if previous is not None:
        params["previous_request_id"] = previous
    return params


def entities(*ids: str) -> list[dict[str, Any]]:
    return [{"_id": i, "name": i.upper()} for i in ids]


def live(hostile: HostileUpstream) -> set[str]:
    return {r["id"] for r in hostile.records("people") if not r["deleted"]}


def written(hostile: HostileUpstream, method: str) -> list[str]:
    """The ids ``method`` (PUT or DELETE) was asked for on main, in order."""
    return [e["path"].rsplit("/", 1)[1] for e in entries(hostile, method, listener="main")]


# --- the state directory ------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[None]:
    """A filesystem of 1 MiB mounted at ``path`` (root only: skipped elsewhere)."""
    path.mkdir(parents=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as error:
        pytest.skip(f"cannot mount a small filesystem here: {error}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def a_directory_in_its_place(state: Path) -> None:
    """Where the sequence database should be, a directory (a state volume gone wrong)."""
    for path in state.glob("sequences.sqlite3*"):
        path.unlink()
    (state / "sequences.sqlite3").mkdir()


def fill(state: Path) -> None:
    """No byte left on the state directory's filesystem."""
    with contextlib.suppress(OSError), open(state / "filler", "wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 512)


@pytest.mark.parametrize("full", [False, True], ids=["a directory in its place", "a full disk"])
def test_a_state_dir_that_cannot_be_written_is_a_503_before_the_upstream_is_written(
    hostile, tmp_path, full
):
    """Before issue 18, a 500; once, after the PUT had reached the upstream. The sink
    keeps a full sync's state before it writes: a state it cannot keep is a 503 (Sesam
    retries), and the upstream is not asked."""
    hostile.seed("people", [])
    state = tmp_path / "connector" / "state"  # the kit's STATE_DIR
    with contextlib.ExitStack() as stack:
        if full:
            stack.enter_context(small_filesystem(state))
        connector = stack.enter_context(
            serving(hostile, tmp_path / "connector", FULL_SYNC_DELETE="true")
        )
        (fill if full else a_directory_in_its_place)(state)
        sequence = str(uuid.uuid4())
        with HealthWatch(connector):
            response = connector.post(
                "people", params=full_sync(sequence, "r1", first=True), json=entities("a")
            )
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"  # seconds, as docs/sink.md says
        assert f"STATE_DIR={str(state)!r}" in response.json()["detail"]
        assert f"sink: the full-sync state at STATE_DIR={str(state)!r} failed" in (
            connector.log_text()
        )
        assert hostile.log() == []  # nothing written, nothing asked
        # An incremental batch keeps no state: it is still written.
        response = connector.post("people", params={"is_full": "false"}, json=entities("b"))
        assert response.status_code == 200, response.text
    assert live(hostile) == {"b"}


# --- two full syncs at once ---------------------------------------------------------------


def test_overlapping_full_syncs_never_delete_what_the_new_one_sent(hostile, connector):
    """Sequence A has begun; sequence B's first request is still writing (its last write
    held by the upstream) when A's last request arrives. Before issue 18 A's last request
    was accepted and its deletion detection deleted B's records. Now A gets 409, and B,
    retried as Sesam retries a failed batch, ends with all its records."""
    hostile.seed("people", [])
    a, b = f"A-{uuid.uuid4()}", f"B-{uuid.uuid4()}"
    first_a = connector.post(
        "people", params=full_sync(a, "a1", first=True), json=entities("a1", "a2")
    )
    assert first_a.status_code == 200, first_a.text

    hostile.set_rules(rule("hang", method="PUT", path="/people/b3"))
    answers: dict[str, requests.Response] = {}
    first_b = threading.Thread(
        target=lambda: answers.update(
            b1=connector.post(
                "people", params=full_sync(b, "b1", first=True), json=entities("b1", "b2", "b3")
            )
        )
    )
    with HealthWatch(connector):
        first_b.start()
        hostile.wait_for(
            lambda stats: any(c["action"] == "hang" for c in stats["open_connections"]),
            "B's write of b3 held",
        )
        hostile.wait_for(lambda _: live(hostile) >= {"b1", "b2"}, "B's other writes done")
        last_a = connector.post(
            "people", params=full_sync(a, "a2", previous="a1", last=True), json=entities("a3")
        )
        assert first_b.is_alive(), "B's first request ended before A's last one came"
        first_b.join()
    assert last_a.status_code == 409, last_a.text
    assert f"replaced by sequence {b!r}" in last_a.json()["detail"]
    assert answers["b1"].status_code == 504, answers["b1"].text  # the held write: retried
    assert written(hostile, "DELETE") == []
    assert "a3" not in written(hostile, "PUT")

    hostile.clear_rules()
    again = connector.post(
        "people", params=full_sync(b, "b1", first=True), json=entities("b1", "b2", "b3")
    )
    assert again.status_code == 200, again.text
    last_b = connector.post(
        "people", params=full_sync(b, "b2", previous="b1", last=True), json=entities("b4")
    )
    assert last_b.status_code == 200, last_b.text
    assert last_b.json()["full_sync"]["deleted_missing"] == 2
    assert sorted(written(hostile, "DELETE")) == ["a1", "a2"]  # never one of B's
    assert live(hostile) == {"b1", "b2", "b3", "b4"}


# --- Sesam's framing ------------------------------------------------------------------------


def test_a_batch_sent_with_a_gzip_transfer_coding_is_a_415_and_nothing_is_written(
    hostile, connector
):
    """The server takes off the chunking only: before issue 18 the still compressed body
    was read as the batch."""
    hostile.seed("people", [])
    body = gzip.compress(b'[{"_id": "g1", "name": "Gzipped"}]')
    request = (
        b"POST /people?is_full=false HTTP/1.1\r\nHost: connector\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n"
        b"Connection: close\r\n\r\n" + b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    host, port = connector.url.removeprefix("http://").split(":")
    with HealthWatch(connector), socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 415"), answer[:300]
    assert b"Transfer-Encoding: gzip, chunked" in text and b"nothing was written" in text
    assert requests_to(hostile, "PUT") == 0
    assert live(hostile) == set()


def test_a_batch_sent_compressed_is_a_415_and_nothing_is_written(hostile, connector):
    """``Content-Encoding: gzip``: the server hands the body on as it came, and the JSON
    parser would read the compressed bytes. ``identity`` (no coding) is written."""
    hostile.seed("people", [])
    body = gzip.compress(b'[{"_id": "g1", "name": "Gzipped"}]')
    headers = {"Content-Type": "application/json", "Content-Encoding": "GZip"}
    with HealthWatch(connector):
        response = connector.post("people", params={"is_full": "false"}, data=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith("the body is sent with Content-Encoding: gzip;")
    assert requests_to(hostile, "PUT") == 0
    plain = b'[{"_id": "i1", "name": "As it is"}]'
    headers["Content-Encoding"] = "identity"
    response = connector.post("people", params={"is_full": "false"}, data=plain, headers=headers)
    assert response.status_code == 200, response.text
    assert live(hostile) == {"i1"}
