"""The page-to-entities stream: one chunk per upstream page, so the feed reads one page
before its answer begins, and never NaN or Infinity in the JSON it writes."""

from __future__ import annotations

import json

import pytest

from service.framework.feed import entity_chunks
from service.framework.feed import make_token
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Positions
from service.tools.reference import Records

POSITIONS = Positions((TIMESTAMP, TEXT))

TS = "2026-03-01T12:00:00.000000Z"


def record(record_id, **fields):
    return {"id": record_id, "updated_at": TS, "deleted": False, **fields}


def chunks(pages, since=None, limit=None):
    return entity_chunks(
        pages,
        since=since,
        limit=limit,
        position=Records.position,
        to_entity=Records.to_entity,
        stats={"entities": 0},
        positions=POSITIONS,
    )


def test_a_page_whose_records_were_all_delivered_already_is_one_empty_chunk():
    fetched = []

    def pages():
        for i in range(3):
            fetched.append(i)
            yield [record(f"r{i}{j}") for j in range(5)]

    stream = chunks(pages(), since=make_token(POSITIONS, (TS, "r04")))
    assert next(stream) == b""  # page 0 skipped whole: the answer may begin now
    assert fetched == [0]
    assert next(stream).startswith(b'{"id":"r10"')
    assert fetched == [0, 1]


def test_the_chunks_join_into_the_array_with_commas_between_pages():
    pages = [[record("a"), record("b")], [], [record("c")]]
    assert [c[:8] for c in chunks(pages)] == [b'{"id":"a', b"", b',{"id":"']


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_never_written(number):
    # Since orjson (jsontext.py), a NaN or an infinity an adapter puts into an entity is
    # written as null, where the feed once refused it: either way Sesam never reads one.
    text = b"".join(chunks([[record("a", score=number)]]))
    assert b"NaN" not in text and b"Infinity" not in text
    assert json.loads(b"[" + text + b"]")[0]["score"] is None


def test_text_is_written_as_utf_8_not_escaped():
    assert "Ærø 😀".encode() in next(chunks([[record("a", name="Ærø 😀")]]))
