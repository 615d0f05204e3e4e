"""What Sesam reads when upstream writes fail: the status (502, or 504 when every failure
was a timeout) and the failures named, at most MAX_FAILURES_SHOWN of them."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from service.framework.sink import MAX_FAILURES_SHOWN
from service.framework.sink import Failure
from service.framework.sink import FullSync
from service.framework.sink import Outcome
from service.framework.sink import Summary
from service.framework.sink import Write
from service.framework.sink import _chunks
from service.framework.sink import prepare_batch
from service.framework.sink import run_writes
from service.framework.sink import write_failed
from service.framework.upstream import UpstreamError
from service.tools.reference import Records
from service.tools.reference import create_app


def failure(entity_id, status=500, timeout=False):
    return Failure(entity_id, "put", None if timeout else status, "reason", timeout)


def test_a_timeout_among_other_failures_is_a_502():
    error = write_failed(
        Outcome(failures=[failure("a", timeout=True), failure("b", 500)]), Summary("p"), "writes"
    )
    assert (error.status, error.title) == (502, "Bad Gateway")


def test_only_timeouts_are_a_504():
    outcome = Outcome(failures=[failure("a", timeout=True), failure("b", timeout=True)])
    error = write_failed(outcome, Summary("p"), "writes")
    assert (error.status, error.title) == (504, "Upstream Timeout")
    assert [f["upstream_status"] for f in error.extra["failed"]] == [None, None]


def test_the_failures_shown_are_capped_and_counted():
    outcome = Outcome(
        failures=[failure(f"id-{i}", 500 + i % 3) for i in range(MAX_FAILURES_SHOWN + 5)],
        not_attempted=7,
    )
    error = write_failed(outcome, Summary("p"), "writes")
    assert len(error.extra["failed"]) == MAX_FAILURES_SHOWN
    assert error.extra["failed"][0] == {
        "_id": "id-0",
        "operation": "put",
        "upstream_status": 500,
        "reason": "reason",
    }
    assert error.extra["failed_count"] == MAX_FAILURES_SHOWN + 5
    assert error.extra["not_attempted"] == 7
    assert error.detail.startswith(f"{MAX_FAILURES_SHOWN + 5} writes failed upstream")
    assert "(statuses 500, 501, 502)" in error.detail
    assert "7 not attempted after the first failure" in error.detail
    assert error.detail.endswith("retry the same request.")


def test_a_full_sync_failure_says_the_sequence_did_not_advance():
    summary = Summary("p", is_full=True, full_sync=FullSync("s", "r", False, False, "continue"))
    error = write_failed(Outcome(failures=[failure("a")]), summary, "writes")
    assert error.detail.endswith("(the full-sync sequence did not advance).")
    assert error.extra["summary"]["full_sync"]["verdict"] == "continue"


def test_the_writes_keep_the_batch_order_of_each_ids_last_version():
    batch = [{"_id": "d", "v": 1}, {"_id": "e", "v": 1}, {"_id": "d", "v": 2}]
    writes, duplicates = prepare_batch(batch, Records.to_record)
    assert [(w.entity_id, w.record) for w in writes] == [("e", {"v": 1}), ("d", {"v": 2})]
    assert duplicates == 1


def in_process_sink(tmp_path, **settings):
    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",  # never called: the adapter is replaced
            "UPSTREAM_TOKEN": "test-token",
            "STATE_DIR": str(tmp_path / "state"),
            "LOG_LEVEL": "INFO",
            **settings,
        }
    )
    return app, app.view_functions["sink"].__self__


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_an_unexpected_error_in_a_write_is_a_500_never_a_200(tmp_path, concurrency):
    """A fork's adapter that fails with anything but an UpstreamError has a bug: the
    request must fail (and a full sync not advance), never answer that all went well."""
    app, sink = in_process_sink(tmp_path, SINK_CONCURRENCY=concurrency)
    written = []

    def upsert(collection, entity_id, record):
        if entity_id == "bad":
            raise KeyError("a bug in the adapter")
        written.append(entity_id)

    sink.adapter.upsert = upsert
    first = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    batch = [{"_id": "a"}, {"_id": "bad"}, {"_id": "c"}]
    response = app.test_client().post("/people", json=batch, query_string=first)
    assert response.status_code == 500
    assert response.json["error"] == "Internal Server Error"
    assert sink.store.current("people") is None  # the sync did not start


def test_an_unexpected_error_is_logged_as_a_500(tmp_path, caplog):
    app, sink = in_process_sink(tmp_path)

    def upsert(collection, entity_id, record):
        raise KeyError("a bug in the adapter")

    sink.adapter.upsert = upsert
    with caplog.at_level(logging.INFO, logger="service.framework.sink"):
        assert app.test_client().post("/people", json=[{"_id": "a"}]).status_code == 500
    assert re.search(
        r"sink people status=500 entities=1 .* failed: unexpected error \(logged below\)",
        caplog.text,
    )


def test_the_log_line_names_the_first_ten_failed_writes(tmp_path, caplog):
    """Twelve writes fail at once (a barrier holds them until all twelve are in flight);
    the log line names ten of them, and the answer all twelve."""
    app, sink = in_process_sink(tmp_path, SINK_CONCURRENCY="12")
    barrier = threading.Barrier(12, timeout=30)

    def upsert(collection, entity_id, record):
        barrier.wait()
        raise UpstreamError(f"upstream answered 503 to PUT {entity_id}", status=503)

    sink.adapter.upsert = upsert
    batch = [{"_id": f"id-{i:02d}"} for i in range(12)]
    with caplog.at_level(logging.INFO, logger="service.framework.sink"):
        response = app.test_client().post("/people", json=batch)
    assert response.status_code == 502
    assert response.json["failed_count"] == 12
    [line] = [r.getMessage() for r in caplog.records if "status=502" in r.getMessage()]
    named = line.split(" failed: ", 1)[1]
    assert len(re.findall(r"'id-\d\d' put 503", named)) == 10
    assert re.fullmatch(r"'id-\d\d' put 503(, 'id-\d\d' put 503){9}", named)


def test_ids_are_chunked_for_the_state_queries():
    assert [len(c) for c in _chunks(iter(range(2500)), 1000)] == [1000, 1000, 500]
    assert [len(c) for c in _chunks(iter(range(1000)), 1000)] == [1000]
    assert list(_chunks(iter([]), 1000)) == []
    assert [x for c in _chunks(iter(range(2500)), 1000) for x in c] == list(range(2500))


def test_deletion_detection_over_more_live_ids_than_one_chunk(tmp_path):
    app, sink = in_process_sink(tmp_path, FULL_SYNC_DELETE="true")
    live = [f"id-{i:04d}" for i in range(2500)]
    deleted = []
    sink.adapter.upsert = lambda collection, entity_id, record: None
    sink.adapter.delete = lambda collection, entity_id: deleted.append(entity_id)
    sink.adapter.live_ids = lambda collection: iter(live)
    client = app.test_client()
    first = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    kept = live[::2]
    assert (
        client.post("/people", json=[{"_id": i} for i in kept], query_string=first).status_code
        == 200
    )
    last = {**first, "request_id": "r2", "is_first": "false", "previous_request_id": "r1"}
    answer = client.post("/people", json=[], query_string={**last, "is_last": "true"})
    assert answer.json["full_sync"]["deleted_missing"] == 1250
    assert sorted(deleted) == live[1::2]


def test_a_state_dir_that_cannot_hold_the_state_stops_the_start(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(RuntimeError, match="STATE_DIR=.*cannot hold the sequence state"):
        in_process_sink(tmp_path, STATE_DIR=str(not_a_directory / "state"))


def test_two_writes_at_a_concurrency_of_two_run_at_once():
    """SINK_CONCURRENCY=2 means two writes in flight: each waits for the other here, so
    two writes run one after the other would break the barrier."""
    barrier = threading.Barrier(2, timeout=30)
    writes = [Write("a", {}), Write("b", None)]
    outcome = run_writes(writes, lambda _: barrier.wait(), concurrency=2)
    assert (outcome.upserts, outcome.deletes, outcome.failures) == (1, 1, [])


def test_after_a_failure_the_writes_not_started_are_counted_and_none_succeed_after_it():
    started = []

    def perform(write):
        started.append(write.entity_id)
        if write.entity_id == "b":
            raise UpstreamError("upstream answered 500", status=500)

    writes = [Write(i, {}) for i in ("a", "b", "c", "d")]
    outcome = run_writes(writes, perform, concurrency=1)
    assert started == ["a", "b"]
    assert (outcome.upserts, outcome.not_attempted, len(outcome.failures)) == (1, 2, 1)


def test_a_live_record_the_adapter_cannot_read_fails_the_listing_and_deletes_nothing(tmp_path):
    """The deletion listing meets a record without its id (the adapter's ``record["id"]``
    raises): the last request is a 502, the upstream's data and not a timeout, and nothing
    is deleted, not even the ids listed before it."""
    app, sink = in_process_sink(tmp_path, FULL_SYNC_DELETE="true")
    deleted = []
    sink.adapter.upsert = lambda collection, entity_id, record: None
    sink.adapter.delete = lambda collection, entity_id: deleted.append(entity_id)

    def live_ids(collection):
        yield "gone-1"
        yield {"name": "no id"}["id"]

    sink.adapter.live_ids = live_ids
    only = {"is_full": "true", "sequence_id": "s", "request_id": "r1", "is_first": "true"}
    answer = app.test_client().post(
        "/people", json=[{"_id": "kept"}], query_string={**only, "is_last": "true"}
    )
    assert answer.status_code == 502, answer.get_data(as_text=True)
    assert answer.json["detail"] == (
        "listing the upstream's live records failed: a record the adapter could not read "
        "(KeyError: 'id'); nothing was deleted"
    )
    assert deleted == []
