"""The demo Records API against its contract, through Flask's test client (no sockets),
plus one real-socket run of the command line.

Independent implementations of the contract will check the connector, so a demo that is
laxer than the contract would hide connector bugs: these tests pin the strict behaviour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from service.tools import demo_upstream

TOKEN = "unit-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIE = "2026-01-01T00:00:00.000000Z"
HOSTILE_ID = "a/b?c#d%e f ø"
HOSTILE_IDS = [HOSTILE_ID, "/lead", "trail/", "a//b", "%2F", " ", "日本語😀", "+;~", "line\nbreak"]
ROOT = Path(__file__).resolve().parents[3]


class Api:
    """The test client with the bearer token, and the admin switches as plain calls."""

    def __init__(self, **settings: Any) -> None:
        self.client = demo_upstream.create_app(token=TOKEN, **settings).test_client()

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, query_string=params, headers=AUTH)

    def put(self, resource: str, record_id: str, body: Any) -> Any:
        return self.client.put(f"/{resource}/{quote(record_id, safe='')}", json=body, headers=AUTH)

    def delete(self, resource: str, record_id: str) -> Any:
        return self.client.delete(f"/{resource}/{quote(record_id, safe='')}", headers=AUTH)

    def read(self, resource: str, record_id: str) -> Any:
        return self.client.get(f"/{resource}/{quote(record_id, safe='')}", headers=AUTH)

    def insert(self, resource: str, records: list[dict[str, Any]]) -> None:
        response = self.client.post(f"/_admin/records/{resource}", json=records)
        assert response.status_code == 200, response.json
        assert response.json == {"inserted": len(records)}

    def faults(self, **faults: Any) -> Any:
        response = self.client.put("/_admin/faults", json=faults)
        assert response.status_code == 200, response.json
        return response.json

    def stats(self) -> dict[str, int]:
        return self.client.get("/_admin/stats").json

    def walk(
        self, resource: str, cursor: str | None = None, **params: Any
    ) -> tuple[list[dict[str, Any]], int]:
        """Follow next_cursor to the end: every record and the number of pages."""
        records: list[dict[str, Any]] = []
        pages = 0
        while True:
            extra = {"cursor": cursor} if cursor else {}
            response = self.get(f"/{resource}", **params, **extra)
            assert response.status_code == 200, response.json
            pages += 1
            records.extend(response.json["data"])
            cursor = response.json["next_cursor"]
            if cursor is None:
                return records, pages


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def empty() -> Api:
    """No seed data: tests build exactly the collection they talk about."""
    return Api(seed=False)


def keys(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["updated_at"], r["id"]) for r in records]


def tie_run(api: Api, size: int = 2500) -> None:
    """A bulk import: `size` records sharing one updated_at, inserted out of order,
    between a few records just before and just after it."""
    records = [{"id": f"run-{i:05d}", "updated_at": TIE, "n": i} for i in range(size)]
    records.reverse()
    records += [{"id": f"before-{i}", "updated_at": "2025-12-31T23:59:59.999999Z"} for i in (1, 0)]
    records += [{"id": f"after-{i}", "updated_at": "2026-01-01T00:00:00.000001Z"} for i in (0, 1)]
    api.insert("bulk", records)


# --- authentication and collections -----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Bearer"}],
)
def test_a_request_without_the_right_bearer_token_is_a_json_401(api, headers):
    for response in (
        api.client.get("/people", headers=headers),
        api.client.get("/people/p-1", headers=headers),
        api.client.put("/people/p-1", json={"name": "x"}, headers=headers),
        api.client.delete("/people/p-1", headers=headers),
    ):
        assert response.status_code == 401
        assert response.content_type == "application/json"
        assert response.json["error"]
    assert api.read("people", "p-1").json["name"] == "Ada Lovelace"  # nothing was written


def test_an_unknown_collection_is_a_json_404_for_every_method(api):
    for response in (
        api.get("/no-such"),
        api.read("no-such", "x"),
        api.put("no-such", "x", {"a": 1}),
        api.delete("no-such", "x"),
        api.get("/Not_A_Name"),
    ):
        assert response.status_code == 404
        assert response.content_type == "application/json"
        assert "error" in response.json


def test_the_demo_data_has_people_and_companies_with_nested_and_non_ascii_values(api):
    people, _ = api.walk("people")
    companies, _ = api.walk("companies")
    assert len(people) == 20 and len(companies) == 10
    assert any("ø" in p["name"] or "é" in p["name"] for p in people)
    assert all(isinstance(p["address"], dict) and isinstance(p["tags"], list) for p in people)
    assert len({p["updated_at"] for p in people}) < len(people)  # shared times, like imports
    everything, _ = api.walk("people", updated_since="1970-01-01T00:00:00.000000Z")
    assert [r["id"] for r in everything if r["deleted"]] == ["p-21"]


def test_responses_are_exactly_application_json_in_utf_8(api):
    response = api.get("/people", limit=100)
    assert response.headers["Content-Type"] == "application/json"
    assert "Bjørn Hansen" in response.get_data().decode("utf-8")


# --- listing ----------------------------------------------------------------------------


def test_paging_through_a_tie_run_sees_every_record_once_in_order(empty):
    tie_run(empty, size=2500)
    records, pages = empty.walk("bulk", limit=1000)
    assert pages == 3
    assert len(records) == 2504
    assert len({r["id"] for r in records}) == 2504
    assert keys(records) == sorted(keys(records))
    assert records[0]["id"] == "before-0" and records[-1]["id"] == "after-1"


def test_a_full_last_page_has_no_cursor_but_a_full_page_with_more_to_come_does(empty):
    empty.insert("bulk", [{"id": f"r{i}", "updated_at": TIE} for i in range(4)])
    first = empty.get("/bulk", limit=2).json
    assert len(first["data"]) == 2 and first["next_cursor"] is not None
    second = empty.get("/bulk", limit=2, cursor=first["next_cursor"]).json
    assert [r["id"] for r in second["data"]] == ["r2", "r3"]
    assert second["next_cursor"] is None
    assert empty.get("/bulk", limit=4).json["next_cursor"] is None


def test_without_updated_since_only_live_records_are_listed(empty):
    empty.insert(
        "things",
        [
            {"id": "live", "updated_at": TIE},
            {"id": "gone", "updated_at": TIE, "deleted": True},
            {"id": "gone-too", "updated_at": "2026-01-02T00:00:00.000000Z", "deleted": True},
        ],
    )
    response = empty.get("/things", limit=1)
    assert [r["id"] for r in response.json["data"]] == ["live"]
    assert response.json["next_cursor"] is None  # only tombstones follow: nothing more to see


def test_updated_since_is_inclusive_and_includes_tombstones(empty):
    empty.insert(
        "things",
        [
            {"id": "old", "updated_at": "2025-12-31T23:59:59.999999Z"},
            {"id": "b", "updated_at": TIE},
            {"id": "a", "updated_at": TIE, "deleted": True, "kept": "field"},
            {"id": "new", "updated_at": "2026-01-01T00:00:00.000001Z"},
        ],
    )
    records, _ = empty.walk("things", updated_since=TIE, limit=1)
    assert [(r["id"], r["deleted"]) for r in records] == [("a", True), ("b", False), ("new", False)]
    assert records[0]["kept"] == "field"
    assert empty.get("/things", updated_since="2026-01-01T00:00:00.000002Z").json == {
        "data": [],
        "next_cursor": None,
    }


def test_a_record_changed_between_pages_shows_up_again_later_not_never(empty):
    empty.insert("things", [{"id": f"r{i}", "updated_at": TIE} for i in range(4)])
    first = empty.get("/things", limit=2).json
    assert empty.put("things", "r0", {"v": 2}).status_code == 200
    rest, _ = empty.walk("things", limit=2, cursor=first["next_cursor"])
    assert [r["id"] for r in first["data"] + rest] == ["r0", "r1", "r2", "r3", "r0"]


@pytest.mark.parametrize(
    "change",
    [
        {"limit": "3"},
        {"updated_since": TIE},
        {"cursor": "not-a-cursor"},
        {"cursor": "W10"},  # base64 of []: well formed, but not a cursor
        {"cursor": ""},
    ],
)
def test_a_cursor_used_with_other_parameters_or_forged_is_a_400(empty, change):
    empty.insert("bulk", [{"id": f"r{i}", "updated_at": TIE} for i in range(5)])
    cursor = empty.get("/bulk", limit=2).json["next_cursor"]
    params = {"limit": "2", "cursor": cursor, **change}
    response = empty.get("/bulk", **params)
    assert response.status_code == 400
    assert "cursor" in response.json["error"]


def test_a_cursor_from_another_collection_is_a_400(api):
    cursor = api.get("/people", limit=2).json["next_cursor"]
    response = api.get("/companies", limit=2, cursor=cursor)
    assert response.status_code == 400


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "many", "", "1.5", "٣"])
def test_a_limit_outside_1_to_1000_is_a_400(api, limit):
    response = api.get("/people", limit=limit)
    assert response.status_code == 400
    assert "limit" in response.json["error"]


def test_limits_1_and_1000_and_the_default_of_100_are_honoured(empty):
    empty.insert("bulk", [{"id": f"r{i:04d}", "updated_at": TIE} for i in range(1200)])
    assert len(empty.get("/bulk", limit="1").json["data"]) == 1
    assert len(empty.get("/bulk", limit="1000").json["data"]) == 1000
    assert len(empty.get("/bulk").json["data"]) == 100


@pytest.mark.parametrize(
    "since",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000000+00:00",
        "2026-01-01 00:00:00.000000Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-02-30T00:00:00.000000Z",
        "yesterday",
        "",
    ],
)
def test_updated_since_not_in_the_exact_form_is_a_400(api, since):
    response = api.get("/people", updated_since=since)
    assert response.status_code == 400
    assert "updated_since" in response.json["error"]


# --- single records and writes ----------------------------------------------------------


def test_put_ignores_id_updated_at_and_deleted_and_replaces_the_other_fields(api):
    before = api.read("people", "p-1").json
    response = api.put(
        "people",
        "p-1",
        {"id": "evil", "updated_at": "1999-01-01T00:00:00.000000Z", "deleted": True, "x": [1]},
    )
    assert response.status_code == 200
    stored = response.json
    assert stored == {"id": "p-1", "updated_at": stored["updated_at"], "deleted": False, "x": [1]}
    assert stored["updated_at"] > before["updated_at"]
    assert demo_upstream.parse_timestamp(stored["updated_at"]) is not None
    assert api.read("people", "p-1").json == stored
    assert api.read("people", "evil").status_code == 404


def test_writes_get_strictly_increasing_updated_at_even_within_one_microsecond(empty):
    empty.client.post("/_admin/collections/things")
    stamps = [empty.put("things", f"r{i % 3}", {"i": i}).json["updated_at"] for i in range(200)]
    assert stamps == sorted(set(stamps))
    assert empty.delete("things", "r0").status_code == 204
    tombstone = empty.client.get("/_admin/records/things").json[-1]
    assert tombstone["id"] == "r0" and tombstone["updated_at"] > stamps[-1]


def test_writes_sort_after_records_inserted_with_a_future_updated_at(empty):
    empty.insert("things", [{"id": "future", "updated_at": "2999-01-01T00:00:00.000000Z"}])
    stored = empty.put("things", "now", {}).json
    assert stored["updated_at"] > "2999-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"{broken", b"", b"42"])
def test_put_with_a_body_that_is_not_a_json_object_is_a_400(api, body):
    response = api.client.put(
        "/people/p-1", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert api.read("people", "p-1").json["name"] == "Ada Lovelace"


def test_put_creates_a_record_and_revives_a_tombstone(api):
    assert api.read("people", "p-21").status_code == 404
    assert api.put("people", "p-21", {"name": "Back"}).status_code == 200
    assert api.read("people", "p-21").json["deleted"] is False
    assert api.put("people", "brand-new", {"n": 1}).json["id"] == "brand-new"
    assert api.read("people", "brand-new").json["n"] == 1


def test_delete_is_204_then_the_record_is_a_404_and_a_tombstone_in_changes(api):
    response = api.delete("people", "p-2")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert api.read("people", "p-2").status_code == 404
    assert api.delete("people", "p-2").status_code == 404
    assert api.delete("people", "never-existed").status_code == 404
    live, _ = api.walk("people")
    assert "p-2" not in {r["id"] for r in live}
    changes, _ = api.walk("people", updated_since="2026-06-01T00:00:00.000000Z")
    assert [(r["id"], r["deleted"], r["name"]) for r in changes] == [("p-2", True, "Bjørn Hansen")]


@pytest.mark.parametrize("record_id", HOSTILE_IDS)
def test_a_hostile_id_round_trips_as_one_percent_encoded_segment(empty, record_id):
    empty.client.post("/_admin/collections/odd")
    stored = empty.put("odd", record_id, {"name": record_id})
    assert stored.status_code == 200
    assert stored.json["id"] == record_id
    assert empty.read("odd", record_id).json == stored.json
    assert empty.get("/odd").json["data"] == [stored.json]
    assert empty.delete("odd", record_id).status_code == 204
    assert empty.read("odd", record_id).status_code == 404


def test_an_id_that_is_a_prefix_of_a_hostile_id_is_a_different_record(empty):
    empty.client.post("/_admin/collections/odd")
    empty.put("odd", "a/b", {"v": "slash"})
    assert empty.read("odd", "a").status_code == 404
    assert empty.client.get("/odd/a/b", headers=AUTH).json["v"] == "slash"  # unencoded too


# --- faults -----------------------------------------------------------------------------


def test_a_429_storm_answers_the_next_requests_with_retry_after_then_recovers(api):
    api.faults(storm={"status": 429, "count": 3, "retry_after": 2})
    statuses = [api.get("/people") for _ in range(4)]
    assert [r.status_code for r in statuses] == [429, 429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "2"
    assert statuses[0].json["error"]
    assert api.stats()["faulted"] == 3
    assert api.client.get("/_admin/faults").json["storm"] is None


def test_a_503_storm_hits_writes_too_and_writes_nothing(api):
    api.faults(storm={"status": 503, "count": 1, "retry_after": None})
    response = api.put("people", "p-1", {"name": "lost"})
    assert response.status_code == 503
    assert "Retry-After" not in response.headers
    assert api.read("people", "p-1").json["name"] == "Ada Lovelace"


def test_fail_after_pages_lets_n_pages_through_then_fails_every_list(empty):
    tie_run(empty, size=10)
    empty.faults(fail_after_pages={"pages": 2, "status": 500})
    first = empty.get("/bulk", limit=3)
    second = empty.get("/bulk", limit=3, cursor=first.json["next_cursor"])
    assert [first.status_code, second.status_code] == [200, 200]
    third = empty.get("/bulk", limit=3, cursor=second.json["next_cursor"])
    assert third.status_code == 500 and third.json["error"]
    assert empty.get("/bulk").status_code == 500
    assert empty.read("bulk", "run-00001").status_code == 200  # single reads are unaffected
    empty.client.delete("/_admin/faults")
    resumed = empty.get("/bulk", limit=3, cursor=second.json["next_cursor"])
    assert resumed.status_code == 200 and resumed.json["data"][0]["id"] == "run-00004"


def test_fail_after_pages_in_drop_mode_closes_the_connection_without_a_response(empty):
    tie_run(empty, size=10)
    empty.faults(fail_after_pages={"pages": 0, "mode": "drop"})
    with pytest.raises(ConnectionAbortedError):
        empty.get("/bulk")
    assert empty.stats()["faulted"] == 1


def test_fail_writes_fails_the_next_n_writes_without_applying_them(api):
    api.faults(fail_writes={"count": 2, "status": 502})
    assert api.put("people", "p-1", {"name": "lost"}).status_code == 502
    assert api.delete("people", "p-1").status_code == 502
    assert api.read("people", "p-1").json["name"] == "Ada Lovelace"
    assert api.put("people", "p-1", {"name": "kept"}).status_code == 200


def test_fail_write_ids_fails_only_those_ids_until_cleared(api):
    api.faults(fail_write_ids={"ids": ["p-1", HOSTILE_ID], "status": 422})
    for _ in range(2):
        assert api.put("people", "p-1", {"name": "lost"}).status_code == 422
        assert api.put("people", HOSTILE_ID, {"name": "lost"}).status_code == 422
    assert api.delete("people", "p-1").status_code == 422
    assert api.put("people", "p-2", {"name": "fine"}).status_code == 200
    api.faults(fail_write_ids=None)
    assert api.put("people", "p-1", {"name": "now"}).json["name"] == "now"


@pytest.mark.serial  # a bound on time: alone, so that no other test takes its CPU
def test_latency_delays_every_api_response_but_not_the_admin_api(api):
    # A long latency, so that an admin call that took it too could not pass for a slow
    # machine's: the admin call must come back well within it.
    api.faults(latency_ms=2000)
    started = time.monotonic()
    assert api.get("/people", limit=1).status_code == 200
    assert time.monotonic() - started >= 2
    started = time.monotonic()
    api.stats()
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "faults",
    [
        {"storm": {"status": 200, "count": 1}},
        {"storm": {"status": 429}},
        {"fail_after_pages": {"pages": 1, "mode": "explode"}},
        {"fail_writes": {"count": -1}},
        {"fail_write_ids": {"ids": "p-1"}},
        {"latency_ms": -5},
        {"no_such_fault": 1},
    ],
)
def test_a_malformed_fault_is_a_400_and_changes_nothing(api, faults):
    response = api.client.put("/_admin/faults", json=faults)
    assert response.status_code == 400
    assert api.get("/people").status_code == 200


def test_stats_count_api_requests_by_method_including_faulted_ones(api):
    api.faults(storm={"status": 502, "count": 1, "retry_after": None})
    api.get("/people")
    api.get("/people")
    api.read("people", "p-1")
    api.put("people", "p-1", {})
    api.delete("people", "p-1")
    api.client.get("/_admin/records/people")  # admin calls are not counted
    assert api.stats() == {"GET": 3, "PUT": 1, "DELETE": 1, "list_pages": 2, "faulted": 1}


def test_reset_clears_data_faults_and_stats_and_reseeds_when_asked(api):
    api.insert("extra", [{"id": "x"}])
    api.faults(storm={"status": 503, "count": 5})
    api.client.post("/_admin/reset")
    assert api.get("/people").status_code == 404  # no seed unless asked
    assert api.get("/extra").status_code == 404
    assert api.stats() == {"GET": 2, "PUT": 0, "DELETE": 0, "list_pages": 2, "faulted": 0}
    api.client.post("/_admin/reset", json={"seed": True})
    assert len(api.get("/people").json["data"]) == 20


def test_admin_records_dump_every_record_in_order_including_tombstones(empty):
    tie_run(empty, size=5)
    empty.insert("bulk", [{"id": "run-00002", "updated_at": TIE, "deleted": True}])
    dumped = empty.client.get("/_admin/records/bulk").json
    assert keys(dumped) == sorted(keys(dumped)) and len(dumped) == 9
    assert [r["id"] for r in dumped if r["deleted"]] == ["run-00002"]


def test_admin_insert_without_updated_at_stamps_the_batch_with_one_new_time(empty):
    empty.insert("things", [{"id": "b"}, {"id": "a", "nested": {"k": [1]}}])
    records = empty.get("/things").json["data"]
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["updated_at"] == records[1]["updated_at"]
    assert records[0]["nested"] == {"k": [1]} and records[0]["deleted"] is False


@pytest.mark.parametrize(
    "records",
    [
        {"id": "x"},
        [{"name": "no id"}],
        [{"id": ""}],
        [{"id": "x", "updated_at": "2026-01-01T00:00:00Z"}],
        [{"id": "x", "deleted": "yes"}],
    ],
)
def test_admin_insert_of_malformed_records_is_a_400_and_inserts_nothing(empty, records):
    response = empty.client.post("/_admin/records/things", json=records)
    assert response.status_code == 400
    assert empty.get("/things").status_code == 404


# --- synthetic collections --------------------------------------------------------------


def test_a_synthetic_collection_pages_in_id_order_across_tie_runs():
    bench = Api(seed=False, synthetic={"bench": 2500}, tie_size=1000)
    records, pages = bench.walk("bench", limit=1000)
    assert pages == 3
    assert [r["id"] for r in records] == [f"rec-{i:09d}" for i in range(2500)]
    assert len({r["updated_at"] for r in records}) == 3
    assert records[999]["updated_at"] < records[1000]["updated_at"]
    assert records[1000]["updated_at"] == records[1999]["updated_at"]
    size = len(json.dumps(records[1234], ensure_ascii=False).encode("utf-8"))
    assert 200 <= size <= 450


def test_a_synthetic_collection_resumes_exactly_at_a_tie_run_boundary():
    bench = Api(seed=False, synthetic={"bench": 3000}, tie_size=1000)
    second_run = bench.read("bench", "rec-000001000").json["updated_at"]
    since = bench.get("/bench", limit=3, updated_since=second_run).json
    assert [r["id"] for r in since["data"]] == [f"rec-{i:09d}" for i in (1000, 1001, 1002)]
    just_before = demo_upstream.format_timestamp(demo_upstream.parse_timestamp(second_run) - 1)
    across = bench.get("/bench", limit=1, updated_since=just_before).json
    assert [r["id"] for r in across["data"]] == ["rec-000001000"]
    page = bench.get("/bench", limit=998).json
    tail = bench.get("/bench", limit=998, cursor=page["next_cursor"]).json
    assert [r["id"] for r in tail["data"][:3]] == [f"rec-{i:09d}" for i in (998, 999, 1000)]


@pytest.mark.serial  # a bound on time: alone, so that no other test takes its CPU
def test_a_huge_synthetic_collection_answers_any_page_without_materialising_it():
    bench = Api(seed=False, synthetic={"huge": 10**9}, tie_size=1000)
    started = time.monotonic()
    last_run = bench.read("huge", f"rec-{10**9 - 1:09d}").json["updated_at"]
    page = bench.get("/huge", limit=1000, updated_since=last_run).json
    assert time.monotonic() - started < 5
    assert page["data"][0]["id"] == f"rec-{10**9 - 1000:09d}"
    assert page["data"][-1]["id"] == f"rec-{10**9 - 1:09d}"
    assert page["next_cursor"] is None


def test_a_synthetic_collection_is_read_only():
    bench = Api(seed=False, synthetic={"bench": 10})
    assert bench.put("bench", "rec-000000001", {"x": 1}).status_code == 405
    assert bench.delete("bench", "rec-000000001").status_code == 405
    assert bench.client.post("/_admin/records/bench", json=[{"id": "x"}]).status_code == 405
    assert bench.read("bench", "rec-000000010").status_code == 404
    assert bench.read("bench", "rec-1").status_code == 404
    assert bench.read("bench", "rec-000000009").json["deleted"] is False


def test_a_synthetic_collection_survives_a_reset():
    bench = Api(seed=False, synthetic={"bench": 10})
    bench.client.post("/_admin/reset")
    assert len(bench.get("/bench").json["data"]) == 10


# --- the command line, on a real socket -------------------------------------------------


def _read_line(stream: Any, seconds: float) -> str:
    """The first line of a child's output, without hanging the suite if it never comes."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return lines[0] if lines else ""


def test_the_command_line_serves_real_http_drops_connections_and_stops_on_sigterm():
    secret = "cli-s3cret-token"
    env = {k: v for k, v in os.environ.items() if k != "DEMO_UPSTREAM_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.tools.demo_upstream", "--port", "0", "--no-seed"]
        + ["--token", secret, "--synthetic", "bench=50", "--tie-size", "10"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(process.stdout, 20)
        assert line.startswith("demo upstream listening on http://127.0.0.1:"), line
        base = line.split()[-1]

        def call(method: str, path: str, body: Any = None, token: str = secret) -> Any:
            data = None if body is None else json.dumps(body).encode("utf-8")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            req = urllib.request.Request(base + path, data, headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=10) as response:
                    return response.status, json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        assert call("POST", "/_admin/collections/odd")[0] == 201
        path = "/odd/" + quote(HOSTILE_ID, safe="")
        status, stored = call("PUT", path, {"name": "hostile"})
        assert status == 200 and stored["id"] == HOSTILE_ID
        assert call("GET", path) == (200, stored)
        assert call("GET", path, token="wrong")[0] == 401
        assert len(call("GET", "/bench?limit=1000")[1]["data"]) == 50

        call("PUT", "/_admin/faults", {"fail_after_pages": {"pages": 0, "mode": "drop"}})
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            call("GET", "/odd")
        call("DELETE", "/_admin/faults")
        assert call("GET", "/odd")[1]["data"] == [stored]  # the server lived on

        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert secret not in line + out + err
    assert "GET /odd/" in err  # werkzeug's access log, and nothing more per request
