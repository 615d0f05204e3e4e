"""The feed over HTTP: the connector under gunicorn, the demo Records API on loopback."""

from __future__ import annotations

import json
import time

import pytest
import requests

from service.framework.upstream import segment
from service.tools.sesam_client import Paging

TIE = "2026-01-01T00:00:00.000000Z"
HOSTILE_IDS = [
    "a/b",
    "a?b",
    "c#d",
    "100%",
    "with space",
    "Ærøskøbing",
    "日本語",
    "😀",
    "..",
    ".",
    "%2F",
    "+plus",
    "semi;colon",
    "~tnot-a-date",
    "trailing/",
]


def pull(connector, resource, **params):
    response = connector.get(resource, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def sesam_paging(connector, resource, page_size, since=None):
    """What Sesam's json source does with supports_since, is_chronological, page_size."""

    def page(params):
        got = pull(connector, resource, **params)
        assert len(got) <= page_size
        return got

    paging = Paging(page_size, since)
    got = [entity for entities in paging.pages(page) for entity in entities]
    return got, paging.requests


def seed_tie_run(upstream, resource="bulk", size=1500):
    """A bulk import: ``size`` records sharing one updated_at, between a few others."""
    records = [
        {"id": f"before-{i}", "updated_at": "2025-12-31T23:59:59.999999Z", "n": i} for i in range(3)
    ]
    records += [{"id": f"run-{i:05d}", "updated_at": TIE, "n": i} for i in range(size)]
    records += [
        {"id": f"after-{i}", "updated_at": "2026-01-01T00:00:00.000001Z", "n": i} for i in range(3)
    ]
    upstream.insert(resource, records)
    return records


def test_a_full_pull_is_every_live_record_as_an_entity(connector, upstream):
    live = upstream.live("people")
    entities = pull(connector, "people")
    assert sorted(e["_id"] for e in entities) == sorted(live)
    for entity in entities:
        record = live[entity["_id"]]
        assert entity["_deleted"] is False
        for field, value in record.items():
            assert entity[field] == value
    tokens = [e["_updated"] for e in entities]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.mark.parametrize("page_size", [13, 250, 1000, 5000])
def test_sesam_paging_reproduces_a_full_pull_over_a_tie_run(connector, upstream, page_size):
    seed_tie_run(upstream)
    full = pull(connector, "bulk")
    assert len(full) == 1506
    paged, made = sesam_paging(connector, "bulk", page_size)
    assert [e["_id"] for e in paged] == [e["_id"] for e in full]
    assert paged == full
    assert made == -(-1506 // page_size) + 1  # the pages, then the empty page that ends it


@pytest.mark.parametrize("cut", [0, 3, 4, 700, 1501, 1502, 1505])
def test_since_resumes_exactly_from_inside_the_run(connector, upstream, cut):
    seed_tie_run(upstream)
    full = pull(connector, "bulk")
    rest = pull(connector, "bulk", since=full[cut]["_updated"])
    assert [e["_id"] for e in rest] == [e["_id"] for e in full[cut + 1 :]]


def test_limit_caps_the_entities(connector, upstream):
    seed_tie_run(upstream)
    first = pull(connector, "bulk", limit=5)
    assert [e["_id"] for e in first] == [
        "before-0",
        "before-1",
        "before-2",
        "run-00000",
        "run-00001",
    ]


def test_deletes_arrive_as_tombstones_after_since(connector, upstream):
    before = pull(connector, "people", since="1970-01-01T00:00:00.000000Z")
    since = before[-1]["_updated"]  # as a Sesam pipe would keep it after an incremental run
    victim = next(e["_id"] for e in before if not e["_deleted"])
    assert upstream.api("DELETE", f"people/{segment(victim)}").status_code == 204
    changes = pull(connector, "people", since=since)
    assert [(e["_id"], e["_deleted"]) for e in changes] == [(victim, True)]
    assert changes[0]["_updated"] > since
    assert victim not in {e["_id"] for e in pull(connector, "people")}


def test_hostile_ids_round_trip_and_resume(connector, upstream):
    upstream.create("odd")
    for record_id in HOSTILE_IDS:
        response = upstream.api("PUT", f"odd/{segment(record_id)}", json={"name": record_id})
        assert response.status_code == 200, (record_id, response.text)
    entities = pull(connector, "odd")
    assert [e["_id"] for e in entities] == HOSTILE_IDS  # written one after another
    assert all(e["name"] == e["_id"] for e in entities)
    for cut in range(len(entities)):
        rest = pull(connector, "odd", since=entities[cut]["_updated"])
        assert [e["_id"] for e in rest] == HOSTILE_IDS[cut + 1 :]


@pytest.mark.parametrize(
    "storm",
    [
        {"status": 429, "count": 3, "retry_after": 1},
        {"status": 503, "count": 4, "retry_after": None},
        {"status": 502, "count": 3, "retry_after": None},
    ],
)
def test_the_client_rides_out_a_storm(connector, upstream, storm):
    expected = pull(connector, "people")
    upstream.faults(storm=storm)
    assert pull(connector, "people") == expected
    assert upstream.stats()["faulted"] >= storm["count"]


def test_the_client_rides_out_dropped_connections(connector, upstream):
    expected = pull(connector, "people")
    upstream.faults(storm={"status": 500, "count": 2, "retry_after": None, "mode": "drop"})
    assert pull(connector, "people") == expected
    assert upstream.stats()["faulted"] == 2


def test_a_failure_before_the_first_byte_is_a_json_502_naming_status_and_url(connector, upstream):
    upstream.faults(storm={"status": 429, "count": 1000, "retry_after": 3600})
    response = connector.get("people")
    assert response.status_code == 502
    body = response.json()
    assert "429" in body["detail"] and "/people" in body["detail"]
    assert upstream.token not in response.text
    assert "429" in connector.log_text()


def read_broken(connector, path):
    """The raw body of a response that may be cut off, and whether it was cut."""
    response = connector.http.get(f"{connector.url}/{path}", stream=True, timeout=60)
    body = b""
    broken = False
    try:
        for chunk in response.iter_content(chunk_size=None):
            body += chunk
    except requests.exceptions.ChunkedEncodingError:
        broken = True
    return response, body, broken


def test_a_failure_after_the_first_page_breaks_the_body(connector, upstream):
    seed_tie_run(upstream, size=600)  # several upstream pages at the test page size
    upstream.faults(fail_after_pages={"pages": 1, "status": 500, "mode": "status"})
    response, body, broken = read_broken(connector, "bulk")
    assert response.status_code == 200  # the stream had begun
    assert broken
    assert body.startswith(b"[{")
    assert not body.rstrip().endswith(b"]")
    with pytest.raises(ValueError):
        json.loads(body)
    log = connector.log_text()
    assert "feed bulk broken" in log and "500" in log and "/bulk" in log


def test_connections_dropped_for_good_after_the_first_page_break_the_body(connector, upstream):
    seed_tie_run(upstream, size=600)
    upstream.faults(fail_after_pages={"pages": 1, "mode": "drop"})
    response, body, broken = read_broken(connector, "bulk")
    assert response.status_code == 200
    assert broken
    with pytest.raises(ValueError):
        json.loads(body)
    assert "feed bulk broken" in connector.log_text()


def test_an_unknown_collection_is_a_json_404(connector):
    response = connector.get("no-such-things")
    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"
    # The error first, as the docs show it (docs/operations.md), then the detail.
    assert response.text.startswith('{"error":"Not Found","detail":')


def test_a_name_that_cannot_be_a_collection_is_a_json_404(connector):
    response = connector.get("Not_A_Collection")
    assert response.status_code == 404
    assert "collection" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"since": "last tuesday"}, "since"),
        ({"since": "2026-01-01T00:00:00Z"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_malformed_since_or_limit_is_a_json_400(connector, params, word):
    response = connector.get("people", params=params)
    assert response.status_code == 400
    assert word in response.json()["detail"]


def test_the_token_never_reaches_the_log(connector, upstream):
    upstream.faults(storm={"status": 401, "count": 1, "retry_after": None})
    response = connector.get("people")
    assert response.status_code == 502
    assert "401" in response.json()["detail"]
    assert upstream.token not in response.text
    assert upstream.token not in connector.log_text()


def test_a_secret_in_a_request_line_is_hidden_in_gunicorns_access_log(connector, upstream):
    """gunicorn writes the access log, not the app: its lines are masked all the same."""
    before = len(connector.log_text())
    response = connector.get("people", params={"note": upstream.token})
    assert response.status_code == 200
    deadline = time.monotonic() + 30  # gunicorn logs the request once it has answered
    while "note=<hidden>" not in connector.log_text()[before:]:
        assert time.monotonic() < deadline, connector.log_text()[before:]
        time.sleep(0.05)
    assert upstream.token not in connector.log_text()


def test_a_slow_upstream_is_a_json_504(upstream, connector_factory):
    slow = connector_factory(UPSTREAM_READ_TIMEOUT="0.3", UPSTREAM_RETRIES="1")
    upstream.faults(latency_ms=1500)
    response = slow.get("people")
    assert response.status_code == 504
    assert "timed out" in response.json()["detail"]
