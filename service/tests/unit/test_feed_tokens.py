"""Since tokens, since/limit parsing and the page-to-entities stream, without Flask."""

from __future__ import annotations

import json
import random
from datetime import UTC
from datetime import datetime

import pytest

from service.framework.errors import UpstreamContractError
from service.framework.feed import entity_chunks
from service.framework.feed import make_token as encode
from service.framework.feed import parse_limit
from service.framework.feed import parse_since as decode
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Positions
from service.tools.reference import Records

POSITIONS = Positions((TIMESTAMP, TEXT))
TS = "2026-03-01T12:00:00.000000Z"
LATER = "2026-03-01T12:00:00.000001Z"
HOSTILE_IDS = [
    "a",
    "a/",
    "a/b",
    "ab",
    "a b",
    "a?b#c%d",
    "é",
    "\u00ff",
    "\u0100",
    "日本",
    "😀",
    "\uffff",
    "~t2015",
    "_id",
    "A",
    "0",
    "a" * 300,
]


def chunks_to_entities(pages, **kwargs):
    stats = {"entities": 0}
    kwargs.setdefault("since", None)
    kwargs.setdefault("limit", None)
    text = (
        b"["
        + b"".join(
            entity_chunks(
                pages,
                position=Records.position,
                to_entity=Records.to_entity,
                stats=stats,
                positions=POSITIONS,
                **kwargs,
            )
        )
        + b"]"
    )
    entities = json.loads(text)
    assert stats["entities"] == len(entities)
    return entities


def make_token(updated_at, record_id):
    return encode(POSITIONS, (updated_at, record_id))


def parse_since(since):
    return decode(since, POSITIONS)


def record(record_id, updated_at=TS, deleted=False, **fields):
    return {"id": record_id, "updated_at": updated_at, "deleted": deleted, **fields}


def test_tokens_sort_as_strings_in_updated_at_then_id_order():
    keys = [(ts, i) for ts in (TS, LATER) for i in HOSTILE_IDS]
    random.Random(7).shuffle(keys)
    by_key = sorted(keys)
    by_token = sorted(keys, key=lambda key: make_token(*key))
    assert by_token == by_key
    assert len({make_token(*key) for key in keys}) == len(keys)


def test_a_timestamp_of_another_precision_or_offset_is_normalised_to_utc_microseconds():
    assert make_token("2026-03-01T12:00:00Z", "p-1") == make_token(TS, "p-1")
    assert make_token("2026-03-01T13:00:00.000000001+01:00", "p-1") == make_token(TS, "p-1")


@pytest.mark.parametrize(
    "updated_at",
    [
        "2026-13-45T99:99:99.000000Z",
        "0000-01-01T00:00:00.000000Z",
        "２０２６-03-01T12:00:00.000000Z",
        "2026-03-01T12:00:00",
        "yesterday",
    ],
)
def test_token_rejects_an_updated_at_that_is_not_a_time_with_a_zone(updated_at):
    with pytest.raises(UpstreamContractError, match="position"):
        make_token(updated_at, "p-1")


def test_tokens_of_earlier_versions_are_the_same_text():
    """A pipe's stored since must not break or rewind after an upgrade."""
    assert make_token(TS, "p-1") == TS + "_" + b"p-1".hex()


@pytest.mark.parametrize("since", [make_token(TS, "p-1"), make_token(TS, "日本/😀"), TS])
def test_since_accepts_tokens_and_bare_timestamps(since):
    values = parse_since(since)
    assert values[0] == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert make_token(*values) == since if len(values) == 2 else values == (values[0],)


@pytest.mark.parametrize(
    "since",
    [
        "2026-03-01",
        "yesterday",
        TS + "_",
        TS + "_abc",
        TS + "_ff",
        TS + "_ZZ",
        " " + TS,
        "2026-03-01T12:00:00Z",
    ],
)
def test_malformed_since_is_refused(since):
    with pytest.raises(ValueError, match="since"):
        parse_since(since)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("1", 1), ("1000", 1000)])
def test_limit_parsing(raw, expected):
    assert parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "ten", "1.5"])
def test_bad_limit_is_refused(raw):
    with pytest.raises(ValueError, match="limit"):
        parse_limit(raw)


def test_record_becomes_entity_with_fields_kept():
    source = record(
        "p/1", name="Ada", address={"city": "Oslo", "lines": ["a", "b"]}, score=None, deleted=True
    )
    [entity] = chunks_to_entities([[source]], since=TS)
    assert entity["_id"] == "p/1"
    assert entity["_deleted"] is True
    assert entity["_updated"] == make_token(TS, "p/1")
    assert entity["address"] == {"city": "Oslo", "lines": ["a", "b"]}
    assert entity["name"] == "Ada" and entity["score"] is None


def test_since_inside_a_run_of_equal_timestamps_resumes_exactly():
    run = [record(f"r{i:04d}") for i in range(50)] + [record("z", LATER)]
    everything = chunks_to_entities([run[:20], run[20:40], run[40:]])
    for cut in (0, 1, 19, 20, 33, 49, 50):
        since = everything[cut]["_updated"]
        rest = chunks_to_entities([run[:20], run[20:40], run[40:]], since=since)
        assert [e["_id"] for e in rest] == [e["_id"] for e in everything[cut + 1 :]]


def test_limit_stops_mid_page_and_across_pages():
    pages = [[record(f"r{i}{j}") for j in range(5)] for i in range(3)]
    assert [e["_id"] for e in chunks_to_entities(iter(pages), limit=7)] == [
        "r00",
        "r01",
        "r02",
        "r03",
        "r04",
        "r10",
        "r11",
    ]


def test_limit_does_not_fetch_pages_it_does_not_need():
    fetched = []

    def pages():
        for i in range(10):
            fetched.append(i)
            yield [record(f"r{i}{j}") for j in range(5)]

    assert len(chunks_to_entities(pages(), limit=5)) == 5
    assert fetched == [0]


def test_empty_pages_and_skipped_pages_still_make_a_valid_array():
    pages = [[], [record("a")], [], [record("b")]]
    since = make_token(TS, "a")
    assert [e["_id"] for e in chunks_to_entities(pages, since=since)] == ["b"]
    assert chunks_to_entities([[]]) == []


def test_upstream_out_of_order_breaks_the_feed():
    with pytest.raises(UpstreamContractError, match="order"):
        chunks_to_entities([[record("b"), record("a")]])


def test_duplicate_record_breaks_the_feed():
    with pytest.raises(UpstreamContractError, match="order"):
        chunks_to_entities([[record("a")], [record("a")]])
