"""The demos' test switches that the conformance suite's loss checks stand on: a clock
made coarse or frozen (writes that share one time), and a record changed between two
list pages. Through Flask's test client, no sockets."""

from __future__ import annotations

from service.tools import demo_tickets
from service.tools import demo_upstream

RECORDS_AUTH = {"Authorization": "Bearer t"}
TICKETS_AUTH = {"X-Api-Key": "k"}


def records_api():
    client = demo_upstream.create_app(token="t", seed=False).test_client()
    client.post("/_admin/collections/things")
    return client


def test_a_frozen_records_clock_stamps_every_write_with_one_time_until_thawed():
    api = records_api()
    frozen = api.put("/_admin/clock", json={"freeze": True}).json
    assert frozen["frozen"] is True
    times = {
        api.put(f"/things/{i}", json={}, headers=RECORDS_AUTH).json["updated_at"] for i in "bac"
    }
    assert times == {frozen["now"]}
    advanced = api.put("/_admin/clock", json={"advance": 1.5}).json["now"]
    assert (
        api.put("/things/d", json={}, headers=RECORDS_AUTH).json["updated_at"]
        == advanced
        > frozen["now"]
    )
    api.delete("/_admin/clock")
    later = api.put("/things/e", json={}, headers=RECORDS_AUTH).json["updated_at"]
    assert later > advanced  # a thawed clock never goes back before what it handed out


def test_a_coarse_records_clock_cuts_times_to_whole_ticks():
    api = records_api()
    api.put("/_admin/clock", json={"tick": 1})
    stamped = api.put("/things/a", json={}, headers=RECORDS_AUTH).json["updated_at"]
    assert stamped.endswith(".000000Z")


def test_the_records_demo_resets_its_clock_and_refuses_bad_switches():
    api = records_api()
    api.put("/_admin/clock", json={"freeze": True})
    api.post("/_admin/reset", json={"seed": False})
    assert api.get("/_admin/clock").json["frozen"] is False
    assert api.put("/_admin/clock", json={"advance": 1}).status_code == 400  # not frozen
    assert api.put("/_admin/clock", json={"tick": 0}).status_code == 400
    assert api.put("/_admin/clock", json={"freeze": "yesterday"}).status_code == 400


def test_a_records_change_after_pages_happens_before_the_next_page_once():
    api = records_api()
    records = [{"id": f"r{n}", "updated_at": f"2026-01-01T00:00:0{n}.000000Z"} for n in range(6)]
    api.post("/_admin/records/things", json=records)
    assert (
        api.put(
            "/_admin/faults", json={"change_after_pages": {"pages": 1, "id": "nope"}}
        ).status_code
        == 400
    )
    api.put("/_admin/faults", json={"change_after_pages": {"pages": 1, "id": "r1"}})
    first = api.get("/things?limit=3", headers=RECORDS_AUTH).json
    assert [r["id"] for r in first["data"]] == ["r0", "r1", "r2"]
    second = api.get(f"/things?limit=3&cursor={first['next_cursor']}", headers=RECORDS_AUTH).json
    assert [r["id"] for r in second["data"]] == ["r3", "r4", "r5"]
    assert second["next_cursor"] is not None  # r1 moved to the end
    third = api.get(f"/things?limit=3&cursor={second['next_cursor']}", headers=RECORDS_AUTH).json
    assert [(r["id"], r["changed"]) for r in third["data"]] == [("r1", 1)]
    assert api.get("/_admin/faults").json["change_after_pages"] is None


def tickets_api():
    return demo_tickets.create_app(api_key="k", seed=False).test_client()


def test_a_frozen_tickets_clock_shares_one_second_and_advances_by_whole_seconds():
    api = tickets_api()
    api.post("/_admin/collections/tickets")
    frozen = api.put("/_admin/clock", json={"freeze": "2026-05-01T10:00:00Z"}).json["now"]
    assert frozen == "2026-05-01T10:00:00Z"
    times = {
        api.put(f"/tickets/{n}", json={}, headers=TICKETS_AUTH).json["modified_at"]
        for n in (9, 17, 3)
    }
    assert times == {frozen}
    api.put("/_admin/clock", json={"advance": 2})
    assert (
        api.put("/tickets/4", json={}, headers=TICKETS_AUTH).json["modified_at"]
        == "2026-05-01T10:00:02Z"
    )
    assert api.put("/_admin/clock", json={"advance": 0.5}).status_code == 400


def test_the_tickets_list_pages_by_number_in_time_then_id_order_and_shows_deletions_with_the_filter():
    api = tickets_api()
    tickets = [{"id": n, "modified_at": "2026-01-02T03:04:05Z"} for n in (17, 9, 3)]
    tickets.append({"id": 1, "modified_at": "2026-01-02T03:04:06Z", "deleted": True})
    api.post("/_admin/records/tickets", json=tickets)
    page = api.get("/tickets?per_page=2", headers=TICKETS_AUTH).json
    assert [t["id"] for t in page["items"]] == [3, 9]
    assert (page["page"], page["total"], page["total_pages"]) == (1, 3, 2)
    assert [
        t["id"] for t in api.get("/tickets?per_page=2&page=2", headers=TICKETS_AUTH).json["items"]
    ] == [17]
    changed = api.get("/tickets?modified_since=2026-01-02T03:04:05Z", headers=TICKETS_AUTH).json
    assert [(t["id"], t["deleted"]) for t in changed["items"]] == [
        (3, False),
        (9, False),
        (17, False),
        (1, True),
    ]
    assert (
        api.get(
            "/tickets?modified_since=2026-01-02T03:04:05.000Z", headers=TICKETS_AUTH
        ).status_code
        == 400
    )
    assert api.get("/tickets?per_page=101", headers=TICKETS_AUTH).status_code == 400
    assert api.get("/tickets", headers={"X-Api-Key": "wrong"}).status_code == 401
    assert api.get("/tickets/abc", headers=TICKETS_AUTH).status_code == 400
    assert api.delete("/tickets/9", headers=TICKETS_AUTH).status_code == 204
    assert api.delete("/tickets/9", headers=TICKETS_AUTH).status_code == 404


def test_a_tickets_change_after_pages_shifts_the_page_numbers_as_a_real_writer_would():
    api = tickets_api()
    api.post(
        "/_admin/records/tickets",
        json=[{"id": n, "modified_at": f"2026-01-02T03:04:0{n}Z"} for n in range(1, 7)],
    )
    api.put("/_admin/faults", json={"change_after_pages": {"pages": 1, "id": 2}})
    first = [t["id"] for t in api.get("/tickets?per_page=3", headers=TICKETS_AUTH).json["items"]]
    second = [
        t["id"] for t in api.get("/tickets?per_page=3&page=2", headers=TICKETS_AUTH).json["items"]
    ]
    assert (first, second) == (
        [1, 2, 3],
        [5, 6, 2],
    )  # 4 moved up onto page 1: a naive walk loses it
