"""Secrets out of every text the connector shows: log lines, error answers, exceptions.

Every value that must not leave the process is registered here once: each setting declared
``secret=True`` (``load_settings`` registers them), what an upstream auth block derives
from one (basic auth's base64, a key as it goes in a query) and every access token it
fetches. ``mask`` replaces each, in the forms it travels in (as it is, percent-encoded,
JSON-escaped), with ``<hidden>``. The upstream is untrusted: a gateway's error may quote
the ``Authorization`` header back, so an upstream error's text is masked before an answer
or a log line carries it (``UpstreamError`` masks its own message), and the log's
formatter masks every line, tracebacks included (``MaskingFormatter``).

The registry is the process's: one connector per process. A secret shorter than
``MIN_SECRET_LENGTH`` could not be told from ordinary text, so settings refuse it.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
from urllib.parse import quote
from urllib.parse import quote_plus

HIDDEN = "<hidden>"
MIN_SECRET_LENGTH = 4
#: Access tokens fetched at run time are kept for masking while they may still be quoted
#: back: the last this many (a token lives minutes to hours, and is fetched again then).
RECENT_TOKENS = 16

_lock = threading.Lock()
_lasting: set[str] = set()
_recent: collections.deque[str] = collections.deque(maxlen=RECENT_TOKENS)
_pattern: re.Pattern[str] | None = None


def forms(value: str) -> set[str]:
    """The forms a secret travels in: as it is, percent-encoded (path and query style),
    and escaped inside a JSON string."""
    return {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}


def register(value: str, *, transient: bool = False) -> None:
    """Mask ``value`` (in all its ``forms``) from now on. ``transient``: a fetched token,
    kept among the ``RECENT_TOKENS`` last ones rather than for the process's life. A value
    shorter than ``MIN_SECRET_LENGTH`` is not masked (settings refuse such secrets)."""
    if len(value) < MIN_SECRET_LENGTH:
        return
    global _pattern
    with _lock:
        if transient:
            if value in _recent:
                return
            _recent.append(value)
        elif value in _lasting:
            return
        else:
            _lasting.add(value)
        every = set().union(*(forms(v) for v in (*_lasting, *_recent)))
        every = {v for v in every if len(v) >= MIN_SECRET_LENGTH}
        # Longest first: a secret that contains another is hidden whole.
        alternatives = sorted(every, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def registered() -> tuple[frozenset[str], tuple[str, ...]]:
    """What is registered now, for ``restore``: tests keep one test's secrets from
    masking the next one's text."""
    with _lock:
        return frozenset(_lasting), tuple(_recent)


def restore(saved: tuple[frozenset[str], tuple[str, ...]]) -> None:
    """Register exactly what ``registered()`` answered, and nothing else."""
    global _pattern
    with _lock:
        _lasting.clear()
        _recent.clear()
        _pattern = None
    lasting, recent = saved
    for value in lasting:
        register(value)
    for value in recent:
        register(value, transient=True)


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``<hidden>``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(HIDDEN, text)


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines, exceptions and stack traces included, hold no secret."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask(self.inner.format(record))


def mask_handlers(logger: logging.Logger) -> None:
    """Make every handler of ``logger`` mask its lines (gunicorn's own, for instance)."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, MaskingFormatter):
            handler.setFormatter(MaskingFormatter(handler.formatter))
