"""Two copies of one full-sync request at once, and a sequence that changes while a request
is being written: the sequence store decides each exactly once, and never answers with a
"database is locked".

The races are made deterministic by holding a window open with events (the first copy
waits, inside its transaction, for the second to arrive) instead of by sleeping.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from service.framework import sequences
from service.framework.sequences import SequenceConflict
from service.framework.sequences import SequenceStore
from service.framework.sequences import SyncParams
from service.framework.sequences import Verdict

WINDOW_SECONDS = 3


def full(sequence_id, request_id, previous=None, first=False, last=False):
    return SyncParams(
        is_full=True,
        sequence_id=sequence_id,
        request_id=request_id,
        previous_request_id=previous,
        is_first=first,
        is_last=last,
    )


def accept(store, params, collection="people"):
    return store.accept(collection, params, live_entities=1, tracking=True)


@pytest.fixture
def store(tmp_path):
    return SequenceStore(str(tmp_path / "state"))


def race(store, params, monkeypatch):
    """Accept ``params`` twice at once. The first copy, having read the state inside its
    transaction, waits until the second copy has read it too (a store that lets both
    read before either writes) or until the window closes (a store whose transaction
    keeps the second copy out, as it must: then the wait just ends). Either way the test
    cannot fail on a correct store; a slow machine can only make it miss a wrong one."""
    loaded = threading.Event()
    second_loaded = threading.Event()
    original = SequenceStore._load

    def load(connection, collection):
        state = original(connection, collection)
        if threading.current_thread().name == "first":
            loaded.set()
            second_loaded.wait(WINDOW_SECONDS)
        else:
            second_loaded.set()
        return state

    monkeypatch.setattr(SequenceStore, "_load", staticmethod(load))
    outcomes: dict[str, object] = {}

    def copy() -> None:
        try:
            outcomes[threading.current_thread().name] = accept(store, params)
        except (SequenceConflict, sqlite3.Error) as error:
            outcomes[threading.current_thread().name] = error

    first = threading.Thread(target=copy, name="first")
    second = threading.Thread(target=copy, name="second")
    first.start()
    assert loaded.wait(30), "the first copy never read the state"
    second.start()
    first.join(60)
    second.join(60)
    monkeypatch.setattr(SequenceStore, "_load", staticmethod(original))
    return outcomes


def test_two_copies_of_a_next_request_advance_once_and_the_other_is_a_retry(store, monkeypatch):
    accept(store, full("s1", "r1", first=True))
    outcomes = race(store, full("s1", "r2", previous="r1"), monkeypatch)
    assert sorted(str(o) for o in outcomes.values()) == [str(Verdict.CONTINUE), str(Verdict.RETRY)]
    current = store.current("people")
    assert current.last_request_id == "r2" and current.requests == 2
    assert current.live_entities == 2  # counted once


def test_two_copies_of_a_first_request_start_once_and_the_other_is_a_retry(store, monkeypatch):
    accept(store, full("s0", "r0", first=True, last=True))  # an earlier sync, ended
    outcomes = race(store, full("s1", "r1", first=True), monkeypatch)
    assert sorted(str(o) for o in outcomes.values()) == [str(Verdict.RETRY), str(Verdict.START)]
    assert store.current("people").requests == 1


def test_two_copies_of_a_last_request_end_the_sequence_once(store, monkeypatch):
    accept(store, full("s1", "r1", first=True))
    store.record_ids("people", "s1", ["a", "b"])
    outcomes = race(store, full("s1", "r2", previous="r1", last=True), monkeypatch)
    assert sorted(str(o) for o in outcomes.values()) == [str(Verdict.CONTINUE), str(Verdict.RETRY)]
    current = store.current("people")
    assert current.ended and current.requests == 2
    assert store.sent_among("people", "s1", ["a", "b"]) == set()  # dropped at the end


def test_a_conflict_found_while_accepting_rolls_back_and_raises(store):
    """Checked before its writes, a request was the next one; while it was written another
    sequence started. Accepting it now must fail and leave the new sequence untouched."""
    accept(store, full("s1", "r1", first=True))
    late = full("s1", "r2", previous="r1")
    assert store.check("people", late)[0] is Verdict.CONTINUE
    assert accept(store, full("s2", "q1", first=True)) is Verdict.START
    with pytest.raises(SequenceConflict, match="not the active sequence"):
        accept(store, late)
    current = store.current("people")
    assert (current.sequence_id, current.last_request_id, current.requests) == ("s2", "q1", 1)
    assert accept(store, full("s2", "q2", previous="q1")) is Verdict.CONTINUE


def test_a_failed_transaction_leaves_the_store_usable(store, monkeypatch):
    """Whatever fails inside a transaction is rolled back and raised, and the next
    request finds the store as it was (not locked, not half written)."""
    accept(store, full("s1", "r1", first=True))

    def broken(current, params, claimed=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(sequences, "decide", broken)
    with pytest.raises(RuntimeError, match="boom"):
        accept(store, full("s1", "r2", previous="r1"))
    monkeypatch.undo()
    assert store.current("people").last_request_id == "r1"
    assert accept(store, full("s1", "r2", previous="r1")) is Verdict.CONTINUE


def test_the_state_file_is_in_wal_mode_so_readers_do_not_wait_for_writers(store):
    connection = sqlite3.connect(store.path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()
