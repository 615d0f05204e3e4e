"""The reference transform over HTTP: ``POST /transform/<collection>-record`` on the
connector under gunicorn, looking records up in the demo Records API on loopback."""

from __future__ import annotations

import time

import pytest
import requests

RECORD = "records:record"
FOUND = "records:found"


def transform(connector, name, batch):
    return requests.post(f"{connector.url}/transform/{name}", json=batch, timeout=120)


def test_each_entity_gets_its_record_or_a_clear_not_found(connector, upstream):
    records = {r["id"]: r for r in upstream.records("people")}
    batch = [
        {"_id": "p-2", "_updated": "2026-03-01T12:00:00.000000Z_702d32", "_ts": 1, "x": 1},
        {"_id": "nobody", "_deleted": False},
        {"_id": "p-21", "_updated": 7},  # deleted upstream: a tombstone reads as none
        {"_id": "p-1"},
    ]
    response = transform(connector, "people-record", batch)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    out = response.json()
    assert [e["_id"] for e in out] == ["p-2", "nobody", "p-21", "p-1"]
    assert [e[FOUND] for e in out] == [True, False, False, True]
    assert out[0][RECORD] == records["p-2"] and out[3][RECORD] == records["p-1"]
    assert out[1][RECORD] is None and out[2][RECORD] is None
    for sent, got in zip(batch, out, strict=True):
        assert {k: v for k, v in got.items() if k not in (RECORD, FOUND)} == sent


def test_a_whole_feed_goes_through_the_transform_in_order(connector, upstream):
    feed = connector.get("people").json()
    out = transform(connector, "people-record", feed).json()
    assert [e["_id"] for e in out] == [e["_id"] for e in feed]
    assert all(e[FOUND] for e in out)
    assert all(e[RECORD]["id"] == e["_id"] for e in out)


def test_ids_any_unicode_are_looked_up_as_one_path_segment(connector, upstream):
    upstream.insert("people", [{"id": "a/b?c", "updated_at": "2026-01-01T00:00:00.000000Z"}])
    batch = [{"_id": "a/b?c"}, {"_id": ".."}, {"_id": "日本語"}]
    out = transform(connector, "people-record", batch).json()
    assert [e[FOUND] for e in out] == [True, False, False]


def test_a_bad_batch_asks_the_upstream_nothing(connector, upstream):
    before = upstream.stats().get("GET", 0)
    response = transform(connector, "people-record", [{"_id": "p-1"}, {"name": "no id"}])
    assert response.status_code == 400
    assert response.json()["detail"] == "entity 1 has no _id"
    assert upstream.stats().get("GET", 0) == before


def test_an_unknown_transform_is_a_404(connector, upstream):
    response = transform(connector, "people-nosuch", [{"_id": "p-1"}])
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"


@pytest.mark.serial  # a bound on time: alone, so that no other test takes its CPU
def test_an_upstream_that_is_down_fails_the_batch_fast_naming_the_entities(connector, upstream):
    upstream.faults(storm={"status": 503, "count": 1_000_000, "retry_after": None})
    batch = [{"_id": f"p-{n}"} for n in range(1, 21)]
    started = time.monotonic()
    response = transform(connector, "people-record", batch)
    elapsed = time.monotonic() - started
    assert response.status_code == 502, response.text
    assert elapsed < 15
    body = response.json()
    assert body["failed"] and body["failed"][0]["_id"].startswith("p-")
    assert "transform 'people-record'" in body["detail"]
    # every lookup failed or was never started once one had failed: none is counted twice
    assert body["failed_count"] + body["not_attempted"] == len(batch)
    assert f"{body['not_attempted']} not attempted" in body["detail"]
