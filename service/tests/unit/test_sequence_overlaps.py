"""Two full syncs that overlap (issue 18): a new sequence's first request, once checked,
makes the old one's later requests 409, and an old sequence's deletion never runs, or
stops, once a newer one has begun; the new one writes only when it has stopped."""

from __future__ import annotations

import pytest

from service.framework import sequences
from service.framework.sequences import SequenceConflict
from service.framework.sequences import SequenceStore
from service.framework.sequences import SyncParams
from service.framework.sequences import Verdict
from service.framework.sequences import decide


def full(sequence_id, request_id, previous=None, first=False, last=False):
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


def begun(store, sequence_id="A"):
    """Sequence ``sequence_id`` accepted its first request (r1)."""
    store.check("people", full(sequence_id, "r1", first=True))
    store.accept("people", full(sequence_id, "r1", first=True), live_entities=1, tracking=True)
    return store.current("people")


def test_a_checked_first_request_makes_the_old_sequences_next_request_a_409(store):
    begun(store, "A")
    verdict, _ = store.check("people", full("B", "b1", first=True))
    assert verdict is Verdict.START  # B is only checked, not accepted: it is still writing
    with pytest.raises(SequenceConflict, match="'A' was replaced by sequence 'B'"):
        store.check("people", full("A", "r2", previous="r1", last=True))


def test_a_retry_of_the_new_first_request_is_still_a_start(store):
    begun(store, "A")
    store.check("people", full("B", "b1", first=True))
    assert store.check("people", full("B", "b1", first=True))[0] is Verdict.START


def test_once_the_new_sequence_is_accepted_it_goes_on_as_usual(store):
    begun(store, "A")
    store.check("people", full("B", "b1", first=True))
    store.accept("people", full("B", "b1", first=True), live_entities=1, tracking=True)
    assert store.check("people", full("B", "b2", previous="b1"))[0] is Verdict.CONTINUE
    store.accept("people", full("B", "b2", previous="b1"), live_entities=1, tracking=True)
    with pytest.raises(SequenceConflict, match="not the active sequence"):
        store.check("people", full("A", "r2", previous="r1"))


def test_the_rule_is_in_the_pure_decision_too():
    state = sequences.Sequence("people", "A", "r1", None, True, False, True, 1, 1)
    with pytest.raises(SequenceConflict, match="replaced by sequence 'B'"):
        decide(state, full("A", "r2", previous="r1"), claimed="B")
    assert decide(state, full("A", "r2", previous="r1"), claimed="A") is Verdict.CONTINUE
    assert decide(state, full("C", "c1", first=True), claimed="B") is Verdict.START


def test_no_deletion_lease_once_a_newer_sequence_has_begun(store):
    current = begun(store, "A")
    store.check("people", full("B", "b1", first=True))
    assert not store.lease_deletion("people", "A", current, 60)


def test_a_lease_is_given_up_at_its_next_renewal_once_a_newer_sequence_begins(store):
    current = begun(store, "A")
    assert store.lease_deletion("people", "A", current, 60)
    assert store.lease_held_by_other("people", "B") > 50
    assert store.lease_deletion("people", "A", current, 60)  # renewed: nothing newer yet
    store.check("people", full("B", "b1", first=True))
    assert not store.lease_deletion("people", "A", current, 60)
    store.end_deletion("people", "A")
    assert store.lease_held_by_other("people", "B") == 0


def test_no_lease_for_a_sequence_that_moved_on_while_its_ids_were_listed(store):
    before = begun(store, "A")
    store.accept("people", full("A", "r2", previous="r1"), live_entities=1, tracking=True)
    assert not store.lease_deletion("people", "A", before, 60)


def test_a_lease_that_ran_out_holds_no_one_back(store, monkeypatch):
    current = begun(store, "A")
    assert store.lease_deletion("people", "A", current, 60)
    now = sequences.time.time()
    monkeypatch.setattr(sequences.time, "time", lambda: now + 61)
    assert store.lease_held_by_other("people", "B") == 0


def test_a_sequences_own_lease_does_not_hold_it_back(store):
    current = begun(store, "A")
    store.lease_deletion("people", "A", current, 60)
    assert store.lease_held_by_other("people", "A") == 0


def test_a_later_request_of_another_sequence_is_refused_for_what_it_is():
    """Before any sequence was accepted, a request that is not the first of its sequence
    while another's first was checked: it was replaced. With A accepted and its own first
    request the last checked, a stray request of C is not the active sequence."""
    with pytest.raises(SequenceConflict, match="'B' was replaced by sequence 'A'"):
        decide(None, full("B", "b2", previous="b1"), claimed="A")
    state = sequences.Sequence("people", "A", "r1", None, True, False, True, 1, 1)
    with pytest.raises(SequenceConflict, match="not the active sequence"):
        decide(state, full("C", "c2", previous="c1"), claimed="A")


def test_a_sequence_that_is_not_the_current_one_gets_no_deletion_lease(store):
    """B is current (accepted, its claim settled): A, from before, deletes nothing."""
    current = begun(store, "B")
    assert not store.lease_deletion("people", "A", current, 60)


def test_a_lease_is_renewed_while_its_sequence_is_current_though_its_state_moved_on(store):
    """The first lease needs the state the deletion listed from; a renewal needs only that
    the sequence is still the current one (a retried request may have moved its state)."""
    listed = begun(store, "A")
    assert store.lease_deletion("people", "A", listed, 60)
    store.accept("people", full("A", "r2", previous="r1"), live_entities=1, tracking=True)
    assert store.current("people") != listed
    assert store.lease_deletion("people", "A", listed, 60)
