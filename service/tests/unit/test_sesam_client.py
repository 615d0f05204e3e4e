"""Sesam's protocols as the tools speak them: paging and the push parameters, no server."""

from __future__ import annotations

import itertools

import pytest

from service.tools.sesam_client import Paging
from service.tools.sesam_client import PagingError
from service.tools.sesam_client import Sequence
from service.tools.sesam_client import batches


def feed(count: int):
    """A correct feed of ``count`` entities with integer ``_updated``, and its requests."""
    entities = [{"_id": f"e-{n}", "_updated": n} for n in range(count)]
    asked: list[dict[str, str]] = []

    def fetch(params: dict[str, str]) -> list[dict]:
        asked.append(params)
        since = int(params["since"]) if "since" in params else -1
        return [e for e in entities if e["_updated"] > since][: int(params["limit"])]

    return entities, asked, fetch


def test_paging_asks_limit_then_since_of_the_last_entity_until_an_empty_page():
    entities, asked, fetch = feed(5)
    paging = Paging(2)
    pages = list(paging.pages(fetch))
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [e for page in pages for e in page] == entities
    assert asked == [
        {"limit": "2"},
        {"limit": "2", "since": "1"},
        {"limit": "2", "since": "3"},
        {"limit": "2", "since": "4"},
    ]
    assert (paging.since, paging.requests) == ("4", 4)  # since as Sesam keeps it: text


def test_paging_from_a_since_and_from_an_empty_feed():
    _, asked, fetch = feed(3)
    paging = Paging(10, "0")
    assert [e["_id"] for page in paging.pages(fetch) for e in page] == ["e-1", "e-2"]
    assert asked[0] == {"limit": "10", "since": "0"}
    _, asked, fetch = feed(0)
    empty = Paging(10)
    assert list(empty.pages(fetch)) == [] and asked == [{"limit": "10"}]
    assert (empty.since, empty.requests) == (None, 1)


def test_paging_that_never_ends_is_stopped():
    paging = Paging(1, max_requests=3)
    with pytest.raises(PagingError, match="did not end after 3 requests"):
        list(paging.pages(lambda params: [{"_id": "a", "_updated": "1"}]))


def test_page_size_must_be_positive():
    with pytest.raises(ValueError):
        Paging(0)


def counter():
    numbers = itertools.count()
    return lambda: f"id{next(numbers)}"


def test_upcoming_does_not_move_the_sequence_and_accepted_does():
    sequence = Sequence(full=True, new_id=counter())
    first = sequence.upcoming(last=False)
    assert sequence.upcoming(last=False, request_id="again")["request_id"] == "again"
    assert "previous_request_id" not in sequence.upcoming(last=False)
    sequence.accepted(first)
    assert sequence.upcoming(last=True)["previous_request_id"] == first["request_id"]


def test_always_flags_spells_out_is_first_and_is_last_on_a_full_sync():
    sequence = Sequence(full=True, new_id=counter(), always_flags=True)
    sent = [sequence.params(last=False), sequence.params(last=False), sequence.params(last=True)]
    assert [(p["is_first"], p["is_last"]) for p in sent] == [
        ("true", "false"),
        ("false", "false"),
        ("false", "true"),
    ]
    incremental = Sequence(full=False, new_id=counter(), always_flags=True)
    assert set(incremental.params(last=True)) == {"sequence_id", "is_full", "request_id"}


def test_a_sync_is_its_batches_then_one_empty_batch_marked_last():
    sequence = Sequence(full=True, new_id=counter())
    sent = [
        (len(batch), sequence.params(last=not batch).get("is_last"))
        for batch in batches([{"_id": str(n)} for n in range(3)], 2)
    ]
    assert sent == [(2, None), (1, None), (0, "true")]
