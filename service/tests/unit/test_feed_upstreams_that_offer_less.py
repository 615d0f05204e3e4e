"""Upstreams that offer less: one that cannot filter on a time (the feed filters on its
side) and one that cannot even sort (full runs only, ``supports_since = False``)."""

from __future__ import annotations

import json

import pytest

from service.framework.errors import UpstreamContractError
from service.framework.feed import entity_chunks
from service.framework.positions import INTEGER
from service.framework.positions import Positions
from service.tests.framework_kit import reference_app
from service.tools.reference import Records

POSITIONS = Positions((INTEGER,))
TICKETS = [{"id": n} for n in (3, 9, 17, 40)]


def feed(pages, **kwargs):
    stats = {"entities": 0}
    kwargs.setdefault("since", None)
    text = b"".join(
        entity_chunks(
            pages,
            limit=None,
            position=lambda r: (r["id"],),
            to_entity=lambda r: {"_id": str(r["id"])},
            stats=stats,
            positions=POSITIONS,
            **kwargs,
        )
    )
    return [e["_id"] for e in json.loads(b"[" + text + b"]")]


def test_an_upstream_without_a_filter_is_filtered_on_the_connectors_side():
    """Its pages ignore since and list everything in order: the feed skips what Sesam has."""
    since = POSITIONS.encode((9,))
    assert feed([TICKETS[:2], TICKETS[2:]], since=since) == ["17", "40"]


def test_an_unordered_upstream_breaks_an_ordered_feed_but_not_a_full_runs_only_one():
    shuffled = [TICKETS[2], TICKETS[0], TICKETS[3], TICKETS[1]]
    with pytest.raises(UpstreamContractError, match="order"):
        feed([shuffled])
    assert feed([shuffled], ordered=False) == ["17", "3", "40", "9"]


class FullRunsOnly(Records):
    supports_since = False


@pytest.fixture
def full_runs_only(upstream, tmp_path):
    app = reference_app(upstream, tmp_path / "state", FullRunsOnly)
    return app.test_client()


def test_a_full_runs_only_feed_serves_full_runs_and_refuses_since(full_runs_only, upstream):
    answer = full_runs_only.get("/people")
    assert answer.status_code == 200
    assert {e["_id"] for e in json.loads(answer.get_data())} == set(upstream.live("people"))
    since = json.loads(answer.get_data())[0]["_updated"]
    refused = full_runs_only.get("/people", query_string={"since": since})
    assert refused.status_code == 400
    assert "supports_since" in refused.get_json()["detail"]
