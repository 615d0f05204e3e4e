"""Typed positions: where a record sits in feed order, and the ``_updated`` token made from it.

An adapter says what its position is made of, once (``Adapter.position_parts``, for example
``(TIMESTAMP, TEXT)`` for a modification time and a string id), and returns the values from
``position(record)``. The framework encodes them into a token whose string order is the
tuple's order, so Sesam can page on it (``is_since_comparable``), and decodes a ``since``
back into typed values for the adapter's upstream filter.

Each part's encoding:

- ``TIMESTAMP``: ISO 8601 text of any precision with ``Z`` or an offset (or an aware
  ``datetime``), normalised to UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width;
  finer than a microsecond is cut). ``EPOCH_SECONDS`` and ``EPOCH_MILLIS`` take numbers
  and encode the same way; they decode back to whole numbers.
- ``INTEGER`` and ``NUMBER``: sign, a fixed-width exponent, then the digits (negative
  numbers in nines' complement), so that ``9`` sorts before ``17`` and ``-2`` before ``-1``.
- ``TEXT``: the hex of the UTF-8 bytes, which keeps code point order.

Parts are joined with ``_``; a variable-width part that is not the last ends with a mark
that sorts below every digit (or, for a negative number, above), so a shorter value sorts
first. The tokens that earlier versions issued, ``<updated_at>_<hex of the id>``, are
exactly the encoding of ``(TIMESTAMP, TEXT)``: a pipe's stored ``since`` stays valid.
"""

from __future__ import annotations

import abc
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from decimal import Decimal
from typing import Any

SEPARATOR = "_"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")
_EXPONENT_OFFSET = 5000  # exponents from -5000 to 4999, four digits


def part_named(name: str) -> str:
    """``a number part``, ``an integer part``: how a message names a part."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} part"


class Part(abc.ABC):
    """One typed part of a position: how its values become text, and back."""

    name: str

    @abc.abstractmethod
    def encode(self, value: Any, last: bool) -> str:
        """The value as order-keeping text; ValueError if it is not one of this type."""

    @abc.abstractmethod
    def decode(self, text: str, start: int, last: bool) -> tuple[Any, int]:
        """The value at ``text[start:]`` and where it ends; ValueError if malformed."""


def timestamp(value: str | datetime) -> datetime:
    """An aware UTC datetime from ISO 8601 text (any precision, ``Z`` or an offset)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.isascii():
        moment = datetime.fromisoformat(value)
    else:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone (Z or an offset)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise ValueError(f"{value!r} is outside the years 1 to 9999 in UTC") from None


def utc_text(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``: fixed width, so string order is time order."""
    moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


# "YYYY-MM-DDTHH:MM:SS." of the last canonical timestamp that parsed. The records of a
# page mostly share their second, often their whole time, and a value that shares it is a
# real time too if the rest is six ASCII digits and "Z": the feed's hot path then skips
# the parse. Any thread may replace it; every value it ever holds was checked.
_checked_second = ["1970-01-01T00:00:00."]


def _known_canonical(value: Any) -> bool:
    """``value`` is a canonical timestamp in a second that parsed before: exact, no parse."""
    return (
        value.__class__ is str
        and len(value) == 27
        and value.startswith(_checked_second[0])
        and value[26] == "Z"
        and value.isascii()  # O(1): a flag of the string
        and value[20:26].isdigit()
    )


class Timestamp(Part):
    name = "timestamp"
    width = 27

    def encode(self, value: Any, last: bool) -> str:
        if _known_canonical(value):
            return value
        if (
            isinstance(value, str)
            and len(value) == 27
            and value[4] == "-"
            and value[7] == "-"
            and value[10] == "T"
            and value[13] == ":"
            and value[16] == ":"
            and value[19] == "."
            and value[26] == "Z"
        ):
            timestamp(value)  # the canonical form already: check it is a real time
            _checked_second[0] = value[:20]
            return value
        return utc_text(timestamp(value))

    def decode(self, text: str, start: int, last: bool) -> tuple[Any, int]:
        end = start + self.width
        piece = text[start:end]
        if len(piece) != self.width or not (piece[10] == "T" and piece[26] == "Z"):
            raise ValueError("a timestamp must be YYYY-MM-DDTHH:MM:SS.ffffffZ")
        moment = timestamp(piece)
        if utc_text(moment) != piece:
            raise ValueError("a timestamp must be YYYY-MM-DDTHH:MM:SS.ffffffZ")
        return self.value(moment), end

    def value(self, moment: datetime) -> Any:
        return moment


class EpochSeconds(Timestamp):
    name = "epoch seconds"
    per_second = 1

    def encode(self, value: Any, last: bool) -> str:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ValueError(f"{value!r} is not a number of {self.name}")
        micros = int(Decimal(str(value)) * 1_000_000 / self.per_second)
        return utc_text(EPOCH + timedelta(microseconds=micros))

    def value(self, moment: datetime) -> Any:
        return (moment - EPOCH) // timedelta(seconds=1) * self.per_second + (
            (moment - EPOCH) % timedelta(seconds=1)
        ) // timedelta(microseconds=1_000_000 // self.per_second)


class EpochMillis(EpochSeconds):
    name = "epoch milliseconds"
    per_second = 1000


class Text(Part):
    """Code point order: the hex of the UTF-8 bytes."""

    name = "text"

    def encode(self, value: Any, last: bool) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{value!r} is not a non-empty string")
        encoded = value.encode("utf-8").hex()  # a lone surrogate raises UnicodeEncodeError
        return encoded if last else encoded + "."

    def decode(self, text: str, start: int, last: bool) -> tuple[Any, int]:
        end = len(text) if last else text.find(".", start)
        if end < 0:
            raise ValueError("a text part that is not the last must end with '.'")
        piece = text[start:end]
        if not piece or len(piece) % 2 or not _HEX.issuperset(piece):
            raise ValueError("a text part must be the hex of a non-empty UTF-8 string")
        try:
            value = bytes.fromhex(piece).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a text part must be the hex of a UTF-8 string") from None
        return value, end if last else end + 1


class Number(Part):
    """Any finite number: ``p``/``n`` (or ``o`` for zero), a four-digit exponent, the digits."""

    name = "number"

    def parse(self, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ValueError(f"{value!r} is not a {self.name}")
        number = Decimal(value) if isinstance(value, int) else Decimal(str(value))
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        return number

    def encode(self, value: Any, last: bool) -> str:
        number = self.parse(value)
        if number.is_zero():
            return "o"
        sign, digits, _ = number.as_tuple()
        text = "".join(map(str, digits)).rstrip("0")
        exponent = number.adjusted() + _EXPONENT_OFFSET
        if not 0 <= exponent < 10_000:
            raise ValueError(f"{value!r} is too large or too small for a position")
        if not sign:
            return f"p{exponent:04d}{text}" + ("" if last else ".")
        complement = "".join(str(9 - int(d)) for d in text)
        return f"n{9999 - exponent:04d}{complement}~"

    def decode(self, text: str, start: int, last: bool) -> tuple[Any, int]:
        kind = text[start : start + 1]
        if kind == "o":
            return self.value(Decimal(0)), start + 1
        if kind not in ("p", "n"):
            raise ValueError(f"{part_named(self.name)} must start with p, n or o")
        mark = "~" if kind == "n" else ("" if last else ".")
        end = (len(text) if last else -1) if not mark else text.find(mark, start)
        if end < 0:
            raise ValueError(f"{part_named(self.name)} must end with {mark!r}")
        exponent_text, digits = text[start + 1 : start + 5], text[start + 5 : end]
        if len(exponent_text) != 4 or not _DIGITS.issuperset(exponent_text + digits):
            raise ValueError(f"{part_named(self.name)} must hold digits")
        if not digits or digits[-1] == ("9" if kind == "n" else "0"):
            raise ValueError(f"{part_named(self.name)} is not in its shortest form")
        exponent = int(exponent_text)
        if kind == "n":
            exponent = 9999 - exponent
            digits = "".join(str(9 - int(d)) for d in digits)
        number = Decimal(f"{'-' if kind == 'n' else ''}{digits[0]}.{digits[1:] or '0'}")
        number = number.scaleb(exponent - _EXPONENT_OFFSET)
        return self.value(number), end + len(mark)

    def value(self, number: Decimal) -> Any:
        return number


class Integer(Number):
    name = "integer"

    def parse(self, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        return Decimal(value)

    def value(self, number: Decimal) -> Any:
        if number != number.to_integral_value():
            raise ValueError("an integer part holds a fraction")
        return int(number)


TIMESTAMP = Timestamp()
EPOCH_SECONDS = EpochSeconds()
EPOCH_MILLIS = EpochMillis()
TEXT = Text()
INTEGER = Integer()
NUMBER = Number()


class Positions:
    """The codec for one adapter's positions: encode a record's, decode a ``since``."""

    def __init__(self, parts: tuple[Part, ...]) -> None:
        if not parts:
            raise ValueError("a position has at least one part")
        self.parts = parts
        self.last = len(parts) - 1
        if tuple(type(p) for p in parts) == (Timestamp, Text):
            self.encode = self._encode_timestamp_text  # type: ignore[method-assign]

    def encode(self, values: tuple[Any, ...]) -> str:
        """The ``_updated`` token of a position; ValueError names what is wrong."""
        if len(values) != len(self.parts):
            raise ValueError(f"a position has {len(self.parts)} parts, not {len(values)}")
        try:
            return SEPARATOR.join(
                part.encode(value, index == self.last)
                for index, (part, value) in enumerate(zip(self.parts, values, strict=True))
            )
        except ArithmeticError as error:  # a time beyond the calendar, a number beyond Decimal
            raise ValueError(f"{values!r} is out of range: {type(error).__name__}") from None

    def _encode_timestamp_text(self, values: tuple[Any, ...]) -> str:
        """``encode`` for (TIMESTAMP, TEXT), the feed's hot path: a canonical timestamp in
        a second already checked and a plain string id are joined as they are; anything
        else takes ``encode``'s way (the same token, or the same error)."""
        try:
            moment, text = values
        except (TypeError, ValueError):
            return Positions.encode(self, values)
        if text.__class__ is str and text and _known_canonical(moment):
            # Text's encoding: a lone surrogate raises UnicodeEncodeError
            return moment + SEPARATOR + text.encode("utf-8").hex()
        return Positions.encode(self, values)

    def decode(self, token: str) -> tuple[Any, ...]:
        """The typed values of a token, or of its first parts (a ``since`` may stop after
        any whole part: a bare timestamp means "from that time on")."""
        values: list[Any] = []
        index = 0
        for number, part in enumerate(self.parts):
            try:
                value, index = part.decode(token, index, number == self.last)
            except ArithmeticError as error:  # decimal's InvalidOperation, an overflow
                raise ValueError(
                    f"{part_named(part.name)} is malformed: {type(error).__name__}"
                ) from None
            values.append(value)
            if index == len(token):
                return tuple(values)
            if token[index] != SEPARATOR or number == self.last:
                break
            index += 1
        raise ValueError("the text after a part is not a separator and another part")

    def describe(self) -> str:
        return ", ".join(part.name for part in self.parts)
