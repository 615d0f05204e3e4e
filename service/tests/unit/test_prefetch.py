"""The feed's one-page read-ahead: order, errors in their place, bounded, stoppable."""

from __future__ import annotations

import threading
import time

import pytest

from service.framework.feed import Prefetched
from service.framework.upstream import UpstreamError


def test_pages_arrive_in_order_and_end():
    assert list(Prefetched(iter([[1], [2], [3]]))) == [[1], [2], [3]]
    assert list(Prefetched(iter([]))) == []


def test_an_upstream_error_surfaces_after_the_pages_before_it():
    def pages():
        yield ["a"]
        yield ["b"]
        raise UpstreamError("upstream answered 503", status=503, url="http://x/people")

    got = []
    with pytest.raises(UpstreamError, match="503"):
        for page in Prefetched(pages()):
            got.append(page)
    assert got == [["a"], ["b"]]


def test_it_reads_one_page_ahead_of_the_page_in_hand():
    fetched = []

    def pages():
        for i in range(100):
            fetched.append(i)
            yield [i]

    prefetched = Prefetched(pages())
    assert next(prefetched) == [0]
    time.sleep(0.3)
    # the page in hand and the next, offered: the one after is not read before that one
    # is taken (the time waited only gives a wrong prefetch the chance to read more)
    assert len(fetched) <= 2
    prefetched.close()


def test_close_stops_the_source_and_runs_its_cleanup():
    closed = threading.Event()

    def pages():
        try:
            for i in range(10**6):
                yield [i]
        finally:
            closed.set()

    prefetched = Prefetched(pages())
    next(prefetched)
    prefetched.close()
    assert closed.wait(5), "the upstream pages were not closed"
    with pytest.raises(StopIteration):
        next(prefetched)
