"""Deletion detection and upstream failures of the sink, as Sesam and the upstream see them:
what a full sync deletes, and which status Sesam gets when the upstream fails or is slow.

The connector runs under gunicorn, the demo Records API on loopback (framework_kit.py).
"""

from __future__ import annotations

import time

import pytest

from service.tests.functional.test_sink_http import Sync
from service.tests.functional.test_sink_http import ok
from service.tests.functional.test_sink_http import people
from service.tests.functional.test_sink_http import post

PEOPLE = [f"p-{i}" for i in range(1, 21)]  # the demo's live people


@pytest.fixture
def deleting(connector_factory, upstream):
    return connector_factory(FULL_SYNC_DELETE="true")


def wait_for(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# --- the second full sync ------------------------------------------------------------------


def test_a_second_full_sync_of_the_same_records_deletes_none_of_them(deleting, upstream):
    """Sesam runs a full sync again and again; each one sends every record. A connector
    that took the second sync's requests for retries of the first stored no ids for it,
    and deleted everything at its end."""
    for run in range(3):
        responses = Sync(deleting, "people").run(people(PEOPLE), batch_size=7)
        bodies = [ok(r) for r in responses]
        assert [b["full_sync"]["verdict"] for b in bodies] == ["start"] + ["continue"] * 3, run
        assert bodies[-1]["full_sync"]["deletion"] == "done"
        assert bodies[-1]["full_sync"]["deleted_missing"] == 0, f"sync {run + 1} deleted"
        assert sorted(upstream.live("people")) == sorted(PEOPLE)


def test_a_second_full_sync_deletes_only_what_it_did_not_send(deleting, upstream):
    ok(Sync(deleting, "people").run(people(PEOPLE))[-1])
    kept = PEOPLE[:15]
    last = ok(Sync(deleting, "people").run(people(kept), batch_size=4)[-1])
    assert last["full_sync"]["deleted_missing"] == 5
    assert sorted(upstream.live("people")) == sorted(kept)


def test_a_retried_first_request_of_a_second_sync_keeps_its_records(deleting, upstream):
    """The answer to a sync's first request is lost and Sesam sends it again: a retry. The
    ids it sent must still count as sent when the sync ends."""
    ok(Sync(deleting, "people").run(people(PEOPLE))[-1])
    sync = Sync(deleting, "people")
    first = sync.params()
    ok(post(deleting, "people", people(PEOPLE[:10]), params=first))
    again = ok(post(deleting, "people", people(PEOPLE[:10]), params=first))
    assert again["full_sync"]["verdict"] == "retry"
    sync.previous = first["request_id"]
    ok(sync.send(people(PEOPLE[10:])))
    last = ok(sync.send([], is_last=True))
    assert last["full_sync"]["deleted_missing"] == 0
    assert sorted(upstream.live("people")) == sorted(PEOPLE)


def test_a_full_sync_that_began_before_deletion_was_on_deletes_nothing(
    connector_factory, upstream, tmp_path
):
    """Switching FULL_SYNC_DELETE on while a sync runs: that sync did not record what it
    sent, so its end must not delete (everything it sent before would look missing)."""
    state = str(tmp_path / "shared-state")
    before = connector_factory(STATE_DIR=state)
    sync = Sync(before, "people")
    assert ok(sync.send(people(PEOPLE[:10])))["full_sync"]["deletion"] == "off"
    after = connector_factory(STATE_DIR=state, FULL_SYNC_DELETE="true")  # restarted, now on
    sync.connector = after
    assert ok(sync.send(people(PEOPLE[10:12])))["full_sync"]["deletion"] == "untracked"
    last = ok(sync.send([], is_last=True))
    assert last["full_sync"]["deletion"] == "skipped_untracked"
    assert last["full_sync"]["deleted_missing"] == 0
    assert sorted(upstream.live("people")) == sorted(PEOPLE)
    assert "began before FULL_SYNC_DELETE was on" in after.log_text()
    # the next sync is tracked from its start, and deletes
    last = ok(Sync(after, "people").run(people(PEOPLE[:12]))[-1])
    assert last["full_sync"]["deletion"] == "done"
    assert sorted(upstream.live("people")) == sorted(PEOPLE[:12])


# --- listing the live ids fails ------------------------------------------------------------


def test_a_failure_while_listing_live_ids_is_a_502_and_the_retry_finishes(deleting, upstream):
    sync = Sync(deleting, "people")
    ok(sync.send(people(PEOPLE[:18])))
    upstream.faults(fail_after_pages={"pages": 0, "status": 500})
    params = sync.params(is_last=True)
    failed = post(deleting, "people", [], params=params)
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"] == "Bad Gateway"
    assert "listing the upstream's live records failed" in failed.json()["detail"]
    assert "500" in failed.json()["detail"]
    assert sorted(upstream.live("people")) == sorted(PEOPLE)  # nothing deleted
    upstream.clear_faults()
    retried = ok(post(deleting, "people", [], params=params))  # not advanced: accepted
    assert retried["full_sync"]["verdict"] == "continue"
    assert retried["full_sync"]["deleted_missing"] == 2
    assert sorted(upstream.live("people")) == sorted(PEOPLE[:18])


@pytest.mark.serial  # its good path has a 0.3 s read timeout: alone, so that no test slows it
def test_listing_live_ids_that_times_out_is_a_504(connector_factory, upstream):
    slow = connector_factory(
        FULL_SYNC_DELETE="true", UPSTREAM_READ_TIMEOUT="0.3", UPSTREAM_RETRIES="0"
    )
    sync = Sync(slow, "people")
    ok(sync.send(people(PEOPLE[:18])))
    upstream.faults(latency_ms=1500)
    params = sync.params(is_last=True)
    failed = post(slow, "people", [], params=params)  # no writes: only the listing
    assert failed.status_code == 504, failed.text
    assert failed.json()["error"] == "Upstream Timeout"
    assert "listing the upstream's live records failed" in failed.json()["detail"]
    upstream.clear_faults()
    assert sorted(upstream.live("people")) == sorted(PEOPLE)
    assert ok(post(slow, "people", [], params=params))["full_sync"]["deleted_missing"] == 2


# --- writes that time out ------------------------------------------------------------------


@pytest.mark.serial  # its good path has a 0.3 s read timeout: alone, so that no test slows it
def test_writes_that_time_out_are_a_504_naming_them(connector_factory, upstream):
    slow = connector_factory(UPSTREAM_READ_TIMEOUT="0.3", UPSTREAM_RETRIES="0")
    sync = Sync(slow, "people")
    ok(sync.send(people(["p-1"])))
    upstream.faults(latency_ms=1500)
    params = sync.params()
    failed = post(slow, "people", people(["late-1"]), params=params)
    assert failed.status_code == 504, failed.text
    body = failed.json()
    assert body["error"] == "Upstream Timeout"
    assert [(f["_id"], f["upstream_status"]) for f in body["failed"]] == [("late-1", None)]
    assert "timed out" in body["failed"][0]["reason"]
    assert "the full-sync sequence did not advance" in body["detail"]
    assert body["summary"]["full_sync"]["verdict"] == "continue"
    # The slow upstream still finishes the one write it took too long for (no retries):
    # wait for it, so that it cannot land in the next test's data.
    wait_for(lambda: "late-1" in upstream.live("people"), "the late write to land")
    upstream.clear_faults()
    retried = ok(post(slow, "people", people(["late-1"]), params=params))
    assert retried["full_sync"]["verdict"] == "continue"


def test_an_empty_one_request_sync_after_a_full_one_deletes_nothing(deleting, upstream):
    """The guard against an upstream wiped by an empty full sync counts only this sync's
    entities, not the previous sync's."""
    ok(Sync(deleting, "people").run(people(PEOPLE))[-1])
    last = ok(Sync(deleting, "people").send([], is_last=True))  # is_first and is_last
    assert last["full_sync"]["deletion"] == "skipped_empty"
    assert sorted(upstream.live("people")) == sorted(PEOPLE)


def test_a_last_request_that_carries_entities_counts_them_with_the_earlier_ones(deleting, upstream):
    sync = Sync(deleting, "people")
    ok(sync.send(people(PEOPLE[:5])))
    last = ok(sync.send(people(PEOPLE[5:10]), is_last=True))
    assert last["full_sync"]["deletion"] == "done"
    assert last["full_sync"]["deleted_missing"] == 10
    assert sorted(upstream.live("people")) == sorted(PEOPLE[:10])


@pytest.mark.parametrize(
    ("batch", "live"),
    [
        (people(["p-1", "p-1"]), ["p-1"]),
        (people(["p-1", "p-1", "p-2"]), ["p-1", "p-2"]),
        (people(["p-1", "p-2"]) + people(["p-1"], _deleted=True), ["p-2"]),
    ],
    ids=["one id twice", "one id twice and another", "the last version deleted"],
)
def test_a_one_request_sync_whose_ids_repeat_counts_each_last_version_once(
    deleting, upstream, batch, live
):
    """An id sent twice in one batch is one entity, its last version: live or deleted.
    A one-request full sync of them keeps the live ones and deletes the rest."""
    last = ok(Sync(deleting, "people").send(batch, is_last=True))
    assert last["full_sync"]["deletion"] == "done"
    sent = {entity["_id"] for entity in batch}
    assert last["full_sync"]["deleted_missing"] == len(PEOPLE) - len(sent)
    assert sorted(upstream.live("people")) == live


def test_a_one_request_sync_whose_only_id_ends_deleted_is_empty_and_deletes_nothing(
    deleting, upstream
):
    """p-1 sent live, then deleted, in one batch: the sync holds no live entity, so the
    guard against an upstream wiped by an empty full sync holds (only p-1 goes)."""
    batch = people(["p-1"]) + people(["p-1"], _deleted=True)
    last = ok(Sync(deleting, "people").send(batch, is_last=True))
    assert last["full_sync"]["deletion"] == "skipped_empty"
    assert sorted(upstream.live("people")) == sorted(PEOPLE[1:])
