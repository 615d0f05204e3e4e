"""The hostile upstream does what each rule says, at the byte level, measured from a raw
socket or requests; and by default it is a correct Records API. The connector's tests rely
on both: a hostile case that did not happen would pass them for nothing."""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import time
import zlib
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("service.tests.hostile_kit")
pytest_plugins = ["service.tests.hostile_kit"]  # its fixtures: hostile_server, hostile

from service.tests.framework_kit import read_head  # noqa: E402
from service.tests.hostile_kit import HOSTILE_CLIENT_ID  # noqa: E402
from service.tests.hostile_kit import HOSTILE_CLIENT_SECRET  # noqa: E402
from service.tests.hostile_kit import LISTENING  # noqa: E402
from service.tests.hostile_kit import HostileUpstream  # noqa: E402
from service.tests.hostile_kit import header  # noqa: E402
from service.tests.hostile_kit import hostile_upstream_command  # noqa: E402
from service.tests.hostile_kit import rule  # noqa: E402
from service.tools.servers import start  # noqa: E402
from service.tools.servers import stop  # noqa: E402
from service.tools.servers import wait_until  # noqa: E402
from service.tools.servers import wait_until_up  # noqa: E402

MIB = 1 << 20
TIME = "2026-03-01T12:00:00.000000Z"


# --- raw HTTP ------------------------------------------------------------------------------


def connect(url: str, target: str, *, method: str = "GET", headers: str = "") -> socket.socket:
    """A socket that has sent one request and nothing more."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def read_exactly(sock: socket.socket, already: bytes, size: int) -> bytes:
    chunks, have = [already], len(already)
    while have < size:
        data = sock.recv(min(1 << 20, size - have))
        assert data, f"closed after {have} of {size} bytes"
        chunks.append(data)
        have += len(data)
    return b"".join(chunks)


def dechunk(body: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        at = end + 4 + size


def get(hostile: HostileUpstream, target: str, **kwargs: Any) -> requests.Response:
    return hostile.api("GET", target, **kwargs)


def hanging(hostile: HostileUpstream) -> list[dict[str, Any]]:
    """The open connections a hang holds, once there is one (its request read)."""
    return hostile.wait_for(
        lambda stats: [c for c in stats["open_connections"] if c["action"] == "hang"],
        "a connection held by a hang",
    )


# --- the default: a correct Records API --------------------------------------------------


def walk(hostile: HostileUpstream, query: str) -> tuple[list[dict[str, Any]], int]:
    """Every record of a list walk with ``query``, and the number of pages."""
    records, cursor, pages = [], None, 0
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        response = get(hostile, f"people?{query}{suffix}")
        assert response.status_code == 200, response.text
        page = response.json()
        records += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return records, pages


def test_pages_walk_thousands_of_tied_records_in_order_without_loss(hostile):
    tied = [{"id": f"t-{n:04d}", "updated_at": TIME} for n in range(250)]
    early = [{"id": f"e-{n}", "updated_at": f"2026-01-0{n + 1}T00:00:00.000000Z"} for n in range(3)]
    tombstone = {"id": "gone", "updated_at": TIME, "deleted": True}
    hostile.seed("people", [*reversed(tied), *early, tombstone])

    records, pages = walk(hostile, "limit=100")

    assert [r["id"] for r in records] == [r["id"] for r in early + tied]
    assert pages == 3
    assert all(r["deleted"] is False for r in records)


def test_a_full_last_page_may_still_name_no_cursor_and_a_cursor_binds_its_parameters(hostile):
    hostile.seed("people", [{"id": f"p-{n}", "updated_at": TIME} for n in range(4)])
    full = get(hostile, "people?limit=4").json()
    assert len(full["data"]) == 4 and full["next_cursor"] is None
    first = get(hostile, "people?limit=2").json()
    assert get(hostile, f"people?limit=3&cursor={first['next_cursor']}").status_code == 400
    assert get(hostile, "people?cursor=garbage").status_code == 400


def test_updated_since_is_inclusive_and_brings_tombstones(hostile):
    times = [f"2026-03-0{day}T00:00:00.000000Z" for day in (1, 2, 3)]
    hostile.seed(
        "people",
        [
            {"id": "a", "updated_at": times[0]},
            {"id": "b", "updated_at": times[1], "deleted": True},
            {"id": "c", "updated_at": times[1]},
            {"id": "d", "updated_at": times[2]},
        ],
    )
    records, _ = walk(hostile, f"limit=1&updated_since={times[1]}")
    assert [(r["id"], r["deleted"]) for r in records] == [("b", True), ("c", False), ("d", False)]
    live, _ = walk(hostile, "limit=10")
    assert [r["id"] for r in live] == ["a", "c", "d"]
    assert get(hostile, "people?updated_since=2026-03-01").status_code == 400


@pytest.mark.parametrize("limit", ["0", "1001", "ten", ""])
def test_a_limit_outside_1_to_1000_is_a_400(hostile, limit):
    hostile.seed("people", [])
    response = get(hostile, f"people?limit={limit}")
    assert response.status_code == 400 and "limit" in response.json()["error"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic aG9zdGlsZQ==", "Bearer"])
def test_without_the_token_every_request_is_a_401_with_a_json_error(hostile, authorization):
    hostile.seed("people", [{"id": "a"}])
    response = get(hostile, "people", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "error" in response.json()
    assert get(hostile, "people/a", headers={"Authorization": authorization}).status_code == 401


def test_read_write_and_delete_a_record_whose_id_holds_any_character(hostile):
    hostile.seed("people", [])
    record_id = "a/b?c#d% é"
    path = "people/" + requests.utils.quote(record_id, safe="")
    written = hostile.api("PUT", path, json={"name": "Ada", "id": "x", "deleted": True}).json()
    assert written["id"] == record_id and written["name"] == "Ada" and written["deleted"] is False
    assert get(hostile, path).json() == written
    assert hostile.api("PUT", path, data=b"[1]").status_code == 400
    assert hostile.api("DELETE", path).status_code == 204
    assert get(hostile, path).status_code == 404
    assert hostile.api("DELETE", path).status_code == 404
    (tombstone,) = hostile.records("people")
    assert tombstone["deleted"] is True and tombstone["updated_at"] > written["updated_at"]
    assert get(hostile, "nobody").status_code == 404
    assert hostile.api("PUT", "nobody/x", json={}).status_code == 404


def test_seeding_keeps_ids_and_gives_a_batch_without_times_one_time(hostile):
    assert hostile.seed("people", [{"id": "b"}, {"id": "a", "name": "Ada"}]) == 2
    first, second = hostile.records("people")
    assert (first["id"], second["id"]) == ("a", "b")
    assert first["updated_at"] == second["updated_at"]
    assert first == {"id": "a", "updated_at": first["updated_at"], "deleted": False, "name": "Ada"}


def test_oauth_tokens_from_basic_or_form_credentials_are_accepted_until_revoked(hostile):
    hostile.seed("people", [{"id": "a"}])
    token_url = f"{hostile.url}/oauth/token"
    grant = {"grant_type": "client_credentials"}
    by_basic = requests.post(
        token_url, data=grant, auth=(HOSTILE_CLIENT_ID, HOSTILE_CLIENT_SECRET), timeout=10
    )
    by_form = requests.post(
        token_url,
        data={**grant, "client_id": HOSTILE_CLIENT_ID, "client_secret": HOSTILE_CLIENT_SECRET},
        timeout=10,
    )
    wrong = requests.post(token_url, data=grant, auth=(HOSTILE_CLIENT_ID, "nope"), timeout=10)
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid_client"}
    for response in (by_basic, by_form):
        assert response.status_code == 200
        assert response.json()["token_type"] == "Bearer"
        assert response.json()["expires_in"] == 3600
        assert get(hostile, "people", token=response.json()["access_token"]).status_code == 200
    assert hostile.stats()["tokens_issued"] == 2

    hostile.revoke_tokens()
    assert get(hostile, "people", token=by_basic.json()["access_token"]).status_code == 401
    assert get(hostile, "people").status_code == 200  # the static token stays


def test_an_expired_oauth_token_is_refused(hostile):
    hostile.seed("people", [])
    hostile.oauth(expires_in=0)
    token = requests.post(
        f"{hostile.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(HOSTILE_CLIENT_ID, HOSTILE_CLIENT_SECRET),
        timeout=10,
    ).json()
    assert token["expires_in"] == 0
    assert get(hostile, "people", token=token["access_token"]).status_code == 401


def test_the_default_api_keeps_a_connection_alive_and_the_admin_is_not_logged(hostile):
    hostile.seed("people", [])
    for _ in range(3):
        assert get(hostile, "people").status_code == 200
    entries = hostile.log()
    assert [e["target"] for e in entries] == ["/people"] * 3
    assert len({e["connection"] for e in entries}) == 1
    stats = hostile.stats()
    assert stats["requests"] == {"main": {"GET": 3}, "other": {}}
    assert stats["open"] == {"main": 1, "other": 0}


# --- rules -------------------------------------------------------------------------------


def test_the_first_rule_that_matches_and_is_not_spent_answers(hostile):
    hostile.seed("people", [{"id": "a"}])
    hostile.set_rules(
        rule("status", prefix="/people", query="limit=", times=2, status=503, json={"error": "x"}),
        rule("json", method="PUT", json={"written": False}),
        rule("status", path="/people/a", listener="other", status=418),
    )
    statuses = [get(hostile, "people?limit=5").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert get(hostile, "people").status_code == 200  # no limit= in the query
    assert get(hostile, "people/a").status_code == 200  # that rule is the other's
    assert get(hostile, "people/a", other=True).status_code == 418
    assert hostile.api("PUT", "people/a", json={}).json() == {"written": False}
    assert [r["used"] for r in hostile.rules()] == [2, 1, 1]
    assert [e["rule"] for e in hostile.log()] == [0, 0, None, None, None, 2, 1]


def test_the_log_names_the_rule_that_answered_even_among_equal_rules(hostile):
    hostile.set_rules(rule("status", status=503, times=1), rule("status", status=503, times=1))
    assert [get(hostile, "people").status_code for _ in range(2)] == [503, 503]
    assert [e["rule"] for e in hostile.log()] == [0, 1]


def test_rules_are_checked_when_set_naming_the_wrong_part(hostile):
    for bad, named in [
        ({"action": "explode"}, "action"),
        ({"action": "endless", "intervall": 1}, "intervall"),
        ({"action": "redirect", "status": 200}, "redirect.status"),
        ({"action": "status", "match": {"paths": "/"}}, "match"),
        ({"action": "raw"}, "raw needs"),
        ({"action": "json", "json": {}, "text": "x"}, "one body"),
        ({"action": "hang", "times": 0}, "times"),
    ]:
        response = requests.put(f"{hostile.url}/_hostile/rules", json=[bad], timeout=10)
        assert response.status_code == 400 and named in response.json()["error"], bad
    assert hostile.rules() == []


def test_status_sends_any_status_headers_and_body_as_given(hostile):
    hostile.set_rules(
        rule("status", status=599, headers=[["X-A", "1"], ["X-A", "2"]], text="not json")
    )
    with connect(hostile.url, "/people") as sock:
        status, headers, rest = read_head(sock)
        body = rest + read_to_end(sock)
    assert status == 599 and headers["content-type"].startswith("text/plain")
    assert body == b"not json" and headers["content-length"] == "8"
    hostile.set_rules(rule("status", status=200, headers={"Content-Length": "100"}, text="short"))
    with connect(hostile.url, "/people") as sock:
        status, headers, rest = read_head(sock)
        assert headers["content-length"] == "100" and rest + read_to_end(sock) == b"short"


def test_json_serves_a_fixed_page_again_and_again_as_a_cursor_loop(hostile):
    page = {"data": [{"id": 7}, "not an object", {"updated_at": "0001-01-01T00:00:00+14:00"}]}
    hostile.set_rules(rule("json", path="/people", json={**page, "next_cursor": "same"}))
    for _ in range(3):
        response = get(hostile, "people?cursor=same")
        assert response.status_code == 200
        assert response.json() == {**page, "next_cursor": "same"}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_points_at_the_other_origin_with_the_same_target(hostile, status):
    hostile.set_rules(rule("redirect", status=status))
    response = hostile.api("PUT", "people/a?x=1", json={})
    assert response.status_code == status
    assert response.headers["Location"] == f"{hostile.other_url}/people/a?x=1"


def test_redirect_to_a_path_on_main_absolute_or_relative(hostile):
    hostile.set_rules(
        rule("redirect", times=1, to="main", target="/elsewhere"),
        rule("redirect", times=1, to="main", target="/elsewhere", relative=True),
        rule("redirect", times=1, location="https://example.invalid/x"),
    )
    locations = [get(hostile, "people").headers["Location"] for _ in range(3)]
    assert locations == [f"{hostile.url}/elsewhere", "/elsewhere", "https://example.invalid/x"]


def test_the_other_origin_logs_every_header_it_got_as_received(hostile):
    hostile.seed("people", [{"id": "a"}])
    hostile.set_rules(rule("redirect", status=307, prefix="/people"))
    followed = requests.get(
        f"{hostile.url}/people",
        headers={"Authorization": f"Bearer {hostile.token}", "X-Trace": "t-1"},
        timeout=10,
    )
    assert followed.status_code == 401  # requests dropped the token on the way: other origin
    (to_other,) = hostile.log(listener="other")
    assert header(to_other, "X-Trace") == ["t-1"] and header(to_other, "Authorization") == []

    with connect(
        hostile.other_url,
        "/people?api_key=k",
        headers=f"authorization: Bearer {hostile.token}\r\nX-Api-Key: k1\r\nX-Api-Key: k2\r\n",
    ) as sock:
        status, _, _ = read_head(sock)
    assert status == 200  # a token that leaks to the other origin works there, as it would
    entry = hostile.log(listener="other")[-1]
    assert entry["headers"][1:] == [
        ["authorization", f"Bearer {hostile.token}"],
        ["X-Api-Key", "k1"],
        ["X-Api-Key", "k2"],
    ]
    assert entry["target"] == "/people?api_key=k" and entry["method"] == "GET"


def test_echo_auth_quotes_the_credentials_and_the_query_back(hostile):
    hostile.set_rules(rule("echo_auth", status=401))
    response = get(hostile, "people?api_key=q-secret", headers={"X-Api-Key": "k-secret"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert f"Bearer {hostile.token}" in error and "k-secret" in error and "q-secret" in error


def test_a_gzip_bomb_of_64_mib_is_sent_in_about_64_kib_and_inflates_to_exactly_that(hostile):
    size = 64 * MIB
    hostile.set_rules(rule("gzip_bomb", size=size))
    with connect(hostile.url, "/people", headers="Accept-Encoding: gzip\r\n") as sock:
        status, headers, rest = read_head(sock)
        assert status == 200 and headers["content-encoding"] == "gzip"
        sent = int(headers["content-length"])
        assert size // 1100 < sent < size // 900
        body = read_exactly(sock, rest, sent)
    inflate = zlib.decompressobj(31)  # checks the gzip trailer's CRC and length too
    start = inflate.decompress(body[:4096])
    inflated = len(start)
    for at in range(4096, sent, 65536):
        inflated += len(inflate.decompress(body[at : at + 65536]))
    inflated += len(inflate.flush())
    assert inflate.eof and inflated == size
    assert start.startswith(b'{"data": [') and start.endswith(b" " * 100)
    assert hostile.wait_for_connection(action="gzip_bomb")["body_bytes"] == sent


def test_the_default_gzip_bomb_is_about_1_mb_that_inflates_to_1_gib(hostile):
    hostile.set_rules(rule("gzip_bomb"))
    response = get(hostile, "people", stream=True)
    sent = int(response.headers["Content-Length"])
    assert 0.9e6 < sent < 1.2e6
    body = response.raw.read(sent, decode_content=False)
    assert len(body) == sent
    crc, length = struct.unpack("<II", body[-8:])
    assert length == (1 << 30) % (1 << 32)
    assert zlib.decompressobj(31).decompress(body[:2048]).startswith(b'{"data": [  ')


def test_huge_sends_a_valid_list_of_about_the_size_asked_with_its_length(hostile):
    hostile.set_rules(rule("huge", size=8 * MIB))
    response = get(hostile, "people")
    assert abs(int(response.headers["Content-Length"]) - 8 * MIB) < 2048
    page = response.json()
    assert page["next_cursor"] is None and len(page["data"]) > 8000
    assert [r["id"] for r in page["data"]] == sorted(r["id"] for r in page["data"])


def test_huge_can_be_chunked_and_hold_one_record_with_a_field_of_any_size(hostile):
    hostile.set_rules(rule("huge", field=5 * MIB, chunked=True))
    with connect(hostile.url, "/people") as sock:
        status, headers, rest = read_head(sock)
        body = dechunk(rest + read_to_end(sock))
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    (record,) = json.loads(body)["data"]
    assert len(record["big"]) == 5 * MIB and record["id"]


@pytest.mark.parametrize("container", ["list", "object"])
def test_deep_nests_a_record_value_10000_levels(hostile, container):
    hostile.set_rules(rule("deep", container=container))
    text = get(hostile, "people").text
    opening, closing = ("[", "]") if container == "list" else ('{"a":', "}")
    nested = text.split('"nested":', 1)[1]
    assert nested.startswith(opening * 10_000) and not nested.startswith(opening * 10_001)
    assert nested.endswith(closing * 10_000 + "}]," + '"next_cursor":null}')


def test_an_endless_body_keeps_coming_until_the_client_closes_and_the_tool_notices(hostile):
    hostile.set_rules(rule("endless", interval=0))
    with connect(hostile.url, "/people") as sock:
        status, headers, start = read_head(sock)
        have = len(start)
        while have < 24 * MIB:
            data = sock.recv(1 << 20)
            assert data, f"the endless body ended after {have} bytes"
            have += len(data)
            start += data[: 100 - len(start)]
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert start.startswith(b'a\r\n{"data": [\r\n10000\r\n   ')
    finished = hostile.wait_for_connection(action="endless")
    assert finished["closed_by"] == "client" and finished["body_bytes"] >= 24 * MIB - 100_000
    assert hostile.stats()["open"]["main"] == 0


def test_an_endless_503_sends_its_head_then_an_error_text_that_never_ends(hostile):
    hostile.set_rules(rule("endless", status=503, chunk=10, interval=0.01))
    with connect(hostile.url, "/people") as sock:
        status, _, received = read_head(sock)
        while received.count(b"..........") < 3:
            data = sock.recv(4096)
            assert data
            received += data
    assert status == 503 and received.startswith(b'b\r\n{"error": "\r\na\r\n..........\r\n')
    assert hostile.wait_for_connection(action="endless")["closed_by"] == "client"


def test_a_trickle_sends_no_more_than_one_byte_per_interval(hostile):
    interval = 0.05
    body = "0123456789"
    hostile.set_rules(rule("trickle", interval=interval, part="body", text=body))
    began = time.monotonic()
    with connect(hostile.url, "/people") as sock:
        _, headers, received = read_head(sock)
        while len(received) < len(body):
            data = sock.recv(100)
            assert data
            received += data
            # the tool waits an interval before each byte, so never runs ahead of the clock
            assert len(received) <= (time.monotonic() - began) / interval
    assert headers["content-length"] == "10" and received == body.encode()
    assert time.monotonic() - began >= len(body) * interval


def test_a_trickled_head_comes_byte_by_byte_and_by_default_carries_the_apis_answer(hostile):
    hostile.seed("people", [{"id": "a"}])
    hostile.set_rules(rule("trickle", interval=0.001, part="head"))
    response = get(hostile, "people")
    assert response.status_code == 200 and [r["id"] for r in response.json()["data"]] == ["a"]
    finished = hostile.wait_for_connection(action="trickle")
    assert finished["body_bytes"] == len(response.content) and finished["closed_by"] == "server"


def test_a_client_that_leaves_a_trickle_is_noticed(hostile):
    hostile.set_rules(rule("trickle", interval=0.01, text="x" * 10_000))
    with connect(hostile.url, "/people") as sock:
        assert sock.recv(1) == b"H"
    finished = hostile.wait_for_connection(action="trickle")
    assert finished["closed_by"] == "client" and finished["body_bytes"] == 0


def test_a_client_that_leaves_during_a_long_trickle_interval_is_noticed_at_once(hostile):
    hostile.set_rules(rule("trickle", interval=60, part="body", text="never sent"))
    with connect(hostile.url, "/people") as sock:
        read_head(sock)
    finished = hostile.wait_for_connection(action="trickle", seconds=10)
    assert finished["closed_by"] == "client" and finished["seconds_after_request"] < 10


def test_hang_never_answers_while_the_client_waits_and_sees_it_go(hostile):
    hostile.set_rules(rule("hang", method="PUT"))
    with connect(hostile.url, "/people/a", method="PUT", headers="Content-Length: 2\r\n") as sock:
        sock.sendall(b"{}")
        (waiting,) = hanging(hostile)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert waiting["last"] == "PUT /people/a" and waiting["busy"] is True
        assert hostile.log()[0]["body_length"] == 2
    finished = hostile.wait_for_connection(action="hang")
    assert finished["closed_by"] == "client" and finished["body_bytes"] == 0
    assert finished["seconds_after_request"] >= 0.5
    assert hostile.stats()["open"] == {"main": 0, "other": 0}


def test_close_ends_the_connection_without_a_byte_and_reset_with_an_rst(hostile):
    hostile.set_rules(rule("close", times=1), rule("close", reset=True))
    with connect(hostile.url, "/people") as sock:
        assert read_to_end(sock) == b""
    with connect(hostile.url, "/people") as sock, pytest.raises(ConnectionResetError):
        read_to_end(sock)
    hostile.wait_for(lambda s: len(s["connections"]) == 2, "both connections finished")
    assert [c["closed_by"] for c in hostile.stats()["connections"]] == ["server", "server"]


def test_raw_sends_the_bytes_as_given_then_closes(hostile):
    given = b'HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n{"data": [\x00\xff'
    hostile.set_rules(rule("raw", base64=base64.b64encode(given).decode()))
    with connect(hostile.url, "/people") as sock:
        assert read_to_end(sock) == given


def test_a_reset_cuts_a_connection_still_busy_with_a_rule_and_forgets_it(hostile):
    hostile.set_rules(rule("hang"))
    with connect(hostile.url, "/people") as sock:
        hanging(hostile)
        hostile.reset()
        assert read_to_end(sock) == b""
    hostile.wait_for(lambda s: not s["open_connections"], "no connection open")
    assert hostile.stats()["connections"] == []


def test_sigterm_stops_the_tool_at_once_even_with_a_connection_hanging(tmp_path):
    log = tmp_path / "hostile.log"
    process = start(hostile_upstream_command(), log=log)
    try:
        url = wait_until(
            lambda: LISTENING.search(log.read_text()), what="listening", process=process, log=log
        ).group(1)
        wait_until_up(f"{url}/_hostile/health", process, log)
        server = HostileUpstream(url)
        server.set_rules(rule("hang"))
        with connect(url, "/people") as sock:
            hanging(server)
            began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
            assert time.monotonic() - began < 5
            assert read_to_end(sock) == b""
    finally:
        stop(process)
