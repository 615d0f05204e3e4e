"""orjson behind the standard library's answers: the same values, errors and bytes, except
the differences jsontext documents."""

from __future__ import annotations

import dataclasses
import json
import random
import uuid
from datetime import UTC
from datetime import datetime
from typing import Any

import pytest

from service.framework import jsontext
from service.framework.upstream import UpstreamClient
from service.framework.upstream import UpstreamError


def reject(name: str) -> Any:
    raise ValueError(f"{name} refused")


def stdlib_loads(data: bytes) -> Any:
    return json.loads(data, parse_constant=reject)


def stdlib_dumps(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


TEXTS = [
    b'[{"_id": "a", "n": 1, "f": 1.5, "s": "\xc3\xb8", "l": [true, false, null], "o": {}}]',
    b"18446744073709551615",  # 2**64 - 1: orjson's own
    b"18446744073709551616",  # 2**64: orjson would answer a float
    b"-9223372036854775809",  # below -(2**63): likewise
    b'{"id": 123456789012345678901234567890, "x": [1]}',
    b"-0",
    b"-0.0",
    b"0.1",
    b"5e-324",
    b"1e999",  # infinity, as the standard library reads it
    b'{"a": 1, "b": 2, "a": 3}',  # the last wins, in the first one's place
    b'"\\ud800"',  # a lone surrogate escape: orjson refuses, the standard library reads it
    b'"\\u0000\x7f\\u2028"',
    b"\xef\xbb\xbf[1]",  # a UTF-8 byte order mark
    '[{"_id": "ø"}]'.encode("utf-16"),
    '[{"_id": "ø"}]'.encode("utf-16-le"),
    '[{"_id": "ø"}]'.encode("utf-32"),
    b"\t[1]\r\n",
]
REFUSED = [b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1,]", b"01", b"[\xff]", b"", b"[1] x"]


@pytest.mark.parametrize("data", TEXTS)
def test_loads_answers_what_the_standard_library_answers(data):
    expected = stdlib_loads(data)
    value = jsontext.loads(data, reject)
    assert repr(value) == repr(expected)  # repr: 0 is not 0.0, and a big int not a float


@pytest.mark.parametrize("data", REFUSED)
def test_loads_refuses_what_the_standard_library_refuses_with_its_words(data):
    with pytest.raises(ValueError) as expected:
        stdlib_loads(data)
    with pytest.raises(ValueError) as refused:
        jsontext.loads(data, reject)
    assert str(refused.value) == str(expected.value)


def test_loads_refuses_nesting_the_standard_library_cannot_read():
    with pytest.raises(RecursionError):
        jsontext.loads(b"[" * 100_000 + b"]" * 100_000, reject)


def test_a_parse_float_check_applies_to_what_orjson_leaves_to_the_standard_library():
    def finite(text: str) -> float:
        number = float(text)
        if number in (float("inf"), float("-inf")):
            raise ValueError("too large")
        return number

    assert jsontext.loads(b"[1.5, 2]", reject, finite) == [1.5, 2]
    with pytest.raises(ValueError, match="too large"):
        jsontext.loads(b"[1e999]", reject, finite)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randrange(-(2**63), 2**64)
    if kind == 2:
        return rng.choice(
            [rng.random(), rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randrange(-30, 30)]
        )
    if kind in (3, 4, 5):
        alphabet = 'aZ0 ~_$"\\/\n\t\x00\x1f\x7fø日本😀\u2028'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return {
            f"k{i}{rng.choice('ø_$~')}": random_value(rng, depth + 1)
            for i in range(rng.randrange(5))
        }
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def tiny_floats(value: Any) -> bool:
    """Whether ``value`` holds a float below 1e-4 in magnitude (the formatting difference)."""
    if isinstance(value, float):
        return 0 < abs(value) < 1e-4
    if isinstance(value, dict):
        return any(tiny_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(tiny_floats(v) for v in value)
    return False


def test_random_entities_round_trip_equal_and_their_bytes_differ_only_by_tiny_floats():
    rng = random.Random(11)
    tiny = 0
    for _ in range(3000):
        entity = {"_id": "e", "_updated": "t", "value": random_value(rng)}
        encoded = jsontext.dumps(entity)
        assert json.loads(encoded) == entity
        assert jsontext.loads(encoded, reject) == entity
        if tiny_floats(entity):
            tiny += 1
        else:
            assert encoded == stdlib_dumps(entity)
    assert 0 < tiny < 3000


def test_floats_below_1e_4_are_written_in_another_form_of_the_same_number():
    """The one documented difference in bytes: orjson writes 1e-05 as 0.00001 and 1e-07
    as 1e-7; every other float as the standard library does (Python's repr)."""
    values = [3.1e-05, 1e-7, -2.5e-300, 1e-4, 0.1, 1.5, 1e15, 1e16, 1e22, 5e-324 * 3]
    assert (
        jsontext.dumps(values)
        == b"[0.000031,1e-7,-2.5e-300,0.0001,0.1,1.5,1000000000000000.0,1e+16,1e+22,1.5e-323]"
    )
    assert (
        stdlib_dumps(values)
        == b"[3.1e-05,1e-07,-2.5e-300,0.0001,0.1,1.5,1000000000000000.0,1e+16,1e+22,1.5e-323]"
    )
    assert json.loads(jsontext.dumps(values)) == values


@dataclasses.dataclass
class Point:
    x: int


class Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**64, "negative": -(2**63) - 1},  # beyond orjson's integers
        {1: "a", None: "b", 2.5: "c"},  # keys that are not strings
        {"name": Name("ada")},  # a subclass of str
        {"s": "ø\u2028<>&"},
        {"big": 2**64, "name": "Ærøskøbing"},  # the standard library's text is UTF-8 too
    ],
)
def test_dumps_writes_what_the_standard_library_writes(value):
    assert jsontext.dumps(value) == stdlib_dumps(value)


@pytest.mark.parametrize("value", [{"at": datetime(2026, 3, 1, tzinfo=UTC)}, {"p": Point(1)}])
def test_dumps_refuses_what_the_standard_library_refuses(value):
    with pytest.raises(TypeError):
        stdlib_dumps(value)
    with pytest.raises(TypeError):
        jsontext.dumps(value)


def test_a_nan_beside_what_only_the_standard_library_encodes_is_refused_as_it_refuses_it():
    """Never the text ``NaN``, which is not JSON and which Sesam would refuse."""
    with pytest.raises(ValueError):
        jsontext.dumps({"big": 2**64, "x": float("nan")})


def test_a_lone_surrogate_fails_the_encoding_as_it_always_did():
    with pytest.raises(UnicodeEncodeError):
        jsontext.dumps({"s": "\ud800"})


def test_the_documented_differences_for_an_adapters_own_values():
    """A NaN or infinity an adapter itself puts into an entity is null (the standard
    library refused it); a UUID is its string. A parsed value never holds either."""
    assert jsontext.dumps([float("nan"), float("inf")]) == b"[null,null]"
    some = uuid.UUID(int=1)
    assert jsontext.dumps([some]) == f'["{some}"]'.encode()


class Response:
    status_code = 200
    url = "http://upstream/people"

    def __init__(self, content: bytes) -> None:
        self.content = content


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"data": [{"n": NaN}]}', "NaN, which is not JSON"),
        (b'{"data": [{"n": -Infinity}]}', "-Infinity, which is not JSON"),
        (b'{"data": [{"n": 1e999}]}', "1e999, which is too large for a number"),
        (b'{"data": [', "invalid JSON"),
    ],
)
def test_an_upstream_page_with_nan_infinity_or_an_overflow_is_refused(
    monkeypatch, content, message
):
    client = UpstreamClient("http://upstream", "token")
    monkeypatch.setattr(client, "request", lambda *args, **kwargs: Response(content))
    with pytest.raises(UpstreamError, match=message):
        client.get_json("http://upstream/people")


def test_an_upstream_page_keeps_integers_beyond_64_bits_exact(monkeypatch):
    client = UpstreamClient("http://upstream", "token")
    content = b'{"data": [{"id": 123456789012345678901234567890, "n": -9223372036854775809, '
    content += b'"price": 12.5}]}'  # and its floats, which the standard library parses then
    monkeypatch.setattr(client, "request", lambda *args, **kwargs: Response(content))
    record = client.get_json("http://upstream/people")["data"][0]
    assert record == {
        "id": 123456789012345678901234567890,
        "n": -9223372036854775809,
        "price": 12.5,
    }


def test_a_compact_page_keeps_integers_beyond_64_bits_exact_too():
    """Most APIs send JSON without spaces: the number then follows a ':' or a ','."""
    for data, value in (
        (b'{"id":123456789012345678901234567890}', {"id": 123456789012345678901234567890}),
        (b'{"ns":[1,-9223372036854775809]}', {"ns": [1, -9223372036854775809]}),
        (b"[12345678901234567890123]", [12345678901234567890123]),
    ):
        assert jsontext.loads(data, reject) == value


@pytest.mark.parametrize(
    "data",
    [
        b'{"hash": "00000000000000000000000000000001", "n": 1}',  # digits in a string
        b'{"id": 1234567890123456789}',  # 19 digits: orjson's own
        b'{"id": -922337203685477580}',
    ],
)
def test_long_digit_runs_in_strings_and_64_bit_integers_take_the_fast_path(monkeypatch, data):
    expected = stdlib_loads(data)

    def no_stdlib(*args, **kwargs):
        raise AssertionError("parsed by the standard library")

    monkeypatch.setattr(jsontext.json, "loads", no_stdlib)
    assert jsontext.loads(data, reject) == expected


def test_text_over_the_orjson_bound_is_parsed_by_the_standard_library(monkeypatch):
    """orjson holds about 12 times the text while parsing: a large body must not take a
    128 MB container down."""
    monkeypatch.setattr(jsontext, "ORJSON_MAX_BYTES", 10)
    monkeypatch.setattr(jsontext.orjson, "loads", lambda data: pytest.fail("orjson parsed it"))
    assert jsontext.loads(b'[{"_id": "a"}, 1]', reject) == [{"_id": "a"}, 1]


def test_orjson_parses_text_up_to_one_mib_and_the_standard_library_what_is_longer(monkeypatch):
    """The bound docs/operations.md gives for a page's parse (about 12 times the text)."""
    parsed_by = []
    real_loads = jsontext.orjson.loads

    def watching_loads(text):
        parsed_by.append(len(text))
        return real_loads(text)

    monkeypatch.setattr(jsontext.orjson, "loads", watching_loads)
    mib = 1 << 20
    for size in (mib, mib + 1):
        text = b'["' + b"a" * (size - 4) + b'"]'
        assert jsontext.loads(text, reject) == ["a" * (size - 4)]
    assert parsed_by == [mib]


@pytest.mark.parametrize(
    "data",
    [b'{"a": [1, 2]}', b'{"a": NaN}', b"[1e400]", b"{broken", b"[123456789012345678901]"],
)
def test_the_garbage_collector_is_paused_for_the_parse_only(monkeypatch, data):
    """orjson parses with the collector off (parsed JSON holds no cycle); it is on again
    after every parse, refused or not, and stays off when it was off before."""
    seen = []
    real_loads = jsontext.orjson.loads

    def watching_loads(text):
        seen.append(jsontext.gc.isenabled())
        return real_loads(text)

    monkeypatch.setattr(jsontext.orjson, "loads", watching_loads)
    for enabled in (True, False):
        (jsontext.gc.enable if enabled else jsontext.gc.disable)()
        try:
            try:
                jsontext.loads(data, reject)
            except ValueError:
                pass
            assert jsontext.gc.isenabled() is enabled
        finally:
            jsontext.gc.enable()
    if data != b"[123456789012345678901]":  # the standard library's alone
        assert seen == [False, False]
