"""The shared Sesam client against the connector under gunicorn and the demo Records API:
its paging and its push parameters are the ones the connector takes."""

from __future__ import annotations

import pytest

from service.tools.sesam_client import Paging
from service.tools.sesam_client import Sequence
from service.tools.sesam_client import SesamClient


@pytest.fixture
def client(connector):
    def make(collection: str) -> SesamClient:
        made = SesamClient(f"{connector.url}/{collection}", timeout=120)
        opened.append(made)
        return made

    opened: list[SesamClient] = []
    yield make
    for made in opened:
        made.close()


def test_paging_over_a_tie_run_gets_every_entity_once_in_feed_order(client, upstream):
    upstream.insert(
        "bulk",
        [{"id": f"r-{n:04d}", "updated_at": "2026-01-01T00:00:00.000000Z"} for n in range(250)],
    )
    bulk = client("bulk")
    whole = bulk.page({})
    paging = Paging(40)
    paged = [entity for page in bulk.pull(paging) for entity in page]
    assert paged == whole and len(paged) == 250
    assert paging.requests == 8  # 7 pages of up to 40, then the empty one
    assert paging.since == whole[-1]["_updated"]
    assert bulk.page(Paging(40, paging.since).params()) == []  # the next run: nothing new


def test_an_incremental_run_from_the_kept_since_gets_exactly_the_change(client, upstream):
    people = client("people")
    first = Paging(7)
    list(people.pull(first))
    assert upstream.api("PUT", "people/p-2", json={"name": "Changed"}).status_code == 200
    changes = [e for page in people.pull(Paging(7, first.since)) for e in page]
    assert [(e["_id"], e["name"]) for e in changes] == [("p-2", "Changed")]


@pytest.mark.parametrize("always_flags", [False, True])
def test_a_full_push_is_taken_batch_by_batch_and_its_end_deletes(
    connector_factory, upstream, always_flags
):
    connector = connector_factory(FULL_SYNC_DELETE="true")
    kept = [{"_id": f"p-{n}", "name": f"Kept {n}"} for n in range(1, 6)]
    kept += [{"_id": f"new-{n}", "name": f"New {n}"} for n in range(240)]
    sink = SesamClient(f"{connector.url}/people", timeout=120)
    try:
        answers = sink.push(kept, Sequence(full=True, always_flags=always_flags))
    finally:
        sink.close()
    assert [a.status_code for a in answers] == [200, 200, 200, 200]  # 100, 100, 45, 0
    verdicts = [a.json()["full_sync"]["verdict"] for a in answers]
    assert verdicts == ["start", "continue", "continue", "continue"]
    assert answers[-1].json()["full_sync"]["deletion"] == "done"
    assert sorted(upstream.live("people")) == sorted(e["_id"] for e in kept)


def test_a_push_stops_at_the_first_refused_batch(client, upstream):
    people = client("people")
    sequence = Sequence(full=True)
    assert people.post([{"_id": "p-1"}], sequence.params(last=False)).status_code == 200
    sequence.previous = "not-the-previous"  # as if a request had been lost
    answers = people.push([{"_id": f"x-{n}"} for n in range(150)], sequence)
    assert [a.status_code for a in answers] == [409]
    assert not any(i.startswith("x-") for i in upstream.live("people"))
