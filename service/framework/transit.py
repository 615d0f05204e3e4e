"""Sesam's typed strings as plain JSON values, for writing entities to an upstream.

Sesam marks some values with a tag: ``"~t2015-12-31"``, ``"~f123.45"``, ... An upstream
that is not Sesam wants the value, not the tag. The rule, applied to every string in an
entity, at any depth (object keys are left alone):

====================  ==================================  =============================
tagged string         written upstream as                 example
====================  ==================================  =============================
``~t`` date           the date, ``YYYY-MM-DD``            ``"~t2015-12-31"`` -> ``"2015-12-31"``
``~t`` datetime       the ISO text as given, ``Z`` kept   ``"~t2015-01-02T03:04:05.1Z"`` ->
                      (all fraction digits kept)          ``"2015-01-02T03:04:05.1Z"``
``~f`` decimal        a JSON number: an integer when the  ``"~f10.00"`` -> ``10``,
                      value is whole, else the nearest    ``"~f123.45"`` -> ``123.45``
                      double
``~r`` URI            the URI                             ``"~rhttp://x/y"`` -> ``"http://x/y"``
``~:`` namespaced id  the text after ``~:``               ``"~:crm:42"`` -> ``"crm:42"``
``~u`` UUID           the UUID text                       ``"~u6ba7...c8"`` -> ``"6ba7...c8"``
``~b`` bytes          the base64 text                     ``"~baGk="`` -> ``"aGk="``
====================  ==================================  =============================

A string that starts with ``~`` but is not a valid value of its tag (``"~tyesterday"``,
``"~fNaN"``, ``"~x"``, a decimal too large or too small for a double) stays exactly as
it is: Sesam has no escape for a plain string starting with ``~``, so guessing would
corrupt real text. NaN and Infinity are never produced.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from decimal import Decimal
from decimal import InvalidOperation
from typing import Any

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Whole decimals become Python ints only up to this many digits; JSON readers on the other
# side rarely take more, and int() of "1e999999999" would never finish.
_MAX_INT_DIGITS = 300

_MISSING = object()


def _date(text: str) -> Any:
    if _DATE.fullmatch(text) is None:
        return _MISSING
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return _MISSING
    return text


def _datetime(text: str) -> Any:
    match = _DATETIME.fullmatch(text)
    if match is None:
        return _date(text)
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return _MISSING
    return text


def _decimal(text: str) -> Any:
    if _DECIMAL.fullmatch(text) is None:
        return _MISSING
    try:
        value = Decimal(text)
    except InvalidOperation:
        return _MISSING
    if value == value.to_integral_value() and value.adjusted() < _MAX_INT_DIGITS:
        return int(value)
    number = float(value)
    if not math.isfinite(number) or (number == 0.0 and value != 0):
        return _MISSING  # outside what a double holds: keep the text, lose nothing
    return number


def _uri(text: str) -> Any:
    return text if _URI.fullmatch(text) else _MISSING


def _namespaced(text: str) -> Any:
    return text if text else _MISSING


def _uuid(text: str) -> Any:
    return text if _UUID.fullmatch(text) else _MISSING


def _bytes(text: str) -> Any:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _MISSING
    return text


_TAGS = {"t": _datetime, "f": _decimal, "r": _uri, ":": _namespaced, "u": _uuid, "b": _bytes}


def plain_string(text: str) -> Any:
    """One string: its plain value when it is a valid typed string, else itself."""
    if len(text) < 2 or text[0] != "~":
        return text
    convert = _TAGS.get(text[1])
    if convert is None:
        return text
    value = convert(text[2:])
    return text if value is _MISSING else value


def plain(value: Any) -> Any:
    """A JSON value with every typed string replaced by its plain value, at any depth."""
    if isinstance(value, str):
        return plain_string(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
