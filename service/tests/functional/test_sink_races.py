"""Requests of one full sync that overlap: two copies of one request at once (Sesam's retry
of a request whose answer is late), and a new sync that starts while a request of the old
one is being written. Sesam must see 200s and a retry, or a 409: never a 500.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from service.framework import sink as sink_module
from service.tests.framework_kit import reference_app
from service.tests.functional.test_sink_http import Sync
from service.tests.functional.test_sink_http import ok
from service.tests.functional.test_sink_http import people
from service.tests.functional.test_sink_http import post
from service.tools.servers import wait_until


def test_two_copies_of_one_request_at_once_are_a_continue_and_a_retry(connector, upstream):
    """Over HTTP, on gunicorn's two workers: both copies are answered 200, one advanced
    the sequence and the other was recognised as its retry (the store's own race is
    tested deterministically in unit/test_sequence_races.py)."""
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    upstream.faults(latency_ms=300)  # both copies are written at the same time
    params = sync.params()
    with ThreadPoolExecutor(max_workers=2) as pool:
        copies = list(
            pool.map(lambda _: post(connector, "people", people(["p-2"]), params=params), range(2))
        )
    assert [c.status_code for c in copies] == [200, 200], [c.text for c in copies]
    # however the two interleaved, the sequence advanced once
    assert sorted(c.json()["full_sync"]["verdict"] for c in copies) == ["continue", "retry"]
    upstream.clear_faults()
    sync.previous = params["request_id"]
    assert ok(sync.send([], is_last=True))["full_sync"]["verdict"] == "continue"


def hold_upserts(app, held):
    """Hold each upsert for which ``held(entity_id)`` is true: ``writing`` is set when one
    has begun, and it goes on when ``release`` is set."""
    adapter = app.view_functions["sink"].__self__.adapter
    writing, release = threading.Event(), threading.Event()
    upsert = adapter.upsert

    def held_upsert(collection, entity_id, record):
        if held(entity_id):
            writing.set()
            assert release.wait(60)
        upsert(collection, entity_id, record)

    adapter.upsert = held_upsert
    return writing, release


def hold_deletes(app, done: list[str] | None = None):
    """Hold each delete: ``deleting`` is set when one has begun, and it goes on when
    ``release`` is set; each delete, once made, is noted in ``done`` (``deleted <key>``)."""
    adapter = app.view_functions["sink"].__self__.adapter
    deleting, release = threading.Event(), threading.Event()
    done = [] if done is None else done
    delete = adapter.delete

    def held_delete(collection, key):
        deleting.set()
        assert release.wait(60)
        delete(collection, key)
        done.append(f"deleted {key}")

    adapter.delete = held_delete
    return deleting, release, done


def note_lease_waits(app) -> threading.Event:
    """Set once a new sync finds another's deletion lease held, and waits for it."""
    store = app.view_functions["sink"].__self__.store
    waits = threading.Event()
    held_by_other = store.lease_held_by_other

    def noted_wait(collection, sequence_id):
        left = held_by_other(collection, sequence_id)
        if left > 0:
            waits.set()
        return left

    store.lease_held_by_other = noted_wait
    return waits


def test_the_copy_accepted_second_answers_retry_though_both_were_checked_first(upstream, tmp_path):
    """Sesam's retry of a request whose answer is late arrives while the first copy is
    still being written: both pass the check, both are written, one advances. The copy
    held in its write is accepted second, and its answer must say so: "retry", not the
    "continue" of its check, which would tell Sesam the sequence moved twice."""
    app = reference_app(upstream, tmp_path / "state")
    writing, release = hold_upserts(app, lambda _: threading.current_thread().name == "held")
    first = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    client = app.test_client()
    assert client.post("/people", json=[{"_id": "p-1"}], query_string=first).status_code == 200
    second = {**first, "request_id": "r2", "is_first": "false", "previous_request_id": "r1"}
    answers = {}

    def send_held() -> None:
        answers["held"] = app.test_client().post(
            "/people", json=[{"_id": "p-2", "v": 1}], query_string=second
        )

    thread = threading.Thread(target=send_held, name="held")
    thread.start()
    assert writing.wait(60), "the held copy never reached its write"
    other = client.post("/people", json=[{"_id": "p-2", "v": 1}], query_string=second)
    assert other.status_code == 200 and other.json["full_sync"]["verdict"] == "continue"
    release.set()
    thread.join(60)
    held = answers["held"]
    assert held.status_code == 200, held.get_data(as_text=True)
    assert held.json["full_sync"]["verdict"] == "retry"
    after = {**first, "request_id": "r3", "is_first": "false", "previous_request_id": "r2"}
    assert client.post("/people", json=[], query_string=after).json["full_sync"]["verdict"] == (
        "continue"
    )


def test_a_sync_that_starts_while_a_request_is_written_makes_that_request_a_409(upstream, tmp_path):
    """Sesam gave up on a sync and started a new one while a request of the old one was
    still being written. That request must not advance anything: 409, its writes stand.
    The app runs in this process, against the real upstream, so that the write can be
    held until the new sync has started."""
    app = reference_app(upstream, tmp_path / "state")
    writing, release = hold_upserts(app, lambda entity_id: entity_id == "held")
    old = {"is_full": "true", "sequence_id": "old", "request_id": "o1", "is_first": "true"}
    new = {"is_full": "true", "sequence_id": "new", "request_id": "n1", "is_first": "true"}
    client = app.test_client()
    assert client.post("/people", json=[{"_id": "p-1"}], query_string=old).status_code == 200
    late = {**old, "request_id": "o2", "is_first": "false", "previous_request_id": "o1"}
    answers = {}

    def send_late() -> None:
        answers["late"] = app.test_client().post(
            "/people", json=[{"_id": "held", "v": 1}], query_string=late
        )

    thread = threading.Thread(target=send_late)
    thread.start()
    assert writing.wait(60), "the late request never reached its write"
    started = client.post("/people", json=[], query_string=new)
    assert started.status_code == 200 and started.json["full_sync"]["verdict"] == "start"
    release.set()
    thread.join(60)
    response = answers["late"]
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.json["error"] == "Conflict"
    assert "its writes stand" in response.json["detail"]
    assert upstream.live("people")["held"]["v"] == 1  # written, as the answer says
    after = {**new, "request_id": "n2", "is_first": "false", "previous_request_id": "n1"}
    assert client.post("/people", json=[], query_string=after).json["full_sync"]["verdict"] == (
        "continue"
    )


def test_two_copies_of_a_last_request_at_once_delete_only_what_the_sync_did_not_send(
    upstream, tmp_path
):
    """Deletion detection, twice at once: the copy that lists the upstream's live records
    after the other copy ended the sequence must not take every record for missing."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true")
    adapter = app.view_functions["sink"].__self__.adapter
    listing = {"first": threading.Event(), "second": threading.Event()}
    go_on = {"first": threading.Event(), "second": threading.Event()}
    live_ids = adapter.live_ids

    def held_live_ids(collection):
        name = threading.current_thread().name
        listing[name].set()
        assert go_on[name].wait(60)
        yield from live_ids(collection)

    adapter.live_ids = held_live_ids
    kept = [f"p-{i}" for i in range(1, 19)]
    first = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    client = app.test_client()
    sent = client.post("/people", json=[{"_id": i, "v": 1} for i in kept], query_string=first)
    assert sent.status_code == 200, sent.get_data(as_text=True)
    last = {**first, "request_id": "r2", "is_first": "false", "previous_request_id": "r1"}
    last["is_last"] = "true"
    answers = {}

    def send(name: str) -> None:
        answers[name] = app.test_client().post("/people", json=[], query_string=last)

    threads = {name: threading.Thread(target=send, args=(name,), name=name) for name in listing}
    threads["first"].start()
    assert listing["first"].wait(60)
    threads["second"].start()
    assert listing["second"].wait(60)  # both copies were checked, both are listing
    go_on["first"].set()
    threads["first"].join(60)  # the first copy deleted, and ended the sequence
    go_on["second"].set()
    threads["second"].join(60)
    assert [answers[n].status_code for n in ("first", "second")] == [200, 200]
    assert answers["first"].json["full_sync"]["deleted_missing"] == 2
    assert answers["second"].json["full_sync"]["deletion"] == "already_done"
    assert sorted(upstream.live("people")) == sorted(kept)


def test_a_new_sync_that_starts_while_the_old_one_ends_deletes_nothing(upstream, tmp_path):
    """Sesam gave up on a sync while its last request was listing the upstream's records,
    and started a new one, which dropped the old sync's ids: the old end must not delete."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true")
    adapter = app.view_functions["sink"].__self__.adapter
    listing, go_on = threading.Event(), threading.Event()
    live_ids = adapter.live_ids

    def held_live_ids(collection):
        if threading.current_thread().name == "old":
            listing.set()
            assert go_on.wait(60)
        yield from live_ids(collection)

    adapter.live_ids = held_live_ids
    people_ids = [f"p-{i}" for i in range(1, 21)]
    old = {"is_full": "true", "sequence_id": "old", "request_id": "o1", "is_first": "true"}
    client = app.test_client()
    assert (
        client.post("/people", json=[{"_id": i} for i in people_ids], query_string=old).status_code
        == 200
    )
    old_last = {**old, "request_id": "o2", "is_first": "false", "previous_request_id": "o1"}
    old_last["is_last"] = "true"
    answers = {}

    def end_old() -> None:
        answers["old"] = app.test_client().post("/people", json=[], query_string=old_last)

    thread = threading.Thread(target=end_old, name="old")
    thread.start()
    assert listing.wait(60)
    new = {"is_full": "true", "sequence_id": "new", "request_id": "n1", "is_first": "true"}
    assert client.post("/people", json=[{"_id": "p-1"}], query_string=new).status_code == 200
    go_on.set()
    thread.join(60)
    assert answers["old"].status_code == 409, answers["old"].get_data(as_text=True)
    assert sorted(upstream.live("people")) == sorted(people_ids)


def test_a_sync_deleting_what_it_did_not_send_holds_a_lease_of_60_seconds(upstream, tmp_path):
    """A full sync's deletions hold the collection's lease for 60 s at a time: the longest
    a new sync's first request waits for them (docs/sink.md), and the deadline of each
    group of deletes."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true")
    sink = app.view_functions["sink"].__self__
    deleting, release, _ = hold_deletes(app)
    upstream.insert("people", [{"id": "gone"}])
    only = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    answers = {}

    def send() -> None:
        answers["last"] = app.test_client().post(
            "/people", json=[{"_id": "kept"}], query_string={**only, "is_last": "true"}
        )

    thread = threading.Thread(target=send)
    thread.start()
    try:
        assert deleting.wait(60), "the sync never began to delete"
        left = sink.store.lease_held_by_other("people", "a-newer-sync")
        assert 50 < left <= 60
    finally:
        release.set()
        thread.join(60)
    assert answers["last"].status_code == 200, answers["last"].get_data(as_text=True)
    assert "gone" not in upstream.live("people")


def test_a_new_sync_waits_for_the_old_ones_deletions_before_it_writes(upstream, tmp_path):
    """Sync A's last request is deleting what A did not send, among it ``x``; sync B
    begins, and sends ``x``. B writes only once A's deletions are over: had B written
    ``x`` while A's delete of it was in flight, that delete would remove what B sent."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true")
    sink = app.view_functions["sink"].__self__
    deleting, release, order = hold_deletes(app)
    waits, upserted = note_lease_waits(app), threading.Event()
    upsert = sink.adapter.upsert

    def noted_upsert(collection, key, record):
        upsert(collection, key, record)
        order.append(f"wrote {key}")
        upserted.set()

    sink.adapter.upsert = noted_upsert
    upstream.insert("people", [{"id": "x"}])
    a = {"is_full": "true", "sequence_id": "a", "request_id": "a1", "is_first": "true"}
    b = {"is_full": "true", "sequence_id": "b", "request_id": "b1", "is_first": "true"}
    answers = {}

    def send(name, entities, params) -> None:
        answers[name] = app.test_client().post("/people", json=entities, query_string=params)

    sync_a = threading.Thread(target=send, args=("a", [{"_id": "a1"}], {**a, "is_last": "true"}))
    sync_b = threading.Thread(target=send, args=("b", [{"_id": "x", "v": 2}], b))
    sync_a.start()
    try:
        assert deleting.wait(60), "sync A never began to delete"
        sync_b.start()
        wait_until(lambda: waits.is_set() or upserted.is_set(), what="sync B waiting, or writing")
    finally:
        release.set()
        sync_a.join(60)
        if sync_b.ident is not None:
            sync_b.join(60)
    assert answers["a"].status_code == 200, answers["a"].get_data(as_text=True)
    assert answers["b"].status_code == 200, answers["b"].get_data(as_text=True)
    assert order[-1] == "wrote x", order  # after every delete of sync A
    assert upstream.live("people")["x"]["v"] == 2


def test_an_old_syncs_deletions_stop_at_the_next_group_once_a_new_sync_has_claimed(
    upstream, tmp_path, caplog
):
    """Sync A's last request deletes in groups of 8 (SINK_CONCURRENCY 1, times 8); sync B
    begins during the first group. A finishes that group, renews its lease no more, and
    deletes nothing after it: its request is a 409 (its writes and the group's deletes
    stand), and its log line says its deletion was superseded."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true", SINK_CONCURRENCY="1")
    deleting, release, deleted = hold_deletes(app)
    waits = note_lease_waits(app)
    upstream.insert("people", [{"id": f"m-{n:02d}"} for n in range(20)])
    a = {"is_full": "true", "sequence_id": "a", "request_id": "a1", "is_first": "true"}
    b = {"is_full": "true", "sequence_id": "b", "request_id": "b1", "is_first": "true"}
    answers = {}

    def send(name, entities, params) -> None:
        answers[name] = app.test_client().post("/people", json=entities, query_string=params)

    assert (
        app.test_client().post("/people", json=[{"_id": "a1"}], query_string=a).status_code == 200
    )
    last = {**a, "request_id": "a2", "is_first": "false", "previous_request_id": "a1"}
    sync_a = threading.Thread(target=send, args=("a", [], {**last, "is_last": "true"}))
    sync_b = threading.Thread(target=send, args=("b", [{"_id": "b1"}], b))
    with caplog.at_level(logging.INFO, logger="service.framework.sink"):
        sync_a.start()
        try:
            assert deleting.wait(60), "sync A never began to delete"
            sync_b.start()
            wait_until(waits.is_set, what="sync B waiting for sync A's lease")
        finally:
            release.set()
            sync_a.join(60)
            if sync_b.ident is not None:
                sync_b.join(60)
    assert answers["a"].status_code == 409, answers["a"].get_data(as_text=True)
    assert "its writes stand" in answers["a"].json["detail"]
    assert answers["b"].status_code == 200, answers["b"].get_data(as_text=True)
    assert len(deleted) == 8  # the first group, and no more
    assert sum(1 for n in range(20) if f"m-{n:02d}" in upstream.live("people")) >= 20 - 8
    [line] = [r.getMessage() for r in caplog.records if "request_id='a2'" in r.getMessage()]
    assert "status=409" in line and " deletion=superseded deleted_missing=8" in line, line


def test_a_sync_that_lost_the_collection_while_it_listed_deletes_nothing(
    upstream, tmp_path, caplog
):
    """Sync B begins, and is still writing, while sync A's last request lists the live
    records: A takes no lease and deletes nothing (409; its log says superseded)."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true")
    sink = app.view_functions["sink"].__self__
    writing, release = hold_upserts(app, lambda entity_id: entity_id == "b1")
    deleted: list[str] = []
    sink.adapter.delete = lambda collection, key: deleted.append(key)
    live_ids = sink.adapter.live_ids
    answers = {}
    b = {"is_full": "true", "sequence_id": "b", "request_id": "b1", "is_first": "true"}

    def send_b() -> None:
        answers["b"] = app.test_client().post("/people", json=[{"_id": "b1"}], query_string=b)

    sync_b = threading.Thread(target=send_b)

    def listed_while_b_writes(collection):
        ids = list(live_ids(collection))
        sync_b.start()
        assert writing.wait(60), "sync B never began to write"
        return iter(ids)

    a = {"is_full": "true", "sequence_id": "a", "request_id": "a1", "is_first": "true"}
    assert (
        app.test_client().post("/people", json=[{"_id": "a1"}], query_string=a).status_code == 200
    )
    sink.adapter.live_ids = listed_while_b_writes
    last = {**a, "request_id": "a2", "is_first": "false", "previous_request_id": "a1"}
    with caplog.at_level(logging.INFO, logger="service.framework.sink"):
        try:
            answer = app.test_client().post(
                "/people", json=[], query_string={**last, "is_last": "true"}
            )
        finally:
            release.set()
            if sync_b.ident is not None:
                sync_b.join(60)
    assert answer.status_code == 409, answer.get_data(as_text=True)
    assert deleted == []
    assert answers["b"].status_code == 200, answers["b"].get_data(as_text=True)
    [line] = [r.getMessage() for r in caplog.records if "request_id='a2'" in r.getMessage()]
    assert "status=409" in line and " deletion=superseded deleted_missing=0" in line, line


class SinkClock:
    """The sink module's clock, moved by the sink's own waits: a minute of waiting for a
    lease takes no time. Steps of 1/16 s add up exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.looks = 0

    def monotonic(self) -> float:
        self.looks += 1
        assert self.looks < 100_000, "a wait that does not end"
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        assert self.now < 600, "still waiting after 10 minutes"


def test_a_new_sync_waits_65_s_at_most_for_an_old_lease_then_gets_a_503(
    upstream, tmp_path, monkeypatch
):
    """An old sync's lease that is never given up (its deletes renewed it, then its worker
    hung): the new sync's first request waits the lease (60 s) and 5 s more, then answers
    503 with Retry-After (Sesam retries), having written nothing."""
    app = reference_app(upstream, tmp_path / "state", FULL_SYNC_DELETE="true")
    sink = app.view_functions["sink"].__self__
    clock = SinkClock()
    monkeypatch.setattr(sink_module, "time", clock)
    sink.store.lease_held_by_other = lambda collection, sequence_id: 1 / 16
    before = upstream.live("people")
    b = {"is_full": "true", "sequence_id": "b", "request_id": "b1", "is_first": "true"}
    answer = app.test_client().post("/people", json=[{"_id": "b1"}], query_string=b)
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.headers["Retry-After"] == "5"
    assert "an earlier full sync of people is still deleting" in answer.json["detail"]
    assert clock.now == 65 + 1 / 16  # the first look past 65 s
    assert upstream.live("people") == before


def test_a_sync_deleting_gives_its_bodys_memory_back_for_the_next_batch(upstream, tmp_path):
    """A full sync's last batch has written, and deletes: its body is no longer held, and
    its share of the worker's memory budget (three times its size) goes back at once, so a
    batch as large is admitted meanwhile instead of waiting, then getting a 503."""
    app = reference_app(
        upstream,
        tmp_path / "state",
        FULL_SYNC_DELETE="true",
        SINK_CONCURRENCY="1",
        SINK_MAX_BODY_BYTES="300000",
        WORKER_MEMORY_BUDGET="1048576",  # one such batch at a time, three times its size
        UPSTREAM_PAGE_SIZE="1",  # the deletion's listing holds one record's page at most
    )
    deleting, release, _ = hold_deletes(app)
    big = [{"_id": f"a{n}", "pad": "x" * 50000} for n in range(5)]  # 250 KB
    only = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    answers = {}

    def send_last() -> None:
        answers["a"] = app.test_client().post(
            "/people", json=big, query_string={**only, "is_last": "true"}
        )

    sync = threading.Thread(target=send_last)
    sync.start()
    try:
        assert deleting.wait(60), "the sync never began to delete"
        other = [{"_id": f"b{n}", "pad": "y" * 50000} for n in range(5)]
        answer = app.test_client().post("/people", json=other, query_string={"is_full": "false"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
    finally:
        release.set()
        sync.join(60)
    assert answers["a"].status_code == 200, answers["a"].get_data(as_text=True)
