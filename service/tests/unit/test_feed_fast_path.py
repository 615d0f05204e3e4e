"""The feed's hot path (issue 11): the token's fast path stays strict, and the bytes on
the wire are those the standard library wrote before."""

from __future__ import annotations

import json
import random

import pytest

from service.framework.errors import UpstreamContractError
from service.framework.feed import entity_chunks
from service.framework.feed import make_token
from service.framework.positions import SEPARATOR
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Positions
from service.tools.demo_upstream.synthetic import SyntheticCollection
from service.tools.reference import Records

POSITIONS = Positions((TIMESTAMP, TEXT))
TS = "2026-03-01T12:00:00.000000Z"


def general_encoding(values):
    """The token the loop over parts makes, without the (TIMESTAMP, TEXT) fast path."""
    parts = (TIMESTAMP, TEXT)
    return SEPARATOR.join(
        part.encode(v, i == 1) for i, (part, v) in enumerate(zip(parts, values, strict=True))
    )


@pytest.mark.parametrize(
    "updated_at",
    [
        "2026-03-01T12:00:00.000001Z",
        "2026-03-01T12:00:00.999999Z",
        "2026-03-01T12:00:01.000000Z",
        "2026-03-01T12:00:00Z",
        "2026-03-01T13:00:00.5+01:00",
        "2026-02-28T23:59:59.123456Z",
    ],
)
def test_the_fast_path_makes_the_general_token(updated_at):
    make_token(POSITIONS, (TS, "warm"))  # the second of TS is now a checked one
    assert make_token(POSITIONS, (updated_at, "p/1")) == general_encoding((updated_at, "p/1"))


@pytest.mark.parametrize(
    "updated_at",
    [
        "2026-03-01T12:00:00.00000٣Z",  # an Arabic-Indic digit, in a checked second
        "2026-03-01T12:00:00.０00000Z",  # a fullwidth digit
        "2026-03-01T12:00:00.0000 0Z",
        "2026-03-01T12:00:00.000000z",
        "2026-03-01T12:00:00.0000000",
        "2026-02-30T12:00:00.000000Z",  # an impossible date
        "2026-03-01T24:00:00.000000Z",
        "2026-03-01T12:00:60.000000Z",
        "２０２６-03-01T12:00:00.000000Z",
    ],
)
def test_the_fast_path_still_refuses_what_is_not_a_time(updated_at):
    make_token(POSITIONS, (TS, "warm"))
    with pytest.raises(UpstreamContractError, match="position"):
        make_token(POSITIONS, (updated_at, "p/1"))


@pytest.mark.parametrize("record_id", ["", None, 7, "\ud800"])
def test_the_fast_path_still_refuses_an_id_that_is_not_text(record_id):
    with pytest.raises(UpstreamContractError, match="position"):
        make_token(POSITIONS, (TS, record_id))


def test_a_position_of_the_wrong_length_is_refused():
    with pytest.raises(UpstreamContractError, match="2 parts, not 3"):
        make_token(POSITIONS, (TS, "a", "b"))


def stdlib_body(pages):
    """The body as the feed wrote it before orjson: copies, then json.dumps per page."""
    chunks = []
    for page in pages:
        entities = []
        for record in page:
            entity = dict(record)
            entity["_id"] = record["id"]
            entity["_deleted"] = record.get("deleted") is True
            entity["_updated"] = make_token(POSITIONS, (record["updated_at"], record["id"]))
            entities.append(entity)
        if entities:
            chunks.append(
                json.dumps(entities, ensure_ascii=False, allow_nan=False, separators=(",", ":"))[
                    1:-1
                ]
            )
    return "[" + ",".join(chunks) + "]"


def feed_body(pages):
    stats = {"entities": 0}
    chunks = entity_chunks(
        pages,
        since=None,
        limit=None,
        position=Records.position,
        to_entity=Records.to_entity,
        stats=stats,
        positions=POSITIONS,
    )
    return (b"[" + b"".join(chunks) + b"]").decode("utf-8")


def parsed_pages(pages):
    """Fresh records, as the upstream client hands them over (to_entity changes them)."""
    return [json.loads(json.dumps(page)) for page in pages]


def test_the_feed_writes_the_same_bytes_as_before_for_the_benchmark_records():
    synthetic = SyntheticCollection(2500, 1000)
    records = [synthetic.record_at(i) for i in range(2500)]
    pages = [records[i : i + 1000] for i in range(0, 2500, 1000)]
    assert feed_body(parsed_pages(pages)) == stdlib_body(parsed_pages(pages))


def test_the_feed_writes_the_same_bytes_as_before_for_awkward_values():
    rng = random.Random(3)
    values = [
        None,
        True,
        0,
        -1,
        2**63 - 1,
        2**64,  # beyond 64 bits: written by the standard library, exactly
        -(2**70),
        0.5,
        1e16,
        -0.0,
        "",
        'ø日本😀\u2028\x00\x1f"\\/',
        [1, [2, {"a": None}]],
        {"$k": "~t2015-12-31", "_x": 1},
    ]
    records = [
        {
            "id": f"r{n:03d}",
            "updated_at": f"2026-03-01T12:00:{n // 10:02d}.{n:06d}Z",
            "deleted": n % 7 == 0,
            "value": rng.choice(values),
            "other": {"nested": rng.choice(values)},
        }
        for n in range(300)
    ]
    pages = [records[:100], [], records[100:]]
    assert feed_body(parsed_pages(pages)) == stdlib_body(parsed_pages(pages))


def test_entities_round_trip_equal_to_what_the_adapter_made():
    synthetic = SyntheticCollection(500, 7)
    records = [synthetic.record_at(i) for i in range(500)]
    entities = json.loads(feed_body(parsed_pages([records])))
    for record, entity in zip(records, entities, strict=True):
        expected = {**record, "_id": record["id"], "_deleted": False}
        expected["_updated"] = make_token(POSITIONS, (record["updated_at"], record["id"]))
        assert entity == expected
        assert list(entity) == list(expected)  # the keys' order too


def test_a_lone_surrogate_in_a_value_breaks_the_feed_with_a_contract_error():
    record = {"id": "a", "updated_at": TS, "deleted": False, "s": "\ud800"}
    with pytest.raises(UpstreamContractError, match="not valid Unicode"):
        feed_body([[record]])
