"""The full-sync sequence rules, and their SQLite store shared by processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.framework.sequences import SequenceConflict
from service.framework.sequences import SequenceStore
from service.framework.sequences import SyncParams
from service.framework.sequences import Verdict
from service.framework.sequences import decide
from service.framework.sequences import parse_params

ROOT = Path(__file__).resolve().parents[3]


def full(sequence_id="s1", request_id="r1", previous=None, first=False, last=False):
    return SyncParams(
        is_full=True,
        sequence_id=sequence_id,
        request_id=request_id,
        previous_request_id=previous,
        is_first=first,
        is_last=last,
    )


@pytest.fixture
def store(tmp_path):
    return SequenceStore(str(tmp_path / "state"))


def run(store, *requests, collection="people"):
    """Check and accept each request as the sink does; answer the verdicts."""
    verdicts = []
    for params in requests:
        verdict, _ = store.check(collection, params)
        assert store.accept(collection, params, live_entities=1, tracking=True) is verdict
        verdicts.append(verdict)
    return verdicts


# --- query parameters --------------------------------------------------------------------


def test_parameters_of_a_full_sync():
    params = parse_params(
        {
            "is_full": "true",
            "sequence_id": "s",
            "request_id": "r",
            "is_first": "True",
            "is_last": "false",
        }
    )
    assert params == full("s", "r", first=True)


def test_an_incremental_request_needs_no_tokens_and_a_missing_is_full_means_false():
    assert parse_params({}).is_full is False
    assert parse_params({"is_full": "false", "request_id": "r"}).is_full is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"is_full": "true", "request_id": "r", "is_first": "true"}, "needs sequence_id"),
        ({"is_full": "true", "sequence_id": "s", "is_first": "true"}, "needs request_id"),
        (
            {"is_full": "true", "sequence_id": "", "request_id": "r", "is_first": "true"},
            "needs sequence_id",
        ),
        ({"is_full": "true", "sequence_id": "s", "request_id": "r2"}, "needs previous_request_id"),
        ({"is_full": "yes"}, "is_full must be true or false"),
        (
            {"is_full": "true", "sequence_id": "s", "request_id": "r", "is_first": "1"},
            "is_first must be true or false",
        ),
    ],
)
def test_malformed_parameters_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        parse_params(args)


# --- the rules ---------------------------------------------------------------------------


def test_a_sequence_starts_continues_and_ends(store):
    assert run(
        store,
        full(request_id="r1", first=True),
        full(request_id="r2", previous="r1"),
        full(request_id="r3", previous="r2", last=True),
    ) == [Verdict.START, Verdict.CONTINUE, Verdict.CONTINUE]
    current = store.current("people")
    assert current.ended and current.requests == 3 and current.live_entities == 3


def test_is_first_in_a_new_sequence_replaces_the_active_one(store):
    run(store, full("old", "r1", first=True), full("old", "r2", previous="r1"))
    assert run(store, full("new", "n1", first=True)) == [Verdict.START]
    assert store.current("people").sequence_id == "new"
    with pytest.raises(SequenceConflict, match="'old' is not the active sequence"):
        store.check("people", full("old", "r3", previous="r2"))


def test_is_first_for_a_sequence_that_already_started_is_a_conflict(store):
    run(store, full("s1", "r1", first=True))
    with pytest.raises(SequenceConflict, match="already started"):
        store.check("people", full("s1", "r2", previous="r1", first=True))


def test_a_wrong_previous_request_id_is_a_conflict(store):
    run(store, full("s1", "r1", first=True), full("s1", "r2", previous="r1"))
    with pytest.raises(SequenceConflict, match="does not match the previous request 'r2'"):
        store.check("people", full("s1", "r3", previous="r1"))


def test_continuing_without_an_active_sequence_is_a_conflict(store):
    with pytest.raises(SequenceConflict, match="not the active sequence"):
        store.check("people", full("s1", "r2", previous="r1"))


def test_continuing_an_ended_sequence_is_a_conflict(store):
    run(store, full("s1", "r1", first=True, last=True))
    with pytest.raises(SequenceConflict, match="already ended"):
        store.check("people", full("s1", "r2", previous="r1"))


def test_is_full_changing_within_a_sequence_is_a_conflict(store):
    run(store, full("s1", "r1", first=True))
    incremental = SyncParams(
        is_full=False, sequence_id="s1", request_id="r2", previous_request_id="r1"
    )
    with pytest.raises(SequenceConflict, match="is_full changed"):
        store.check("people", incremental)
    other = SyncParams(is_full=False, sequence_id="s2", request_id="x")
    assert store.check("people", other)[0] is Verdict.INCREMENTAL


@pytest.mark.parametrize("last", [False, True])
def test_the_last_accepted_request_sent_again_is_a_retry_that_does_not_advance(store, last):
    run(store, full("s1", "r1", first=True), full("s1", "r2", previous="r1", last=last))
    assert run(store, full("s1", "r2", previous="r1", last=last)) == [Verdict.RETRY]
    assert store.current("people").last_request_id == "r2"
    assert store.current("people").requests == 2


def test_the_first_request_sent_again_is_a_retry(store):
    run(store, full("s1", "r1", first=True))
    assert run(store, full("s1", "r1", first=True)) == [Verdict.RETRY]


def test_a_reused_request_id_with_other_parameters_is_a_conflict(store):
    run(store, full("s1", "r1", first=True), full("s1", "r2", previous="r1"))
    with pytest.raises(SequenceConflict, match="already accepted"):
        store.check("people", full("s1", "r2", previous="r1", last=True))


def test_collections_have_separate_sequences(store):
    run(store, full("s1", "r1", first=True), collection="people")
    run(store, full("s2", "q1", first=True), collection="companies")
    assert run(store, full("s1", "r2", previous="r1"), collection="people") == [Verdict.CONTINUE]


def test_decide_is_pure_and_needs_no_store():
    assert decide(None, full(first=True)) is Verdict.START
    assert decide(None, SyncParams(is_full=False)) is Verdict.INCREMENTAL


# --- the store ---------------------------------------------------------------------------


def test_the_state_survives_a_new_store_on_the_same_directory(tmp_path):
    run(SequenceStore(str(tmp_path)), full("s1", "r1", first=True))
    again = SequenceStore(str(tmp_path))
    assert again.check("people", full("s1", "r2", previous="r1"))[0] is Verdict.CONTINUE


def test_sent_ids_are_kept_per_sequence_and_dropped_when_it_is_replaced_or_ends(store):
    run(store, full("s1", "r1", first=True))
    store.record_ids("people", "s1", ["a", "b", "a"])
    assert store.sent_among("people", "s1", ["a", "b", "c"]) == {"a", "b"}
    store.record_ids("people", "s2", ["c"])
    run(store, full("s2", "n1", first=True))
    assert store.sent_among("people", "s1", ["a", "b"]) == set()
    assert store.sent_among("people", "s2", ["c"]) == {"c"}
    run(store, full("s2", "n2", previous="n1", last=True))
    assert store.sent_among("people", "s2", ["c"]) == set()


def test_sent_among_handles_more_ids_than_one_query_holds(store):
    ids = [f"id-{i}" for i in range(2500)]
    store.record_ids("people", "s1", ids[::2])
    assert store.sent_among("people", "s1", ids) == set(ids[::2])


RACER = """
import sys
from service.framework.sequences import SequenceConflict, SequenceStore, SyncParams
params = SyncParams(is_full=True, sequence_id="s1", request_id="r2", previous_request_id="r1")
try:
    print(SequenceStore(sys.argv[1]).accept("people", params, live_entities=1,
                                            tracking=False).value)
except SequenceConflict:
    print("conflict")
"""


def test_racing_processes_advance_a_sequence_exactly_once(tmp_path):
    directory = str(tmp_path)
    run(SequenceStore(directory), full("s1", "r1", first=True))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, directory], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    verdicts = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert verdicts == ["continue"] + ["retry"] * 5
    assert SequenceStore(directory).current("people").requests == 2
