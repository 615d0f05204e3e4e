"""After ``close()`` the read-ahead takes nothing more from its source: deterministic, it
waits for the source to be closed (a condition), then counts what was taken."""

from __future__ import annotations

import threading

import pytest

from service.framework.feed import Prefetched


def counting_source(taken, closed, size=1000):
    try:
        for i in range(size):
            taken.append(i)
            yield [i]
    finally:
        closed.set()


def test_close_takes_at_most_the_pages_ahead():
    taken, closed = [], threading.Event()
    prefetched = Prefetched(counting_source(taken, closed))
    assert next(prefetched) == [0]
    prefetched.close()
    assert closed.wait(30), "the source was never closed"
    assert len(taken) <= 3, f"{len(taken)} pages taken after close"
    with pytest.raises(StopIteration):
        next(prefetched)


def test_close_before_the_first_page_is_taken_stops_the_source():
    taken, closed = [], threading.Event()
    prefetched = Prefetched(counting_source(taken, closed))
    prefetched.close()
    assert closed.wait(30), "the source was never closed"
    assert len(taken) <= 2
    with pytest.raises(StopIteration):
        next(prefetched)


def test_a_source_that_ends_is_closed_and_ends_the_pages():
    taken, closed = [], threading.Event()
    assert list(Prefetched(counting_source(taken, closed, size=3))) == [[0], [1], [2]]
    assert closed.wait(30)


def test_an_error_ends_the_pages_for_good():
    def failing():
        yield ["a"]
        raise RuntimeError("upstream gone")

    prefetched = Prefetched(failing())
    assert next(prefetched) == ["a"]
    with pytest.raises(RuntimeError, match="upstream gone"):
        next(prefetched)
    with pytest.raises(StopIteration):
        next(prefetched)


class ClosableSource:
    """An adapter's pages as an object with close(), as a streaming HTTP body would be;
    the test holds it, so only an explicit close() can close it."""

    def __init__(self, size):
        self.pages = iter([[i] for i in range(size)])
        self.closed = threading.Event()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.pages)

    def close(self):
        self.closed.set()


def test_the_source_is_closed_explicitly_when_the_pages_stop():
    source = ClosableSource(1000)
    prefetched = Prefetched(source)
    next(prefetched)
    prefetched.close()
    assert source.closed.wait(30), "close() was not called on the source"


def test_the_source_is_closed_explicitly_when_it_ends():
    source = ClosableSource(2)
    assert list(Prefetched(source)) == [[0], [1]]
    assert source.closed.wait(30), "close() was not called on the source"


def test_the_end_stays_the_end():
    prefetched = Prefetched(iter([[1]]))
    assert list(prefetched) == [[1]]
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(prefetched)
