"""Typed positions: string order of the tokens is the order of the typed values, and a
since decodes back to those values."""

from __future__ import annotations

import random
from datetime import UTC
from datetime import datetime
from datetime import tzinfo
from decimal import Decimal

import pytest

from service.framework.feed import settled_until
from service.framework.positions import EPOCH_MILLIS
from service.framework.positions import EPOCH_SECONDS
from service.framework.positions import INTEGER
from service.framework.positions import NUMBER
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Part
from service.framework.positions import Positions

TEXTS = ["a", "ab", "abc", "b", "a b", "é", "日本", "😀", "\uffff", "~", "0", "A"]
INTEGERS = [-(10**300), -1000, -17, -10, -9, -2, -1, 0, 1, 2, 9, 10, 17, 1000, 10**300]
NUMBERS = [Decimal(n) for n in ("-1e50", "-100", "-1.55", "-1.5", "-1", "-0.001", "0")] + [
    Decimal(n) for n in ("1e-9", "0.001", "1", "1.5", "1.55", "9", "17", "1e50")
]


def assert_order_kept(positions: Positions, values: list[tuple]) -> None:
    shuffled = list(values)
    random.Random(11).shuffle(shuffled)
    assert sorted(shuffled, key=positions.encode) == sorted(values)
    for value in values:
        assert positions.decode(positions.encode(value)) == value
    assert len({positions.encode(v) for v in values}) == len(values)


def test_integer_ids_sort_as_numbers_not_as_text():
    """Ticket 9 comes before ticket 17: no zero padding needed."""
    positions = Positions((INTEGER,))
    assert positions.encode((9,)) < positions.encode((17,))
    assert_order_kept(positions, [(n,) for n in INTEGERS])


def test_an_integer_then_text_keeps_tuple_order():
    assert_order_kept(Positions((INTEGER, TEXT)), [(n, t) for n in INTEGERS for t in TEXTS])


def test_text_before_another_part_keeps_tuple_order_when_one_text_prefixes_another():
    positions = Positions((TEXT, NUMBER, TEXT))
    values = [(a, n, b) for a in ("a", "ab", "b") for n in NUMBERS for b in ("x", "xy")]
    assert_order_kept(positions, values)


def test_numbers_of_either_sign_and_any_size_keep_their_order():
    assert_order_kept(Positions((NUMBER,)), [(n,) for n in NUMBERS])
    assert_order_kept(Positions((NUMBER, INTEGER)), [(n, i) for n in NUMBERS for i in (-1, 0, 3)])


def test_floats_are_numbers():
    positions = Positions((NUMBER,))
    assert positions.encode((1.5,)) == positions.encode((Decimal("1.5"),))
    with pytest.raises(ValueError):
        positions.encode((float("nan"),))


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000Z"),
        ("2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.100000Z"),
        ("2026-01-02T04:04:05.123456789+01:00", "2026-01-02T03:04:05.123456Z"),
        ("2026-01-01T23:04:05-04:00", "2026-01-02T03:04:05.000000Z"),
    ],
)
def test_timestamps_of_any_precision_and_offset_are_normalised_to_utc(text, utc):
    assert Positions((TIMESTAMP, TEXT)).encode((text, "x")) == utc + "_78"


def test_second_precision_times_and_integer_ids_keep_their_order():
    positions = Positions((TIMESTAMP, INTEGER))
    times = ["2026-01-02T03:04:05Z", "2026-01-02T03:04:06Z", "2026-01-02T04:04:05+02:00"]
    values = [(t, n) for t in times for n in (1, 9, 17, 100)]
    tokens = sorted(values, key=positions.encode)
    expected = sorted(values, key=lambda v: (datetime.fromisoformat(v[0]), v[1]))
    assert tokens == expected


def test_epoch_seconds_and_milliseconds_read_as_times_and_decode_to_numbers():
    seconds = Positions((EPOCH_SECONDS, INTEGER))
    token = seconds.encode((1767322000, 5))
    assert token.startswith("2026-01-02T02:46:40.000000Z_")
    assert seconds.decode(token) == (1767322000, 5)
    millis = Positions((EPOCH_MILLIS,))
    assert millis.decode(millis.encode((1767322000123,))) == (1767322000123,)
    assert millis.encode((1767322000123,)) < millis.encode((1767322000124,))


@pytest.mark.parametrize("seconds", [1767322001, 1767322003, 1])
def test_an_epoch_since_of_an_odd_second_is_asked_from_that_second(seconds):
    """The number a since decodes to is what the adapter asks the upstream from: a second
    late (an odd second read as the next one) and the records of that second are never
    read."""
    in_seconds = Positions((EPOCH_SECONDS,))
    assert in_seconds.decode(in_seconds.encode((seconds,))) == (seconds,)
    millis = seconds * 1000 + 7
    in_millis = Positions((EPOCH_MILLIS,))
    assert in_millis.decode(in_millis.encode((millis,))) == (millis,)


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-45T99:99:99.000000Z",
        "0000-01-01T00:00:00.000000Z",
        "２０２６-01-02T03:04:05.000000Z",
        "2026-01-02T03:04:05",
        "",
        None,
    ],
)
def test_a_time_that_is_not_one_or_has_no_zone_is_refused(value):
    with pytest.raises(ValueError):
        Positions((TIMESTAMP,)).encode((value,))


@pytest.mark.parametrize("value", ["", None, 3, True])
def test_text_must_be_a_non_empty_string(value):
    with pytest.raises(ValueError):
        Positions((TEXT,)).encode((value,))


def test_a_bool_is_not_an_integer():
    with pytest.raises(ValueError):
        Positions((INTEGER,)).encode((True,))


@pytest.mark.parametrize(
    "since",
    [
        "2026-03-01T12:00:00Z",
        "2026-13-01T12:00:00.000000Z",
        "2026-03-01T12:00:00.000000Z_",
        "2026-03-01T12:00:00.000000Z_abc",
        "2026-03-01T12:00:00.000000Z_zz",
        "2026-03-01T12:00:00.000000Z_ff",
        "2026-03-01T12:00:00.000000Z_61_62",
        "２０２６-03-01T12:00:00.000000Z",
    ],
)
def test_a_since_that_is_not_a_token_or_its_first_parts_is_refused(since):
    with pytest.raises(ValueError):
        Positions((TIMESTAMP, TEXT)).decode(since)


@pytest.mark.parametrize(
    "since",
    [
        "2026-13-45T99:99:99.000000Z",  # no such month, day or time
        "2026-02-30T00:00:00.000000Z",
        "0000-01-01T00:00:00.000000Z",  # no year 0
        "0000-01-01T00:00:00.000000Z_7031",
        "٢٠٢٦-01-01T00:00:00.000000Z",  # Arabic-Indic digits: \d would take them
        "2026-01-01T00:00:00.00000０Z",  # a fullwidth digit
        "2026-01-01T00:00:00.000000Z_٧٠٣١",
    ],
)
@pytest.mark.parametrize("parts", [(TIMESTAMP, TEXT), (TIMESTAMP,), (TIMESTAMP, INTEGER)])
def test_impossible_dates_and_non_ascii_digits_are_refused_by_every_timestamp_codec(since, parts):
    with pytest.raises(ValueError):
        Positions(parts).decode(since)


@pytest.mark.parametrize("since", ["p5000", "p50010", "p500015", "n4999", "n49998~x", "x", "p500١"])
def test_a_malformed_integer_since_is_refused(since):
    with pytest.raises(ValueError):
        Positions((INTEGER,)).decode(since)


def test_a_bare_time_is_a_since_before_every_record_of_that_time():
    positions = Positions((TIMESTAMP, INTEGER))
    since = "2026-01-02T03:04:05.000000Z"
    assert positions.decode(since) == (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),)
    assert since < positions.encode((since, -5)) < positions.encode((since, 0))


def records_at(times):
    return [{"id": f"r{n}", "updated_at": t} for n, t in enumerate(times)]


def test_a_settle_window_of_one_second_settles_all_but_the_last_second():
    positions = Positions((TIMESTAMP, TEXT))
    before = datetime.now(UTC).timestamp()
    until = settled_until(positions, 1)
    after = datetime.now(UTC).timestamp()
    assert until is not None
    cutoff = datetime.fromisoformat(until.removesuffix("~")).timestamp()
    assert before - 1 <= cutoff <= after - 1


# --- what a pipe would notice (issue 20): stored tokens, record times, odd values ----------


@pytest.mark.parametrize(
    ("parts", "values", "token"),
    [
        ((INTEGER,), (1,), "p50001"),
        ((INTEGER,), (-17,), "n499882~"),
        ((INTEGER, TEXT), (170, "a"), "p500217._61"),
        ((NUMBER,), (Decimal("-1.5"),), "n499984~"),
        ((NUMBER,), (Decimal("0.001"),), "p49971"),
        ((NUMBER,), (Decimal(0),), "o"),
        ((EPOCH_MILLIS, INTEGER), (1767322000123, 5), "2026-01-02T02:46:40.123000Z_p50005"),
        ((EPOCH_SECONDS, TEXT), (1767322000, "r1"), "2026-01-02T02:46:40.000000Z_7231"),
        (
            (TIMESTAMP, TEXT),
            (datetime(2026, 1, 2, tzinfo=UTC), "r1"),
            "2026-01-02T00:00:00.000000Z_7231",
        ),
    ],
)
def test_tokens_a_pipe_has_stored_keep_their_form_and_values(parts, values, token):
    """Sesam stores the last ``_updated`` as the pipe's since: a release that wrote
    another form would make every stored since decode to other values (or be refused)."""
    positions = Positions(parts)
    assert positions.encode(values) == token
    assert positions.decode(token) == values


CHECKED = "2026-01-02T03:04:05.000000Z"


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-02T03:04:05.00000xZ",  # a letter for the last digit
        "2026-01-02T03:04:05.x00000Z",  # ... for the first
        "2026-01-02T03:04:05.000000z",
        "2026-01-02T03:04:05.000000Zx",  # something after the zone
        "2026-01-02T03:04:05.000000ZZ",
        "2026-01-02T03:04:05.00000٠Z",  # an Arabic-Indic digit
    ],
)
def test_a_record_time_with_a_bad_digit_in_a_second_already_read_is_refused(value):
    """The records of a page mostly share their second, and the feed checks a time of a
    second it has read before by its digits alone: a bad one is still refused (the feed's
    502 names the record), never handed to Sesam as a token."""
    positions = Positions((TIMESTAMP, TEXT))
    assert positions.encode((CHECKED, "r1")) == CHECKED + "_7231"
    with pytest.raises(ValueError):
        positions.encode((value, "r2"))
    with pytest.raises(ValueError):
        Positions((TIMESTAMP, INTEGER)).encode((value, 2))


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("2026-01-02T03:04:05.12345Z", "2026-01-02T03:04:05.123450Z"),
        ("2026-01-02T03:04:05.1Z", "2026-01-02T03:04:05.100000Z"),
        ("2026-01-02T03:04:05.1234567Z", "2026-01-02T03:04:05.123456Z"),
        ("2026-01-02T03:04:05.000000+00:00", "2026-01-02T03:04:05.000000Z"),
        ("2026-01-02T03:04:05,123456Z", "2026-01-02T03:04:05.123456Z"),  # ISO's comma
        ("2026-01-02 03:04:05.123456Z", "2026-01-02T03:04:05.123456Z"),
        ("2026-01-02T04:04:05.1+01:00", "2026-01-02T03:04:05.100000Z"),  # 27 long, as ours
    ],
)
def test_a_record_time_in_another_form_in_a_second_already_read_is_normalised(value, token):
    """Five fractional digits sort after six as text ("…05.12345Z" > "…05.123456Z"), a
    space before a "T": the token is always the fixed-width form, whatever was read before."""
    positions = Positions((TIMESTAMP, TEXT))
    positions.encode((CHECKED, "r1"))
    assert positions.encode((value, "r2")) == token + "_7232"
    assert Positions((TIMESTAMP, INTEGER)).encode((value, 2)) == token + "_p50002"


@pytest.mark.parametrize("value", ["1767322000", "1767322000.5", True, False, None, [1]])
@pytest.mark.parametrize("part", [EPOCH_SECONDS, EPOCH_MILLIS])
def test_epoch_positions_given_as_strings_or_booleans_are_refused(part, value):
    with pytest.raises(ValueError, match="is not a number of epoch (seconds|milliseconds)$"):
        Positions((part,)).encode((value,))


def test_epoch_seconds_keep_their_fraction_in_the_token():
    token = Positions((EPOCH_SECONDS,)).encode((1767322000.5,))
    assert token == "2026-01-02T02:46:40.500000Z"


@pytest.mark.parametrize("value", ["1", "1.5", True, None])
def test_a_number_part_refuses_strings_and_booleans(value):
    with pytest.raises(ValueError, match="is not a number$"):
        Positions((NUMBER,)).encode((value,))


def test_a_float_is_the_number_it_prints_as():
    """1.1 is 1.100000000000000088817841970012523233890533447265625 in binary: the token
    is that of 1.1, as the upstream wrote it."""
    positions = Positions((NUMBER,))
    assert positions.encode((1.1,)) == positions.encode((Decimal("1.1"),)) == "p500011"


@pytest.mark.parametrize(
    ("parts", "since", "says"),
    [
        ((TEXT, INTEGER), "._p50001", "a text part must be the hex of a non-empty UTF-8 string"),
        ((TEXT, INTEGER), "6162", "a text part that is not the last must end with '.'"),
        ((NUMBER, TEXT), "p5000", "a number part must end with '.'"),
        ((INTEGER,), "x", "an integer part must start with p, n or o"),
        ((INTEGER,), "p500١1", "an integer part must hold digits"),  # int() would take it
        ((INTEGER,), "p50001x", "an integer part must hold digits"),
        ((INTEGER,), "n49999~", "an integer part is not in its shortest form"),  # -0
        ((INTEGER,), "p50010", "an integer part is not in its shortest form"),
        ((INTEGER, TEXT), "n49998_61", "an integer part must end with '~'"),
        ((TIMESTAMP,), "2026-01-02T03:04:05.000000", "a timestamp must be"),
        ((TIMESTAMP,), "2026-01-02T03:04:05.0000000", "a timestamp must be"),
    ],
)
def test_a_refused_since_says_what_is_wrong_with_which_part(parts, since, says):
    with pytest.raises(ValueError) as refused:
        Positions(parts).decode(since)
    assert says in str(refused.value)


class NoOffset(tzinfo):
    """A time zone that gives no offset: ``datetime`` calls the time naive."""

    def utcoffset(self, dt):
        return None

    def dst(self, dt):
        return None


def test_a_time_whose_zone_gives_no_offset_is_refused_not_taken_as_local():
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=NoOffset())
    with pytest.raises(ValueError, match="has no time zone"):
        Positions((TIMESTAMP,)).encode((moment,))


def test_a_position_of_no_parts_is_refused_when_the_adapter_is_built():
    with pytest.raises(ValueError, match="at least one part"):
        Positions(())


def test_a_position_of_too_many_or_too_few_values_names_both_counts():
    with pytest.raises(ValueError, match="a position has 2 parts, not 3"):
        Positions((TIMESTAMP, TEXT)).encode((CHECKED, "a", "b"))


@pytest.mark.parametrize(
    "since",
    [
        "2026-01-02T03:04:05,000000Z",  # a comma before the fraction: ISO, not canonical
        "2026-01-02 03:04:05.000000Z",
        "2026-01-02T03:04:05.000000+00:00",
        "2026-01-02T03:04:05.00000Z",
        "2026-01-02T03:04:05.000000Z-7231",  # a wrong separator between the parts
        "2026-01-02T03:04:05.000000Z.7231",
        "2026-01-02T03:04:05.000000Z7231",
        "2026-01-02T03:04:05.000000Z_7231_",
        "2026-01-02T03:04:05.000000Z_7231_7232",
    ],
)
def test_a_since_that_is_not_in_the_feeds_own_form_is_refused(since):
    with pytest.raises(ValueError):
        Positions((TIMESTAMP, TEXT)).decode(since)


@pytest.mark.parametrize("text", ["1e-5000", "-1e-5000", "9.5e4999", "-9.5e4999"])
def test_the_smallest_and_largest_exponents_are_positions(text):
    positions = Positions((NUMBER,))
    assert positions.decode(positions.encode((Decimal(text),))) == (Decimal(text),)


@pytest.mark.parametrize("text", ["1e-5001", "-1e-5001", "1e5000", "-1e5000"])
def test_a_number_beyond_the_exponents_is_refused_not_misplaced(text):
    with pytest.raises(ValueError, match="too large or too small for a position"):
        Positions((NUMBER,)).encode((Decimal(text),))


def test_an_integer_part_after_a_time_refuses_a_string():
    """(TIMESTAMP, INTEGER) shares no fast path with (TIMESTAMP, TEXT): "7" is not 7."""
    with pytest.raises(ValueError, match="is not an integer"):
        Positions((TIMESTAMP, INTEGER)).encode((CHECKED, "7"))


@pytest.mark.parametrize("value", [10**20, -(10**20), 1e300])
def test_an_epoch_beyond_the_calendar_is_refused_naming_the_overflow(value):
    with pytest.raises(ValueError, match="is out of range: OverflowError"):
        Positions((EPOCH_SECONDS, TEXT)).encode((value, "r1"))


class Strict(Part):
    """A fork's own part whose decode lets decimal's error through."""

    name = "amount"

    def encode(self, value, last):
        return str(value)

    def decode(self, text, start, last):
        return Decimal(text[start:]).quantize(Decimal("1e-999999")), len(text)


def test_a_forks_part_that_raises_an_arithmetic_error_on_a_since_is_a_value_error():
    """The feed turns a ValueError into Sesam's 400; decimal's InvalidOperation would be
    a 500."""
    with pytest.raises(ValueError, match="^an amount part is malformed: InvalidOperation$"):
        Positions((Strict(),)).decode("12345")
