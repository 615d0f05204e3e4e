"""What Sesam reads when upstream writes fail: the status (502, or 504 when every failure
was a timeout) and the failures named, at most MAX_FAILURES_SHOWN of them."""

from __future__ import annotations

from service.framework.sink import MAX_FAILURES_SHOWN
from service.framework.sink import Failure
from service.framework.sink import FullSync
from service.framework.sink import Outcome
from service.framework.sink import Summary
from service.framework.sink import write_failed


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
