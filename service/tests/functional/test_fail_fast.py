"""Failing fast when the upstream is down or refuses the connector (issue 10, part 4).

Sesam retries a failed sink batch (3 times by default) and then sends its entities one
at a time, each up to 5 times: a connector that takes two minutes to give up costs Sesam
hours per batch. So the sink's own retries are short by default
(``UPSTREAM_SINK_RETRY_BUDGET``), while the feed keeps a long budget
(``UPSTREAM_FEED_RETRY_BUDGET``), since a failed feed restarts the whole run. A 401 or
403 is never retried: no retry fixes a wrong token.
"""

from __future__ import annotations

import time
import uuid

import pytest

# The connector's retry and timeout settings left at their defaults ("" reads as unset).
DEFAULTS = {
    "UPSTREAM_FEED_RETRY_BUDGET": "",
    "UPSTREAM_SINK_RETRY_BUDGET": "",
    "UPSTREAM_RETRIES": "",
    "UPSTREAM_READ_TIMEOUT": "",
    "UPSTREAM_CONNECT_TIMEOUT": "",
}


def incremental(connector, collection, entities):
    return connector.post(
        collection,
        json=entities,
        params={"sequence_id": str(uuid.uuid4()), "is_full": "false"},
    )


@pytest.mark.serial  # a bound on time: alone, so that no other test takes its CPU
def test_a_sink_batch_against_a_dead_upstream_fails_within_15_seconds_by_default(
    connector_factory, upstream
):
    connector = connector_factory(**DEFAULTS)
    upstream.faults(storm={"status": 503, "count": 1_000_000, "retry_after": None})
    batch = [{"_id": f"dead-{n}", "name": f"Entity {n}"} for n in range(100)]
    started = time.monotonic()
    response = incremental(connector, "people", batch)
    elapsed = time.monotonic() - started
    assert response.status_code == 502, response.text
    assert elapsed < 15, f"the sink took {elapsed:.1f}s to give up on a dead upstream"
    body = response.json()
    assert body["failed"] and all(f["upstream_status"] == 503 for f in body["failed"])
    assert body["failed"][0]["_id"].startswith("dead-")


def test_a_sink_batch_still_rides_out_a_short_storm(connector_factory, upstream):
    # Short retries, not none: three 503s in a row are still absorbed.
    connector = connector_factory(**DEFAULTS)
    upstream.faults(storm={"status": 503, "count": 3, "retry_after": None})
    response = incremental(connector, "people", [{"_id": "storm-1", "name": "Rides it out"}])
    assert response.status_code == 200, response.text
    assert upstream.live("people")["storm-1"]["name"] == "Rides it out"


def test_a_401_is_not_retried_and_answers_502_saying_the_credentials_were_refused(
    connector_factory, upstream
):
    connector = connector_factory(**DEFAULTS, UPSTREAM_TOKEN="not-the-token")
    before = upstream.stats()
    response = incremental(connector, "people", [{"_id": "p-1", "name": "Ada"}])
    assert response.status_code == 502, response.text
    assert "refused the credentials" in response.json()["detail"]
    assert upstream.stats().get("PUT", 0) - before.get("PUT", 0) == 1  # tried once

    before = upstream.stats()
    feed = connector.get("people")
    assert feed.status_code == 502, feed.text
    assert "refused the credentials" in feed.json()["detail"]
    assert "not-the-token" not in feed.text
    assert upstream.stats().get("GET", 0) - before.get("GET", 0) == 1


def test_a_403_is_not_retried_and_answers_502_saying_the_credentials_were_refused(
    connector_factory, upstream
):
    connector = connector_factory(**DEFAULTS)
    upstream.faults(fail_writes={"count": 1000, "status": 403})
    before = upstream.stats()
    response = incremental(connector, "people", [{"_id": "p-1", "name": "Ada"}])
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["detail"].startswith("the upstream refused the credentials (403)")
    assert body["failed"][0]["upstream_status"] == 403
    assert upstream.stats().get("PUT", 0) - before.get("PUT", 0) == 1
