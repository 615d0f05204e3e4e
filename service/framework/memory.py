"""One memory budget per worker, across feeds, sink and transform bodies.

What a request holds grows with what it reads, not with the number of requests: a feed
holds upstream pages (one being written, one read ahead), a sink or transform batch holds
its body. Each request keeps a reservation (a ``Ledger``) in its worker's ``MemoryBudget``,
sized by what it holds: its body, at ``BODY_COST`` times its size, and, for every upstream
answer it reads, an estimate of what that answer becomes once parsed (``estimate``), times
the answers it holds at once. A request whose reservation must grow beyond what is free
waits for room up to ``ADMISSION_WAIT_SECONDS``, then gets 503 with ``Retry-After``
(``MemoryBusy``), which Sesam retries; a feed that is already streaming breaks instead, by
the failure contract. A request that could never fit (more than the whole budget) fails
at once with a 502 naming the settings to change (``BeyondBudget``).

The budget also keeps a thread free: at most ``slots`` requests hold reservations at once
(``THREADS`` less one), and one more is answered 503 at once rather than kept waiting on
a thread, so ``/health`` is answered however many feeds, batches and trickling upstreams
there are.

When the worker falls idle after holding much, the allocator gives its free memory back to
the system (glibc's ``malloc_trim``), so the container's memory comes back after a load.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import gc
import logging
import threading
from collections.abc import Iterator

from service.framework.errors import BadGateway
from service.framework.errors import ServiceUnavailable
from service.framework.settings import BODY_COST

__all__ = ["BODY_COST", "BeyondBudget", "Ledger", "MemoryBudget", "MemoryBusy", "estimate"]

log = logging.getLogger(__name__)

ADMISSION_WAIT_SECONDS = 15.0  # a request waits this long for room before its 503
RETRY_AFTER_SECONDS = 5
FEED_ANSWERS_HELD = 3  # the page being written, the page read ahead, the one being read
FIRST_ANSWER_GUESS = 256 * 1024  # a feed's first reservation, before it has read a page
TRIM_AFTER_BYTES = 8 * 1024 * 1024  # give memory back when idle after holding this much
SLOTS_KEPT_FREE = 1  # a thread never taken by feeds and batches: /health gets it

_ledger: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar(
    "memory_ledger", default=None
)


class MemoryBusy(ServiceUnavailable):
    """No room in the worker's memory budget (or no free thread) for this request now."""


class BeyondBudget(BadGateway):
    """A request that could never fit: the upstream's answers are larger than the whole
    budget can hold (a 502: retrying will not help, a smaller page size will)."""


def estimate(data: bytes | bytearray | memoryview) -> int:
    """An upper bound of the memory a JSON text takes once parsed into Python objects.

    Strings cost about twice their text; every value and container costs its object and
    its slot in the container, and every value but the last in a container is followed by
    a ``,``, every key by a ``:``: 64 bytes for each of ``{ [ , :`` covers an empty object
    (64 bytes), a float (24 and a slot), a short string (about 50 and a slot) and a key's
    share of its dict. Counted with ``bytes.count``, so it costs a few microseconds for a
    page; a ``,`` inside a string counts too, which only makes the bound looser.
    """
    counted = data.count(b"{") + data.count(b"[") + data.count(b",") + data.count(b":")
    return 2 * len(data) + 64 * counted


class MemoryBudget:
    """The bytes the requests of one worker may hold at once, and the slots for them."""

    def __init__(self, capacity: int, slots: int, *, setting: str = "WORKER_MEMORY_BUDGET"):
        self.capacity = capacity
        self.slots = max(1, slots)
        self.setting = setting
        self.held = 0
        self.busy = 0
        self.peak_since_trim = 0
        self.feed_answer = FIRST_ANSWER_GUESS  # the last page estimate a feed saw
        self._room = threading.Condition()
        self._trim = _malloc_trim()

    def enter(
        self,
        what: str,
        *,
        base: int = 0,
        holds: int = 1,
        allowance: int = 0,
        learn: bool = False,
    ) -> Ledger:
        """A ledger for one request, holding a slot, its ``base`` (a body) and ``holds``
        answers of ``allowance`` bytes each: 503 at once when every slot is taken, after a
        wait when that does not fit. Reserved up front, so that a request rarely grows
        while it holds memory (two that each wait for the other's room would both wait in
        vain). ``Ledger.close()`` gives all back. ``learn``: a feed, whose answers tell the
        next feed what to reserve (``feed_answer``)."""
        with self._room:
            if self.busy >= self.slots:
                raise self.busy_error(
                    f"{self.busy} requests are being served (THREADS less {SLOTS_KEPT_FREE})"
                )
            self.busy += 1
        ledger = Ledger(self, what, base=base, holds=holds, learn=learn)
        ledger.largest = allowance
        try:
            ledger.need(base + holds * allowance)
        except BaseException:
            ledger.close()
            raise
        return ledger

    @contextlib.contextmanager
    def admit(
        self, what: str, *, base: int = 0, holds: int = 1, allowance: int = 0
    ) -> Iterator[Ledger]:
        """``enter``, with the ledger current in this context while the block runs."""
        ledger = self.enter(what, base=base, holds=holds, allowance=allowance)
        try:
            with using(ledger):
                yield ledger
        finally:
            ledger.close()

    def reserve(self, more: int, ledger: Ledger) -> None:
        """Take ``more`` bytes for ``ledger``, waiting for room; MemoryBusy if none came."""
        if ledger.reserved + more > self.capacity:
            raise BeyondBudget(
                f"{ledger.what} needs about {(ledger.reserved + more) >> 20} MiB, more than "
                f"this worker's whole memory budget ({self.setting}={self.capacity}): "
                f"{ledger.advice}"
            )
        with self._room:
            if not self._room.wait_for(
                lambda: self.held + more <= self.capacity, ADMISSION_WAIT_SECONDS
            ):
                raise self.busy_error(
                    f"{self.held} bytes of the {self.setting} of {self.capacity} are held "
                    f"by other requests, and {ledger.what} needs {more} more"
                )
            self.held += more
            self.peak_since_trim = max(self.peak_since_trim, self.held)

    def release(self, amount: int) -> None:
        with self._room:
            self.held -= amount
            self._room.notify_all()

    def leave(self) -> None:
        """A request's slot is free again (``Ledger.close``)."""
        with self._room:
            self.busy -= 1
            idle = self.busy == 0 and self.held == 0
            peak = self.peak_since_trim
            trim = idle and peak >= TRIM_AFTER_BYTES
            if trim:
                self.peak_since_trim = 0
        if trim:
            # What a broken request leaves is often a cycle (an exception, its traceback,
            # the frames holding its pages): an idle worker allocates nothing, so the
            # collector would not run by itself. Collect, then give the pages back.
            gc.collect()
            if self._trim is not None:
                self._trim(0)
            log.info("memory budget: idle after holding %d MiB: free memory given back", peak >> 20)

    def busy_error(self, why: str) -> MemoryBusy:
        log.warning("memory budget: answered 503: %s", why)
        return MemoryBusy(
            f"the connector is busy ({why}); retry",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class Ledger:
    """What one request holds in the budget: its ``base`` (a body) plus ``holds`` times
    the largest upstream answer it has read. It only grows while the request runs."""

    def __init__(
        self, budget: MemoryBudget, what: str, *, base: int, holds: int, learn: bool = False
    ) -> None:
        self.budget = budget
        self.learn = learn
        self.what = what
        self.base = base
        self.holds = holds
        self.largest = 0
        self.extra = 0
        self.reserved = 0
        self.closed = False
        self.advice = (
            "lower UPSTREAM_PAGE_SIZE (the upstream's pages are too large to hold), or "
            "raise the budget and the container's memory with it"
        )

    def need(self, total: int) -> None:
        """Hold at least ``total`` bytes, waiting for room (MemoryBusy if none comes)."""
        if total > self.reserved:
            self.budget.reserve(total - self.reserved, self)
            self.reserved = total

    def answer(self, size: int) -> None:
        """An upstream answer that will take ``size`` bytes once parsed (``estimate``)."""
        if self.learn:
            self.budget.feed_answer = max(size, FIRST_ANSWER_GUESS // 4)
        if size > self.largest:
            self.largest = size
            self.need(self.base + self.extra + self.holds * size)

    def add(self, size: int) -> None:
        """``size`` more bytes held to the request's end (an answer it builds)."""
        self.extra += size
        self.need(self.base + self.extra + self.holds * self.largest)

    def drop_base(self) -> None:
        """The body is no longer held: its share of the reservation goes back."""
        if self.base and not self.closed:
            freed = self.base
            self.base = 0
            self.reserved -= freed
            self.budget.release(freed)

    def close(self) -> None:
        """The request is over: its reservation and its slot go back (once)."""
        if self.closed:
            return
        self.closed = True
        if self.reserved:
            self.budget.release(self.reserved)
            self.reserved = 0
        self.budget.leave()


@contextlib.contextmanager
def using(ledger: Ledger) -> Iterator[Ledger]:
    """Upstream answers read in this block (in this context) count against ``ledger``."""
    token = _ledger.set(ledger)
    try:
        yield ledger
    finally:
        _ledger.reset(token)


def bind(ledger: Ledger) -> None:
    """Make ``ledger`` this context's for good: for a context made for one thread."""
    _ledger.set(ledger)


def current() -> Ledger | None:
    """The ledger of the request served in this context, if any."""
    return _ledger.get()


def charge_answer(size: int) -> None:
    """Count an upstream answer of ``size`` parsed bytes against the current request."""
    ledger = _ledger.get()
    if ledger is not None:
        ledger.answer(size)


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim
