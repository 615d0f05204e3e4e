"""Typed decimals at the edges of what the decoder represents: the text stays rather than
a wrong number, and whole numbers become integers up to 300 digits, no further."""

from __future__ import annotations

import pytest

from service.framework.transit import plain_string


@pytest.mark.parametrize(
    "text",
    [
        "~f1e9999999999999999999999999",  # beyond any Decimal exponent
        "~f-1e9999999999999999999999999",
        "~f1e-9999999999999999999999999",
        "~f1e400",  # whole, beyond 300 digits, beyond a double
        "~f1e-400",  # a double would make it 0
        "~f-1e-400",
    ],
)
def test_a_decimal_the_decoder_cannot_represent_keeps_its_text(text):
    assert plain_string(text) == text


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("~f1e299", 300),
        ("~f9.99e299", 300),
        ("~f-1e299", 300),
        ("~f" + "9" * 300, 300),
        ("~f" + "9" * 299 + ".000", 299),
    ],
)
def test_whole_decimals_of_up_to_300_digits_become_integers(text, digits):
    value = plain_string(text)
    assert type(value) is int
    assert len(str(abs(value))) == digits


@pytest.mark.parametrize("text", ["~f1e300", "~f" + "9" * 301, "~f1.5e300"])
def test_whole_decimals_of_more_digits_become_the_nearest_double(text):
    value = plain_string(text)
    assert type(value) is float
    assert value == float(text[2:])


def test_zero_is_a_number_in_any_form():
    for text in ("~f0", "~f0.000", "~f-0"):
        assert plain_string(text) == 0 and type(plain_string(text)) is int
    for text in ("~f0e999999", "~f0e-999999"):  # not "too small for a double": zero
        assert plain_string(text) == 0


@pytest.mark.parametrize("text", ["~t20151231", "~t2015-W01-1", "~t2015-365"])
def test_dates_in_other_iso_forms_stay_as_they_are(text):
    """Sesam's dates are YYYY-MM-DD; Python reads more forms than that (basic, week and
    ordinal dates), which must not pass for Sesam's."""
    assert plain_string(text) == text
