"""JSON text in and out, fast: orjson where its answer is the standard library's, the
standard library where it is not.

The feed parses every upstream page and encodes every entity, and the sink parses every
batch; with the standard library that was most of their CPU. orjson does the same work
in a fraction of the time, and where the two would answer differently the standard
library answers, so a fork sees the values and the errors it always saw:

- ``loads``: orjson holds about 12 times the text's size in memory while it parses (the
  standard library about once), so text over ``ORJSON_MAX_BYTES`` (1 MiB; an upstream
  page or a sink batch is usually far smaller, and an 8 MiB sink body would need some
  100 MB) is parsed by the standard library. Text orjson refuses (a byte order mark,
  UTF-16 or UTF-32, a lone surrogate escape, a number too large for a float, ``NaN``,
  nesting deeper than 1024) is parsed again by the standard library, which then accepts
  it or refuses it with its own message. orjson would turn an integer beyond 64 bits into
  a float, so text holding a number of 20 digits or more (or a minus sign and 19) goes to
  the standard library without trying orjson: a run of digits right after ``:``, ``,``,
  ``[`` or white space (inside a string that is rare, and costs only the slower parse).
  The cyclic garbage collector is paused while orjson parses (parsed JSON holds no cycle).
- ``dumps``: what orjson cannot encode as the standard library would (integers beyond
  64 bits, keys that are not strings, lone surrogates, ``datetime``, dataclasses and
  subclasses of the JSON types) is encoded by the standard library.

Differences that remain (``docs/benchmarks.md``): a float below 1e-4 in magnitude is
written in another form of the same number (``0.00001`` and ``1e-7`` where the standard
library writes ``1e-05`` and ``1e-07``); a NaN or an infinity that an adapter itself
puts into an entity is written as ``null`` (an upstream page never holds one: the feed's
parse refuses them); ``uuid.UUID`` and ``enum.Enum`` values an adapter puts into an
entity are written as their string or value, where the standard library refused them;
and text nested between the standard library's limit (about 990 levels, less on a deep
stack) and orjson's 1024 is parsed.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

import orjson

# Encode these with the standard library, as the framework always did.
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
# Digits become "1", a minus sign "2", what may come before a number "S", any other
# byte "0": a long number is then "S" and a run of "1"s (a string holds one rarely).
_NUMBER_MARKS = bytes(
    0x31 if 0x30 <= b <= 0x39 else 0x32 if b == 0x2D else 0x53 if b in b":,[ \t\r\n" else 0x30
    for b in range(256)
)
ORJSON_MAX_BYTES = 1 << 20
_BIG_POSITIVE = b"1" * 20  # 2**64 - 1 has 20 digits
_BIG_NEGATIVE = b"2" + b"1" * 19  # -(2**63) has 19
_BIG_AFTER_SEPARATOR = (b"S" + _BIG_POSITIVE, b"S" + _BIG_NEGATIVE)


def _may_hold_big_integer(data: bytes) -> bool:
    marks = data.translate(_NUMBER_MARKS)
    return (
        _BIG_AFTER_SEPARATOR[0] in marks
        or _BIG_AFTER_SEPARATOR[1] in marks
        or marks.startswith((_BIG_POSITIVE, _BIG_NEGATIVE))  # a number alone
    )


def loads(
    data: bytes,
    parse_constant: Callable[[str], Any],
    parse_float: Callable[[str], Any] | None = None,
) -> Any:
    """The value of JSON text, exactly as ``json.loads(data, parse_constant=...,
    parse_float=...)`` answers it, errors included. ``parse_float`` must answer
    ``float(text)`` or raise (a check, such as refusing an overflow to infinity): orjson's
    own floats are ``float(text)`` and always finite, so it is called only for text
    orjson refused."""
    if len(data) <= ORJSON_MAX_BYTES and not _may_hold_big_integer(data):
        # Parsed JSON holds no cycle, so the cyclic collector's passes over a page's new
        # objects while it is parsed find nothing: pause it (the thread that paused it
        # turns it on again, so it is never left off).
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard library's verdict, and its words
        finally:
            if collecting:
                gc.enable()
    return json.loads(data, parse_constant=parse_constant, parse_float=parse_float)


def dumps(value: Any) -> bytes:
    """UTF-8 JSON text without spaces, as ``json.dumps(value, ensure_ascii=False,
    allow_nan=False, separators=(",", ":"))`` writes it (see the module's differences)."""
    try:
        return orjson.dumps(value, option=_PASSTHROUGH)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8")
