"""What the upstream receives at the edges of Sesam's typed values, and what Sesam reads in
a 400 for a batch that is not one: the connector under gunicorn, the demo Records API."""

from __future__ import annotations

import json
import re

import pytest

from service.tests.functional.test_sink_http import ok
from service.tests.functional.test_sink_http import post
from service.tests.functional.test_sink_http import writes

# --- typed values at their edges -----------------------------------------------------------


def test_decimals_at_the_edges_are_written_as_numbers_or_kept_as_text(connector, upstream):
    entity = {
        "_id": "edges",
        "huge": "~f1e9999999999999999999999999",  # no Decimal holds it: the text stays
        "tiny": "~f1e-400",  # a double would make it 0: the text stays
        "whole_300_digits": "~f1e299",  # the largest whole number written as an integer
        "whole_301_digits": "~f1e300",  # one digit more: the nearest double
        "too_big_for_a_double": "~f1e400",
        "nine_299": "~f9.99e299",
    }
    ok(post(connector, "people", [entity]))
    record = upstream.live("people")["edges"]
    assert record["huge"] == "~f1e9999999999999999999999999"
    assert record["tiny"] == "~f1e-400"
    assert record["whole_300_digits"] == 10**299
    assert isinstance(record["whole_301_digits"], float) and record["whole_301_digits"] == 1e300
    assert record["too_big_for_a_double"] == "~f1e400"
    assert record["nine_299"] == 999 * 10**297


# --- what a 400 says -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        # the JSON type it got
        (b'{"_id": "p-1"}', "not a JSON object"),
        (b'"people"', "not a JSON string"),
        (b"42", "not a JSON number"),
        (b"true", "not a JSON boolean"),
        (b"null", "not a JSON null"),
        (b"[[]]", "entity 0 is a JSON array, not an object"),
        (b'["p-1"]', "entity 0 is a JSON string, not an object"),
        (b"[1.5]", "entity 0 is a JSON number, not an object"),
        (b"[false]", "entity 0 is a JSON boolean, not an object"),
        (b"[null]", "entity 0 is a JSON null, not an object"),
        (b'[{"_id": 7}]', "_id must be a string, not a JSON number"),
        (b'[{"_id": true}]', "_id must be a string, not a JSON boolean"),
        (b'[{"_id": null}]', "_id must be a string, not a JSON null"),
        (b'[{"_id": ["p-1"]}]', "_id must be a string, not a JSON array"),
        (b'[{"_id": {"id": "p-1"}}]', "_id must be a string, not a JSON object"),
        # an object is refused before it is parsed (it may be megabytes), broken or not
        (b'{"_id": "p-1", "name": ', "must be a JSON array of entities, not a JSON object"),
        # text that is no JSON at all
        (b"42 43", "the body is not JSON: Extra data"),
        (b"[]x", "the body is not JSON: Extra data"),
        (b'[{"_id": "p-1"}]x', "the body is not JSON: Extra data"),
        (b'[{"_id": "p-1"} {"_id": "p-2"}]', "the body is not JSON: Expecting ',' delimiter"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is nested too deeply"),
    ],
)
def test_a_400_says_what_is_wrong_and_nothing_is_written(connector, upstream, body, detail):
    response = post(connector, "people", body, raw=True)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert writes(upstream) == 0


@pytest.mark.parametrize(
    "separators",
    [(",", ":"), (" ,\n\t", " :\r\n")],
    ids=["compact", "white space around every comma and colon"],
)
def test_a_batch_reads_the_same_however_its_json_is_spaced(connector, upstream, separators):
    entities = [{"_id": f"p-{i}", "name": f"spaced {i}"} for i in (1, 2, 3)]
    body = json.dumps(entities, separators=separators).encode()
    body = b"\n [ " + body[1:-1] + b" ] \n" if separators[0] != "," else body
    assert ok(post(connector, "people", body, raw=True))["entities"] == 3
    live = upstream.live("people")
    assert [live[f"p-{i}"]["name"] for i in (1, 2, 3)] == ["spaced 1", "spaced 2", "spaced 3"]


# --- what a refused or failed request tells ------------------------------------------------


def test_a_failed_deletion_is_named_as_a_delete(connector, upstream):
    upstream.faults(fail_write_ids={"ids": ["p-3"], "status": 500})
    failed = post(connector, "people", [{"_id": "p-3", "_deleted": True}])
    assert failed.status_code == 502, failed.text
    [named] = failed.json()["failed"]
    assert (named["_id"], named["operation"], named["upstream_status"]) == ("p-3", "delete", 500)
    assert re.search(r"sink people status=502 .*failed: 'p-3' delete 500", connector.log_text())


@pytest.mark.parametrize(
    ("body", "params"), [(b"[1]", {"is_full": "false"}), (b"[]", {"is_full": "maybe"})]
)
def test_a_refused_request_is_logged_with_nothing_counted(connector, upstream, body, params):
    before = len(connector.log_text())
    assert post(connector, "people", body, params=params, raw=True).status_code == 400
    assert re.search(
        r"sink people status=400 entities=0 duplicates=0 upserts=0 deletes=0 is_full=false "
        r"seconds=\S+ rejected: ",
        connector.log_text()[before:],
    )


def test_an_incremental_answer_is_counts_only(connector, upstream):
    batch = [{"_id": "p-1"}, {"_id": "p-1"}, {"_id": "p-2", "_deleted": True}]
    # Sesam sends its sequence tokens on incremental requests too: still no full_sync
    params = {"is_full": "false", "sequence_id": "s-1", "request_id": "r-1"}
    assert ok(post(connector, "people", batch, params=params)) == {
        "resource": "people",
        "is_full": False,
        "entities": 3,
        "duplicates": 1,
        "upserts": 1,
        "deletes": 1,
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # json reads it as Infinity, which the upstream cannot be sent as JSON
        (b'[{"_id": "big", "v": 1e400}]', "entity 0 ('big') holds a number JSON cannot carry"),
        (b'[{"_id": "neg", "v": -1e400}]', "entity 0 ('neg') holds a number JSON cannot carry"),
        (b'[{"_id": "deep", "v": ' + b"[" * 900 + b"]" * 900 + b"}]", "nested"),
    ],
)
def test_an_entity_the_upstream_cannot_take_is_a_400_before_any_write(
    connector, upstream, body, fragment
):
    response = post(connector, "people", body, raw=True)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]
    assert writes(upstream) == 0
