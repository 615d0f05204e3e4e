"""An upstream whose answers are too large, never end or hold what the connector cannot
place (issue 18, items 1, 2 and 6), against the real server: the reference connector under
gunicorn in front of the hostile upstream, with the defaults but for pages of two records.

Each test checks what Sesam gets (a 502 naming the bound or the record before the first
byte, a broken stream after it), what the upstream saw (how much of its answer was taken,
who closed the connection, how many requests came) and that ``/health`` answers
throughout and afterwards.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.tests.functional.untrusted_upstream_kit import MB
from service.tests.functional.untrusted_upstream_kit import HealthWatch
from service.tests.functional.untrusted_upstream_kit import HostileConnector
from service.tests.functional.untrusted_upstream_kit import read_feed
from service.tests.functional.untrusted_upstream_kit import requests_to
from service.tests.functional.untrusted_upstream_kit import serving
from service.tests.hostile_kit import HostileUpstream
from service.tests.hostile_kit import rule
from service.tests.loads import PeakRss

pytest_plugins = ["service.tests.hostile_kit"]

PAGE_SIZE = 2  # three records make two pages: a fault on a later page
TIME = "2026-01-01T00:00:00.000000Z"
# What the connector's memory may grow by while it refuses an answer: the answer limit
# (UPSTREAM_MAX_ANSWER_BYTES, 8 MiB by default), a piece of it, and room.
GROWTH = 32 * MB


@pytest.fixture(scope="module")
def connector(
    hostile_server: HostileUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileConnector]:
    directory = tmp_path_factory.mktemp("answers")
    with serving(
        hostile_server,
        directory,
        UPSTREAM_PAGE_SIZE=str(PAGE_SIZE),
        UPSTREAM_READ_TIMEOUT="",  # the defaults, not the kit's short ones
        UPSTREAM_FEED_RETRY_BUDGET="",
    ) as served:
        yield served


def people(count: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"r{n}", "updated_at": TIME, "n": n} for n in range(count)]


def detail(feed: Any) -> str:
    body = feed.json()
    assert set(body) >= {"error", "detail"}, body
    return str(body["detail"])


# --- answers larger than any page should be ----------------------------------------------


@pytest.mark.serial  # measures the connector's memory: alone
def test_a_gzip_bomb_is_a_502_naming_the_limit_and_memory_stays_far_below_128_mb(
    hostile, connector
):
    """About 1 MB on the wire that inflates to 1 GiB: before issue 18 the worker took
    about 2 GB, and a 128 MB container was killed before Sesam got a status."""
    hostile.seed("people", people())
    hostile.set_rules(rule("gzip_bomb", method="GET", prefix="/people"))
    with HealthWatch(connector), PeakRss(connector.processes()) as memory:
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    assert "UPSTREAM_MAX_ANSWER_BYTES" in detail(feed)
    # About 80 MB before and 95 MB at the peak here; before issue 18, about 2 GB.
    shown = f"RSS {memory.before / MB:.0f} MB before, {memory.peak / MB:.0f} MB at the peak"
    assert memory.peak - memory.before < GROWTH, shown
    assert memory.peak < 110 * MB, shown
    assert requests_to(hostile, "GET") == 1  # refused, not asked again


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_page_is_a_502_and_is_not_read_past_the_limit(hostile, connector, chunked):
    hostile.seed("people", people())
    hostile.set_rules(rule("huge", method="GET", prefix="/people", chunked=chunked))
    with HealthWatch(connector), PeakRss(connector.processes()) as memory:
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    assert "UPSTREAM_MAX_ANSWER_BYTES" in detail(feed)
    cut = hostile.wait_for_connection(action="huge", closed_by="client")
    # 8 MiB read at most (none of it with a declared length), plus what sat in buffers
    assert cut["body_bytes"] < 32 * MB, cut
    assert memory.peak - memory.before < GROWTH
    assert requests_to(hostile, "GET") == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_one_50_mb_record_is_a_502_naming_the_answer_limit(hostile, connector, chunked):
    hostile.seed("people", people())
    hostile.set_rules(rule("huge", method="GET", prefix="/people", field=50 * MB, chunked=chunked))
    with HealthWatch(connector), PeakRss(connector.processes()) as memory:
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    assert "UPSTREAM_MAX_ANSWER_BYTES" in detail(feed)
    cut = hostile.wait_for_connection(action="huge", closed_by="client")
    assert cut["body_bytes"] < 32 * MB, cut
    assert memory.peak - memory.before < GROWTH


def test_a_record_over_the_record_limit_is_a_502_naming_it(hostile, connector):
    """A 2 MiB record in an answer within UPSTREAM_MAX_ANSWER_BYTES: over
    UPSTREAM_MAX_RECORD_BYTES (1 MiB), which no entity may pass."""
    hostile.seed("people", people())
    hostile.set_rules(rule("huge", method="GET", prefix="/people", field=2 * MB))
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    text = detail(feed)
    assert "UPSTREAM_MAX_RECORD_BYTES" in text and "'huge-000000000'" in text, text


def test_a_chunked_body_that_never_ends_is_cut_by_the_connector(hostile, connector):
    hostile.seed("people", people())
    hostile.set_rules(rule("endless", method="GET", prefix="/people", chunk=256 * 1024))
    with HealthWatch(connector), PeakRss(connector.processes()) as memory:
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    assert "UPSTREAM_MAX_ANSWER_BYTES" in detail(feed)
    # The connector hung up: the tool saw its side close, soon after the request.
    cut = hostile.wait_for_connection(action="endless", closed_by="client")
    assert cut["seconds_after_request"] < 30 and cut["body_bytes"] < 32 * MB, cut
    assert memory.peak - memory.before < GROWTH
    assert requests_to(hostile, "GET") == 1


# --- records the connector cannot place ---------------------------------------------------


GOOD = {"id": "r9", "updated_at": TIME, "n": 9}


def page_of(record: Any) -> dict[str, Any]:
    """A last page with ``record`` first, before a good one."""
    return {"data": [record, GOOD], "next_cursor": None}


# (the rule's action and parameters, what the 502 must say; {page}: the page's number)
MALFORMED = {
    "no id": (
        {"action": "json", "json": page_of({"updated_at": TIME, "name": "x"})},
        ["record 0 of page {page}", "has no 'id'"],
    ),
    "no position": (
        {"action": "json", "json": page_of({"id": "r8", "name": "x"})},
        ["record 0 of page {page}", "(id 'r8')", "has no 'updated_at'"],
    ),
    "a string": (
        {"action": "json", "json": page_of("r8")},
        ["record 0 of page {page}", "is a JSON str, not an object"],
    ),
    "a list": (
        {"action": "json", "json": page_of(["r8", TIME])},
        ["record 0 of page {page}", "is a JSON list, not an object"],
    ),
    "null": (
        {"action": "json", "json": page_of(None)},
        ["record 0 of page {page}", "not an object"],
    ),
    # The adapter's own paging reads the last record of each page before the feed sees
    # the page (the reference's loop guard; the framework's paging blocks do the same).
    "no id, last on its page": (
        {"action": "json", "json": {"data": [{"updated_at": TIME}], "next_cursor": None}},
        ["page {page}", "the adapter's paging cannot read", "has no 'id'"],
    ),
    "a string, last on its page": (
        {"action": "json", "json": {"data": ["r8"], "next_cursor": None}},
        ["page {page}", "the adapter's paging cannot read", "TypeError"],
    ),
    "nested 10,000 deep": (
        {"action": "deep", "depth": 10_000},
        ["JSON nested too deeply to parse", "GET http://"],
    ),
    # The feed checks a time in a second it has read before by its digits alone.
    "a bad digit in a time of a second already read": (
        {"action": "json", "json": page_of({"id": "r8", "updated_at": TIME[:-2] + "xZ"})},
        [f"('{TIME[:-2]}xZ', 'r8') is not (timestamp, text)"],
    ),
    "a time with more after its zone": (
        {"action": "json", "json": page_of({"id": "r8", "updated_at": TIME + "0"})},
        [f"('{TIME}0', 'r8') is not (timestamp, text)"],
    ),
    "a time before the year 1 in UTC": (
        {
            "action": "json",
            "json": page_of({"id": "r8", "updated_at": "0001-01-01T00:00:00+14:00"}),
        },
        ["'0001-01-01T00:00:00+14:00', 'r8'", "outside the years 1 to 9999 in UTC"],
    ),
}


def malformed(case: str, **match: str) -> dict[str, Any]:
    spec = dict(MALFORMED[case][0])
    return rule(spec.pop("action"), method="GET", prefix="/people", **match, **spec)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_record_the_connector_cannot_place_is_a_502_naming_what_and_where(
    hostile, connector, case
):
    hostile.seed("people", people())
    hostile.set_rules(malformed(case))
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people")
    assert feed.status == 502, feed.body[:300]
    text = detail(feed)
    for said in MALFORMED[case][1]:
        assert said.format(page=1) in text, text


@pytest.mark.parametrize("case", list(MALFORMED))
def test_the_same_on_a_later_page_breaks_the_stream(hostile, connector, case):
    """The first page went out: Sesam must not get a valid array. The stream ends
    without its closing ``]`` (and without HTTP's last chunk), and the log says why."""
    hostile.seed("people", people(PAGE_SIZE + 1))
    hostile.set_rules(malformed(case, query="cursor="))
    mark = connector.mark()
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people")
    assert feed.status == 200
    assert feed.broken, feed.body[-300:]
    assert feed.body.startswith(b'[{"id":"r0"') and b'"_id":"r1"' in feed.body
    assert not feed.body.rstrip().endswith(b"]")
    log = connector.wait_for_log(f"broken after {PAGE_SIZE} entities", after=mark)
    line = next(line for line in log.splitlines() if "closing without ']'" in line)
    for said in MALFORMED[case][1]:
        assert said.format(page=2) in line, line


# --- a since Sesam sends that is not this feed's --------------------------------------------


def test_a_since_whose_id_part_is_malformed_is_a_400(hostile, connector):
    hostile.seed("people", people())
    with HealthWatch(connector):
        for since in (f"{TIME}_zz", f"{TIME}_7", f"{TIME}_{'é'.encode().hex()[:-1]}"):
            response = connector.get("people", params={"since": since})
            assert response.status_code == 400, (since, response.text)
            assert "since must be an _updated value" in response.json()["detail"]
    assert requests_to(hostile, "GET") == 0


def test_a_since_whose_number_part_is_malformed_is_a_400(hostile, tmp_path):
    """The Tickets example's positions end in an integer (``p`` or ``n``, an exponent, the
    digits): a part of another form, or of an integer that cannot be, is Sesam's mistake
    (or an operator's), a 400 before the upstream is asked."""
    with serving(
        hostile,
        tmp_path / "tickets",
        app="service.tools.examples.tickets:create_app()",
        TICKETS_URL=hostile.url,
        TICKETS_API_KEY="tickets-key-s3cr3t",
    ) as tickets:
        with HealthWatch(tickets):
            for part in ("p5000", "p50010", "p500015", "n4999", "n49998~x", "q50011", "p500١"):
                since = f"{TIME}_{part}"
                response = tickets.get("tickets", params={"since": since})
                assert response.status_code == 400, (since, response.text)
                text = response.json()["detail"]
                assert "since must be an _updated value from this feed" in text, text
        assert requests_to(hostile, "GET") == 0


# --- Sesam hangs up -------------------------------------------------------------------------


def test_when_sesam_hangs_up_mid_feed_the_upstream_read_stops_and_no_more_pages_are_asked(
    hostile, connector
):
    """The next page is being read (here: the upstream holds it) when Sesam closes the
    connection: the read is cut within a second or two, not at a timeout
    (UPSTREAM_READ_TIMEOUT, 60 s, and UPSTREAM_REQUEST_DEADLINE, 180 s: the defaults),
    and no page after it is asked for."""
    hostile.seed("people", people(3 * PAGE_SIZE))
    hostile.set_rules(rule("hang", method="GET", prefix="/people", query="cursor="))
    mark = connector.mark()
    host, port = connector.url.removeprefix("http://").split(":")
    with HealthWatch(connector):
        sesam = socket.create_connection((host, int(port)), timeout=30)
        sesam.sendall(b"GET /people HTTP/1.1\r\nHost: connector\r\n\r\n")
        received = b""
        while b'"_id":"r1"' not in received:  # the first page has come
            piece = sesam.recv(65536)
            assert piece, received
            received += piece
        hostile.wait_for(
            lambda stats: any(c["action"] == "hang" for c in stats["open_connections"]),
            "the second page asked for and held",
        )
        hung_up = time.time()
        sesam.close()
        cut = hostile.wait_for_connection(action="hang", closed_by="client")
        assert cut["opened"] + cut["seconds"] - hung_up < 5, cut
        connector.wait_for_log("client gone: the upstream is read no further", after=mark)
    assert requests_to(hostile, "GET") == 2  # the first page and the one held: no more
