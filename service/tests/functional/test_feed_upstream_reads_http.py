"""The feed stops reading the upstream when it stops writing: after its ``limit``, and when
the client goes away. It reads one page ahead, never more; an upstream API that counts
requests (or bills them) must not see a whole collection read for five entities.

The reference connector runs under gunicorn (100 records a page, ``DEMO_SETTINGS``), the
demo Records API on loopback counts the list pages it served (``/_admin/stats``).
"""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit

from service.tests.framework_kit import DEMO_SETTINGS

PAGES = 50
PAGE_SIZE = int(DEMO_SETTINGS["UPSTREAM_PAGE_SIZE"])  # the reference connector's
AHEAD = 2  # the page in the slot, and the one waiting to be put there
WATCH_SECONDS = 1.5


def seed(upstream, padding=0):
    records = [
        {"id": f"r-{i:05d}", "updated_at": "2026-01-01T00:00:00.000000Z", "pad": "x" * padding}
        for i in range(PAGES * PAGE_SIZE)
    ]
    for start in range(0, len(records), 1000):
        upstream.insert("bulk", records[start : start + 1000])


def feed_ended(connector, before):
    """The feed's log line for the request that began after ``before`` log characters,
    as (entities, outcome), once the request has ended."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = re.search(
            r"feed bulk since=None limit=\S+ entities=(\d+) provisional=0 seconds=\S+ (\w+)",
            connector.log_text()[before:],
        )
        if line:
            return int(line.group(1)), line.group(2)
        time.sleep(0.05)
    raise AssertionError("the feed never logged its end")


def assert_reads_stay_within(upstream, bound):
    """A stopped feed reads nothing more. Watched for a while, failing at the first read
    too many: a correct feed cannot fail this, one that keeps reading is caught within
    milliseconds (it reads a page every few)."""
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        pages = upstream.stats()["list_pages"]
        assert pages <= bound, f"the feed went on reading: {pages} upstream pages"
        time.sleep(0.02)


def test_a_limit_reads_one_page_ahead_and_no_more(connector, upstream):
    seed(upstream)
    before = len(connector.log_text())
    entities = connector.get("bulk", params={"limit": 5}).json()
    assert len(entities) == 5
    assert feed_ended(connector, before) == (5, "ok")
    assert_reads_stay_within(upstream, 1 + AHEAD)


def test_a_limit_across_pages_reads_only_the_pages_it_needs_and_one_ahead(connector, upstream):
    seed(upstream)
    before = len(connector.log_text())
    entities = connector.get("bulk", params={"limit": 250}).json()
    assert [e["_id"] for e in entities] == [f"r-{i:05d}" for i in range(250)]
    assert feed_ended(connector, before) == (250, "ok")
    assert_reads_stay_within(upstream, 3 + AHEAD)


def test_a_client_that_goes_away_stops_the_reads(connector, upstream):
    """Pages of about a megabyte, so the socket buffers hold a few of them at most and
    the connector notices the closed connection at its next write."""
    seed(upstream, padding=10_000)
    before = len(connector.log_text())
    address = urlsplit(connector.url)
    with socket.create_connection((address.hostname, address.port), timeout=60) as client:
        client.sendall(b"GET /bulk HTTP/1.1\r\nHost: connector\r\nConnection: close\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
    entities, outcome = feed_ended(connector, before)
    # Noticed at a write that failed ("broken"), or before, while a page was awaited
    # ("client gone"): either way it ended without its closing "]", and read no further.
    assert outcome in ("broken", "client")
    written_pages = -(-entities // PAGE_SIZE)
    assert written_pages < PAGES  # it noticed before the end
    assert_reads_stay_within(upstream, written_pages + AHEAD)


def test_a_whole_feed_reads_each_page_once(connector, upstream):
    seed(upstream)
    entities = connector.get("bulk").json()
    assert len(entities) == PAGES * PAGE_SIZE
    assert upstream.stats()["list_pages"] == PAGES
