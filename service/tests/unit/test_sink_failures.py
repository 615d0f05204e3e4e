"""What Sesam reads when upstream writes fail: the status (502, or 504 when every failure
was a timeout) and the failures named, at most MAX_FAILURES_SHOWN of them."""

from __future__ import annotations

import pytest

from service.framework.sink import MAX_FAILURES_SHOWN
from service.framework.sink import Failure
from service.framework.sink import FullSync
from service.framework.sink import Outcome
from service.framework.sink import Summary
from service.framework.sink import prepare_batch
from service.framework.sink import write_failed
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
            "UPSTREAM_TOKEN": "t",
            "STATE_DIR": str(tmp_path / "state"),
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
