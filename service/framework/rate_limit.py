"""Slowing down before the upstream refuses: a pacer for announced rate limits.

A ``429`` with ``Retry-After`` is handled by the client's retries already. Many upstreams
also say, on every answer, how much of their quota is left and when it resets; a
``RateLimitPacer`` reads that and spaces the next requests, so the quota lasts until the
reset instead of running out into 429s. Opt-in: ``UpstreamClient(..., pacer=RateLimitPacer())``.

Headers read (the first that is present wins, in this order):

- ``RateLimit: "default";r=50;t=30`` (IETF draft, structured) or
  ``RateLimit: limit=100, remaining=50, reset=30`` (its older form); with several policies,
  the one with the least left. ``RateLimit-Policy: "default";q=100;w=60`` gives the window
  when ``RateLimit`` has no reset.
- ``RateLimit-Remaining`` and ``RateLimit-Reset`` (IETF draft: seconds until the reset).
- ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the reset, or, for
  values that can only be a time, such as GitHub's, epoch seconds or milliseconds).

The rule: while more than ``reserve`` requests are left, no wait. From there on, the
requests that are left are spaced evenly over the time until the reset; with none left,
the next waits for the reset. Every wait is at most ``max_wait`` seconds: past it the
request goes anyway, and a 429 is the client's retries' to handle.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping

#: ``X-RateLimit-Reset`` values at or above this are epoch seconds (2001-09-09), not deltas.
EPOCH_SECONDS = 1_000_000_000
#: ... and at or above this, epoch milliseconds.
EPOCH_MILLIS = 1_000_000_000_000

_NUMBER = r"(\d+(?:\.\d+)?)"


class RateLimitPacer:
    """Thread-safe: the client's threads share one pacer, and each takes its own slot."""

    def __init__(
        self,
        *,
        reserve: int = 10,
        max_wait: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if reserve < 0 or max_wait < 0:
            raise ValueError("reserve and max_wait must not be negative")
        self.reserve = reserve
        self.max_wait = max_wait
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._remaining: float | None = None  # requests left, counting those sent since
        self._reset_at = 0.0  # on self._clock
        self._next_at = 0.0  # the earliest the next request may go

    def wait(self) -> float:
        """Before a request: sleep as long as the quota asks. Answers the seconds slept."""
        delay = self.delay()
        if delay > 0:
            self._sleep(delay)
        return delay

    def delay(self) -> float:
        """Take the next request's slot: how long it must wait (no sleep here)."""
        with self._lock:
            now = self._clock()
            if self._remaining is None or now >= self._reset_at:
                self._remaining = None  # nothing known, or a new window: go
                return 0.0
            left = self._remaining
            self._remaining -= 1
            if left > self.reserve:
                return 0.0
            if left <= 0:
                slot = self._reset_at
            else:
                slot = max(now, self._next_at)
                self._next_at = slot + (self._reset_at - now) / left
            return min(max(0.0, slot - now), self.max_wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        """After a response: what the upstream says about its quota, if anything."""
        announced = self.read(headers)
        if announced is None:
            return
        remaining, reset_in = announced
        with self._lock:
            self._remaining = remaining
            self._reset_at = self._clock() + reset_in

    def read(self, headers: Mapping[str, str]) -> tuple[float, float] | None:
        """(requests left, seconds until the reset) from the headers, or None."""
        combined = headers.get("RateLimit")
        if combined:
            found = _combined(combined, headers.get("RateLimit-Policy", ""))
            if found is not None:
                return found
        for prefix in ("RateLimit-", "X-RateLimit-"):
            remaining = _number(headers.get(prefix + "Remaining"))
            reset = _number(headers.get(prefix + "Reset"))
            if remaining is not None and reset is not None:
                return remaining, self._seconds_until(reset)
        return None

    def _seconds_until(self, reset: float) -> float:
        if reset >= EPOCH_MILLIS:
            reset = reset / 1000
        if reset >= EPOCH_SECONDS:
            return max(0.0, reset - self._wall_clock())
        return reset


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    match = re.fullmatch(_NUMBER, value.strip())
    return float(match.group(1)) if match else None


def _combined(value: str, policy: str) -> tuple[float, float] | None:
    """``RateLimit``: the item with the least left, its reset (or the policy's window)."""
    if "remaining=" in value:
        # The older form spreads one policy over comma-separated keys.
        remaining = re.search(rf"remaining={_NUMBER}", value)
        reset = re.search(rf"reset={_NUMBER}", value)
        if remaining is None or reset is None:
            return None
        return float(remaining.group(1)), float(reset.group(1))
    window = re.search(rf"(?:^|[;,\s])w={_NUMBER}", policy)
    found = []
    for item in value.split(","):
        remaining = re.search(rf"(?:^|[;\s])r={_NUMBER}", item)
        reset = re.search(rf"(?:^|[;\s])t={_NUMBER}", item) or window
        if remaining is not None and reset is not None:
            found.append((float(remaining.group(1)), float(reset.group(1))))
    return min(found, key=lambda item: (item[0], -item[1])) if found else None
