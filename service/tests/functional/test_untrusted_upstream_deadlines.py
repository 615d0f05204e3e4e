"""An upstream that answers slowly or never (issue 18, item 2), against the real server:
the reference connector under gunicorn in front of the hostile upstream, with tight
deadlines and a per-read timeout longer than them, so that only a deadline can end a
request in time.

Each test checks what Sesam gets (a 504, or a 503 with Retry-After when every thread is
taken, within the deadline), what the upstream saw (the connector hung up on it, and did
not ask again) and that ``/health`` answers throughout and afterwards.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from service.tests.functional.untrusted_upstream_kit import MB
from service.tests.functional.untrusted_upstream_kit import HealthWatch
from service.tests.functional.untrusted_upstream_kit import HostileConnector
from service.tests.functional.untrusted_upstream_kit import closed
from service.tests.functional.untrusted_upstream_kit import read_feed
from service.tests.functional.untrusted_upstream_kit import requests_to
from service.tests.functional.untrusted_upstream_kit import serving
from service.tests.hostile_kit import HostileUpstream
from service.tests.hostile_kit import rule

pytest_plugins = ["service.tests.hostile_kit"]
# Bounds on time, and forty feeds at once: alone, so that no other test takes their CPU.
pytestmark = pytest.mark.serial

REQUEST_DEADLINE = 2  # UPSTREAM_REQUEST_DEADLINE
SINK_DEADLINE = 1  # UPSTREAM_SINK_DEADLINE
READ_TIMEOUT = 10  # UPSTREAM_READ_TIMEOUT: each wait for a byte; longer than the deadlines
# What a deadline's answer may take beyond it on a busy two-core machine; still well under
# READ_TIMEOUT, and far under the whole of a trickled answer.
SLACK = 5
TRICKLE = 0.1  # seconds per byte: a page of three records takes about 40 s
TIME = "2026-01-01T00:00:00.000000Z"


@pytest.fixture(scope="module")
def connector(
    hostile_server: HostileUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileConnector]:
    with serving(
        hostile_server,
        tmp_path_factory.mktemp("deadlines"),
        UPSTREAM_REQUEST_DEADLINE=str(REQUEST_DEADLINE),
        UPSTREAM_SINK_DEADLINE=str(SINK_DEADLINE),
        UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT),
    ) as served:
        yield served


def people(count: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"r{n}", "updated_at": TIME, "n": n} for n in range(count)]


# --- reads ------------------------------------------------------------------------------------


def test_a_trickled_answer_is_a_504_within_the_request_deadline(hostile, connector):
    """One byte every 0.1 s never trips a per-read timeout (10 s): before issue 18 the
    request took as long as the upstream trickled."""
    hostile.seed("people", people())
    hostile.set_rules(rule("trickle", method="GET", prefix="/people", interval=TRICKLE))
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people", timeout=30)
    assert feed.status == 504, feed.body[:300]
    assert f"UPSTREAM_REQUEST_DEADLINE ({REQUEST_DEADLINE}s)" in feed.json()["detail"]
    assert feed.seconds < REQUEST_DEADLINE + SLACK
    cut = hostile.wait_for_connection(action="trickle", closed_by="client")
    assert cut["seconds_after_request"] < REQUEST_DEADLINE + SLACK, cut
    assert requests_to(hostile, "GET") == 1  # a deadline that passed is not retried


def test_forty_trickled_feeds_at_once_leave_health_answering(hostile, connector):
    """Before issue 18, forty such feeds left /health unanswered for good. Each feed now
    holds a thread for at most the deadline, and those beyond the worker's threads (less
    one, kept for /health) are told at once to come back."""
    hostile.seed("people", people())
    hostile.set_rules(rule("trickle", method="GET", prefix="/people", interval=TRICKLE))
    with HealthWatch(connector) as health, ThreadPoolExecutor(40) as pool:
        feeds = list(pool.map(lambda _: read_feed(connector.url, "people", timeout=30), range(40)))
    statuses = collections.Counter(feed.status for feed in feeds)
    assert set(statuses) <= {503, 504} and statuses[504] > 0, statuses
    for feed in feeds:
        assert feed.seconds < 2 * REQUEST_DEADLINE + SLACK, (feed.status, feed.seconds)
        if feed.status == 503:
            assert feed.headers["Retry-After"].isdigit()
    assert len(health.answers) > 3  # asked again and again while the feeds were held
    # Every feed that was let in asked once and was cut at its deadline; no other asked.
    assert requests_to(hostile, "GET") == statuses[504]
    trickles = closed(hostile, "trickle", statuses[504])
    assert all(c["closed_by"] == "client" for c in trickles), trickles
    # Afterwards: every thread is free again.
    hostile.clear_rules()
    with ThreadPoolExecutor(8) as pool:
        again = list(pool.map(lambda _: read_feed(connector.url, "people"), range(8)))
    assert [feed.status for feed in again] == [200] * 8
    assert all(len(feed.json()) == 3 for feed in again)


def test_a_503_whose_body_never_ends_is_not_drained(hostile, connector):
    """A 503 is transient: retried (here at once, as its Retry-After says, up to
    UPSTREAM_RETRIES, 10). Before each retry a little of the error's body is read, not all
    of it: an endless one was drained for ever before issue 18."""
    hostile.seed("people", people())
    hostile.set_rules(
        rule("endless", method="GET", prefix="/people", status=503, headers={"Retry-After": "0"})
    )
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people", timeout=30)
    assert feed.status == 502, feed.body[:300]
    assert "upstream answered 503 to GET" in feed.json()["detail"]
    assert feed.seconds < REQUEST_DEADLINE + SLACK
    assert requests_to(hostile, "GET") == 1 + 10  # the request and its retries
    for connection in closed(hostile, "endless", 11):
        assert connection["closed_by"] == "client", connection
        assert connection["body_bytes"] < 16 * MB, connection
        assert connection["seconds_after_request"] < REQUEST_DEADLINE + SLACK, connection


# --- writes -------------------------------------------------------------------------------


def test_a_write_that_hangs_is_a_504_within_the_sink_deadline(hostile, connector):
    """Every write of the batch hangs: the batch, attempts and waits included, ends at
    UPSTREAM_SINK_DEADLINE (Sesam retries it). Before issue 18 it took about 4 minutes."""
    hostile.seed("people", [])
    hostile.set_rules(rule("hang", method="PUT", prefix="/people/"))
    batch = [{"_id": f"w{n}", "n": n} for n in range(20)]
    with HealthWatch(connector):
        started = time.monotonic()
        response = connector.post("people", json=batch, params={"is_full": "false"}, timeout=30)
        seconds = time.monotonic() - started
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["summary"]["upserts"] == 0
    assert f"UPSTREAM_SINK_DEADLINE ({SINK_DEADLINE}s)" in body["failed"][0]["reason"], body
    assert seconds < SINK_DEADLINE + SLACK  # UPSTREAM_READ_TIMEOUT alone is 10 s
    puts = requests_to(hostile, "PUT")
    assert 1 <= puts <= 8  # SINK_CONCURRENCY at most, each once: none started after
    hung = closed(hostile, "hang", puts)
    assert all(c["closed_by"] == "client" for c in hung), hung
    assert hostile.records("people") == []  # nothing written


def test_a_transform_whose_upstream_hangs_is_a_504_within_the_sink_deadline(hostile, connector):
    hostile.seed("people", people())
    hostile.set_rules(rule("hang", method="GET", prefix="/people/"))
    with HealthWatch(connector):
        started = time.monotonic()
        response = connector.post(
            "transform/people-record", json=[{"_id": "r0"}, {"_id": "r1"}], timeout=30
        )
        seconds = time.monotonic() - started
    assert response.status_code == 504, response.text
    body = response.json()
    assert f"UPSTREAM_SINK_DEADLINE ({SINK_DEADLINE}s)" in body["failed"][0]["reason"], body
    assert seconds < SINK_DEADLINE + SLACK
    asked = requests_to(hostile, "GET")
    assert 1 <= asked <= 2
    hung = closed(hostile, "hang", asked)
    assert all(c["closed_by"] == "client" for c in hung), hung
