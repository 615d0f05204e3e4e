"""Sequence rules at their edges: empty flags, and the 409 detail that tells an operator
which sequence is active."""

from __future__ import annotations

import pytest

from service.framework.sequences import SequenceConflict
from service.framework.sequences import SequenceStore
from service.framework.sequences import SyncParams
from service.framework.sequences import parse_params


def test_empty_flags_and_tokens_are_absent():
    params = parse_params(
        {"is_full": "", "is_first": "", "is_last": "", "sequence_id": "", "request_id": ""}
    )
    assert params == SyncParams(is_full=False)


@pytest.mark.parametrize("value", ["TRUE", "True", "true"])
def test_flags_are_read_in_any_case(value):
    assert parse_params({"is_full": "false", "is_last": value}).is_last is True


def test_a_conflict_names_the_active_sequence_or_none(tmp_path):
    store = SequenceStore(str(tmp_path))
    stray = SyncParams(is_full=True, sequence_id="s2", request_id="r2", previous_request_id="r1")
    with pytest.raises(SequenceConflict, match=r"\(active: none\)"):
        store.check("people", stray)
    first = SyncParams(is_full=True, sequence_id="s1", request_id="r1", is_first=True)
    store.accept("people", first, live_entities=0, tracking=False)
    with pytest.raises(SequenceConflict, match=r"\(active: 's1'\)"):
        store.check("people", stray)
