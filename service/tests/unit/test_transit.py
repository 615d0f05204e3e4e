"""Sesam's typed strings become plain JSON upstream; anything doubtful stays as it is."""

from __future__ import annotations

import json

import pytest

from service.framework.transit import plain
from service.framework.transit import plain_string
from service.tools.reference import Records


@pytest.mark.parametrize(
    ("tagged", "expected"),
    [
        ("~t2015-12-31", "2015-12-31"),
        ("~t2015-01-02T03:04:05Z", "2015-01-02T03:04:05Z"),
        ("~t2015-01-02T03:04:05.123456789Z", "2015-01-02T03:04:05.123456789Z"),
        ("~t2024-02-29T23:59:59.1Z", "2024-02-29T23:59:59.1Z"),
        ("~f123.45", 123.45),
        ("~f-0.5", -0.5),
        ("~f10", 10),
        ("~f10.00", 10),
        ("~f1e3", 1000),
        ("~f12345678901234567890123", 12345678901234567890123),
        ("~f1.5E-7", 1.5e-7),
        ("~rhttp://example.com/a?b=c#d", "http://example.com/a?b=c#d"),
        ("~rurn:isbn:0451450523", "urn:isbn:0451450523"),
        ("~:crm:42", "crm:42"),
        ("~:crm:person:ølen", "crm:person:ølen"),
        ("~u6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
        ("~baGVsbG8=", "aGVsbG8="),
        ("~b", ""),
    ],
)
def test_a_typed_string_becomes_its_plain_value(tagged, expected):
    value = plain_string(tagged)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "~",
        "~x",
        "~~t2015-12-31",
        "~tyesterday",
        "~t2015-02-30",
        "~t2015-12-31T25:00:00Z",
        "~t2015-01-02T03:04:05",
        "~t2015-01-02T03:04:05+01:00",
        "~t2015-01-02T03:04:05.1234567890Z",
        "~fNaN",
        "~fInfinity",
        "~f-inf",
        "~f1_000",
        "~f 1",
        "~f",
        "~f1e999999999",
        "~f1e-999999999",
        "~f0x10",
        "~r",
        "~rnot a uri",
        "~:",
        "~unot-a-uuid",
        "~b!!!",
        "~bYQ",
        "plain",
        "",
        "t~2015-12-31",
    ],
)
def test_a_string_that_is_not_a_valid_typed_value_stays_as_it_is(text):
    assert plain_string(text) == text


def test_decimals_never_become_nan_or_infinity():
    values = [plain_string(t) for t in ("~fNaN", "~fInfinity", "~f1e400", "~f-1e400")]
    json.dumps(values, allow_nan=False)  # raises on NaN or Infinity


def test_typed_strings_are_converted_at_any_depth_but_keys_are_not():
    value = {
        "~t2015-12-31": ["~f1.5", {"when": "~t2015-12-31", "n": [["~:a:b"]]}],
        "flag": True,
        "none": None,
        "n": 3,
    }
    assert plain(value) == {
        "~t2015-12-31": [1.5, {"when": "2015-12-31", "n": [["a:b"]]}],
        "flag": True,
        "none": None,
        "n": 3,
    }


def test_to_record_drops_reserved_fields_only_at_the_top_and_keeps_dollar_keys():
    entity = {
        "_id": "p-1",
        "_deleted": False,
        "_updated": "x",
        "_hash": "h",
        "_ts": 1,
        "name": "Ada",
        "$ref": "~:crm:1",
        "nested": {"_keep": "~t2015-12-31", "list": [{"_also": 1}]},
    }
    assert Records.to_record(entity) == {
        "name": "Ada",
        "$ref": "crm:1",
        "nested": {"_keep": "2015-12-31", "list": [{"_also": 1}]},
    }
