"""The paging blocks against a fake upstream whose records change between pages.

A changed record moves to the end of the (time, id) order, as on a real upstream; a
deleted one leaves the live list. Whatever changes, no block may lose a record: every
record alive at the start and never deleted is delivered, in ascending position order.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urlsplit

import pytest

from service.framework.paging import CursorPaging
from service.framework.paging import LoopGuard
from service.framework.paging import NextUrlPaging
from service.framework.paging import OffsetPaging
from service.framework.paging import PageNumberPaging
from service.framework.upstream import UpstreamError

BASE = "http://up.example/things"


class FakeResponse:
    def __init__(self, url: str, links: dict[str, dict[str, str]]) -> None:
        self.url = url
        self.links = links


class FakeUpstream:
    """An in-memory list API in four paging styles, with ``updated_since`` (inclusive).

    ``changes`` maps a request number (1-based) to a callback run before that request is
    served: that is how records change "between pages".
    """

    def __init__(
        self, style: str, times: list[int], *, cursor: str = "keyset", cap: int | None = None
    ) -> None:
        self.style = style
        self.cursor = cursor
        self.cap = cap  # the most records a page holds, whatever was asked (silently)
        self.clock = max(times)
        self.rows = {
            f"r{n:03d}": {"id": f"r{n:03d}", "t": t, "deleted": False} for n, t in enumerate(times)
        }
        self.changes: dict[int, Any] = {}
        self.requests: list[dict[str, Any]] = []

    # what the tests do to it
    def change(self, record_id: str) -> None:
        self.clock += 1
        self.rows[record_id] = {**self.rows[record_id], "t": self.clock, "name": "changed"}

    def delete(self, record_id: str) -> None:
        self.clock += 1
        self.rows[record_id] = {**self.rows[record_id], "t": self.clock, "deleted": True}

    def live(self) -> set[str]:
        return {key for key, row in self.rows.items() if not row["deleted"]}

    # the client's interface
    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_json_response(url, params)[0]

    def get_json_response(self, url: str, params: dict[str, Any] | None = None) -> Any:
        parts = urlsplit(url)
        query = {**dict(parse_qsl(parts.query)), **{k: str(v) for k, v in (params or {}).items()}}
        self.requests.append(query)
        change = self.changes.get(len(self.requests))
        if change is not None:
            change()
        since = query.get("updated_since")
        listing = sorted(
            (
                row
                for row in self.rows.values()
                if (since is None and not row["deleted"]) or (since and row["t"] >= int(since))
            ),
            key=lambda row: (row["t"], row["id"]),
        )
        listing = [dict(row) for row in listing]
        serve = {"cursor": self._cursor, "offset": self._offset, "pages": self._pages}
        return serve.get(self.style, self._next)(listing, query)

    def _cursor(self, listing, query):
        size = int(query["limit"])
        if "cursor" not in query:
            start = 0
        elif self.cursor == "keyset":
            t, _, key = query["cursor"].partition(":")
            start = sum(1 for row in listing if (row["t"], row["id"]) <= (int(t), key))
        else:
            start = int(query["cursor"])
        page = listing[start : start + size]
        more = start + size < len(listing)
        if not more:
            cursor = None
        elif self.cursor == "keyset":
            cursor = f"{page[-1]['t']}:{page[-1]['id']}"
        else:
            cursor = str(start + size)
        return {"data": page, "next_cursor": cursor}, FakeResponse(BASE, {})

    def _offset(self, listing, query):
        start, size = int(query["offset"]), min(int(query["limit"]), self.cap or 1000)
        return {"data": listing[start : start + size], "total": len(listing)}, FakeResponse(
            BASE, {}
        )

    def _pages(self, listing, query):
        page, size = int(query["page"]), min(int(query["per_page"]), self.cap or 1000)
        total_pages = -(-len(listing) // size)
        body = {"data": listing[(page - 1) * size : page * size], "total_pages": total_pages}
        return body, FakeResponse(BASE, {})

    def _next(self, listing, query):
        """Next links that carry a keyset cursor (``after=<t>:<id>``), as most do."""
        size = int(query["per_page"])
        start = 0
        if "after" in query:
            t, _, key = query["after"].partition(":")
            start = sum(1 for row in listing if (row["t"], row["id"]) <= (int(t), key))
        page = listing[start : start + size]
        following = None
        if start + size < len(listing):
            after = f"{page[-1]['t']}:{page[-1]['id']}"
            following = "/things?" + urlencode({**query, "after": after})
        body: dict[str, Any] = {"data": page}
        if self.style == "next-body":
            body["links"] = {"next": following}
            return body, FakeResponse(BASE, {})
        return body, FakeResponse(BASE, {"next": {"url": following}} if following else {})


def position(record):
    return record["t"], record["id"]


def since_params(anchor):
    return {"updated_since": anchor}


STYLES = ["cursor", "offset", "pages", "next-body", "next-link"]


def block(style: str, *, size: int = 3, keyset: bool = True, **extra):
    options: dict[str, Any] = {"position": position, **extra}
    if keyset:
        options["since_params"] = since_params
    if style == "cursor":
        return CursorPaging(**options), {"limit": size}
    if style == "offset":
        return OffsetPaging(size=size, total_key="total", **options), {}
    if style == "pages":
        return PageNumberPaging(size=size, **options), {}
    next_key = "links.next" if style == "next-body" else None
    return NextUrlPaging(next_key=next_key, **options), {"per_page": size}


def make(style: str, times: list[int], **kwargs) -> FakeUpstream:
    return FakeUpstream(style, times, **kwargs)


def run(paging, upstream, params, since=None):
    pages = list(paging.pages(upstream, BASE, params, since=since))
    delivered = [record for page in pages for record in page]
    positions = [position(record) for record in delivered]
    assert positions == sorted(set(positions)), "out of order or twice"
    return pages, delivered


# --- nothing changes: every block reads the whole list, in order -----------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("keyset", [True, False])
def test_every_record_once_in_order_when_nothing_changes(style, keyset):
    upstream = make(style, list(range(1, 11)))
    paging, params = block(style, keyset=keyset)
    pages, delivered = run(paging, upstream, params)
    assert [record["id"] for record in delivered] == sorted(upstream.rows)
    assert all(len(page) <= 3 for page in pages)
    # No request that brought nothing new, but for the shift checks of a filterless walk.
    probes = len(pages) - 1 if style in ("offset", "pages") and not keyset else 0
    assert len(upstream.requests) == len(pages) + probes


@pytest.mark.parametrize("style", STYLES)
def test_since_skips_what_was_delivered_and_asks_with_the_anchor(style):
    upstream = make(style, list(range(1, 11)))
    paging, params = block(style)
    _, delivered = run(paging, upstream, params, since=(4, "r003"))
    assert [record["id"] for record in delivered] == [f"r{n:03d}" for n in range(4, 10)]
    assert upstream.requests[0]["updated_since"] == "4"


def test_a_bare_anchor_includes_every_record_at_that_time():
    upstream = make("cursor", [1, 2, 2, 3])
    paging, params = block("cursor")
    _, delivered = run(paging, upstream, params, since=2)
    assert [record["id"] for record in delivered] == ["r001", "r002", "r003"]


# --- a record changes mid-run: it moves to the end, and nothing is lost -----------------------


@pytest.mark.parametrize("style", STYLES)
def test_a_record_changed_after_the_first_page_is_not_lost_with_re_anchoring(style):
    upstream = make(style, list(range(1, 11)))
    upstream.changes[2] = lambda: upstream.change("r000")  # already delivered: all shift left
    paging, params = block(style)
    _, delivered = run(paging, upstream, params)
    ids = [record["id"] for record in delivered]
    assert set(ids) == set(upstream.rows)
    assert ids[-1] == "r000"  # delivered again, at its new place


def test_re_anchoring_makes_even_an_offset_cursor_safe_outside_ties():
    """A cursor that is an offset in disguise loses the record that moved up a page; with
    ``since_params`` the block asks a fresh query after every page, so it cannot."""
    for keyset, lost in [(False, True), (True, False)]:
        upstream = make("cursor", list(range(1, 11)), cursor="offset")
        upstream.changes[2] = lambda u=upstream: u.change("r000")
        paging, params = block("cursor", keyset=keyset)
        _, delivered = run(paging, upstream, params)
        assert ("r003" not in {record["id"] for record in delivered}) is lost


@pytest.mark.parametrize("style", ["offset", "pages"])
def test_with_re_anchoring_a_change_costs_no_re_read(style):
    quiet = make(style, list(range(1, 11)))
    paging, params = block(style)
    run(paging, quiet, params)
    busy = make(style, list(range(1, 11)))
    busy.changes[2] = lambda: busy.change("r000")
    run(paging, busy, params)
    assert len(busy.requests) <= len(quiet.requests) + 1  # at most one page more: r000
    # Each page was a fresh first page of a query: no probe, no step, no re-read.
    assert all(request.get("page", "1") == "1" for request in busy.requests)
    assert all(request.get("offset", "0") == "0" for request in busy.requests)


@pytest.mark.parametrize("style", ["offset", "pages"])
def test_without_a_since_filter_the_walk_rereads_when_the_list_shifts(style):
    upstream = make(style, list(range(1, 11)))
    upstream.changes[2] = lambda: upstream.change("r000")
    paging, params = block(style, keyset=False)
    _, delivered = run(paging, upstream, params)
    assert {record["id"] for record in delivered} == set(upstream.rows)


@pytest.mark.parametrize("style", ["offset", "pages"])
def test_a_delete_between_pages_without_a_since_filter_loses_no_other_record(style):
    upstream = make(style, list(range(1, 11)))
    upstream.changes[2] = lambda: upstream.delete("r001")
    paging, params = block(style, keyset=False)
    _, delivered = run(paging, upstream, params)
    assert {record["id"] for record in delivered} >= upstream.live()


def test_the_fake_catches_a_naive_page_number_loop():
    """The control: the loop the blocks replace loses the record that moved up a page."""
    upstream = make("pages", list(range(1, 11)))
    upstream.changes[2] = lambda: upstream.change("r000")
    delivered, page = [], 1
    while True:
        body = upstream.get_json(BASE, {"page": page, "per_page": 3})
        delivered += [record["id"] for record in body["data"]]
        if page >= body["total_pages"]:
            break
        page += 1
    assert "r003" not in delivered  # lost: it moved from page 2 to page 1, already read


# --- an upstream that caps the page size without a word ----------------------------------------


@pytest.mark.parametrize("total_key", ["total", None])
@pytest.mark.parametrize("keyset", [True, False])
def test_an_offset_upstream_that_caps_the_page_size_is_read_whole(total_key, keyset):
    """Asked for 5 records a page, it answers 2: a short page is not the end of the list
    (taken for it, a full run would deliver 2 records and Sesam delete the other 9)."""
    upstream = make("offset", list(range(1, 12)), cap=2)
    options = {"since_params": since_params} if keyset else {}
    paging = OffsetPaging(position=position, size=5, total_key=total_key, **options)
    _, delivered = run(paging, upstream, {})
    assert [record["id"] for record in delivered] == sorted(upstream.rows)


@pytest.mark.parametrize("total_pages_key", ["total_pages", None])
def test_a_page_number_upstream_that_caps_the_page_size_fails_the_run_rather_than_skip(
    total_pages_key,
):
    """Its page 2 of 2-record pages is not the walk's page 2 of 5: the records between
    would be skipped. The run fails, saying what to set."""
    upstream = make("pages", list(range(1, 12)), cap=2)
    paging = PageNumberPaging(position=position, size=5, total_pages_key=total_pages_key)
    with pytest.raises(UpstreamError, match="caps the page size lower.*size to its maximum"):
        list(paging.pages(upstream, BASE, {}))


@pytest.mark.parametrize(
    ("style", "paging", "step", "asked"),
    [
        ("offset", OffsetPaging(position=position, size=3), "offset", ["0", "3", "6", "7"]),
        (
            "pages",
            PageNumberPaging(position=position, size=3, total_pages_key=None),
            "page",
            ["1", "2", "3", "4"],
        ),
    ],
)
def test_without_a_count_a_walk_ends_at_the_empty_page_after_a_short_last_one(
    style, paging, step, asked
):
    upstream = make(style, list(range(1, 8)))
    _, delivered = run(paging, upstream, {})
    assert [record["id"] for record in delivered] == sorted(upstream.rows)
    windows = [r for r in upstream.requests if r.get("limit", r.get("per_page")) == "3"]
    assert [request[step] for request in windows] == asked


# --- ties: many records share one time --------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_a_tie_wider_than_a_page_is_stepped_through_not_looped_on(style):
    upstream = make(style, [1] + [5] * 8 + [9])  # eight records at t=5, pages of 3
    paging, params = block(style)
    _, delivered = run(paging, upstream, params)
    assert [record["id"] for record in delivered] == sorted(upstream.rows)
    assert len(upstream.requests) < 20


@pytest.mark.parametrize("style", ["cursor", "offset", "pages"])
def test_a_change_inside_a_tie_walk_loses_nothing(style):
    upstream = make(style, [5] * 9 + [9])
    # The third request steps within the tie at t=5; the change shifts the tie left.
    upstream.changes[3] = lambda: upstream.change("r001")
    paging, params = block(style)
    _, delivered = run(paging, upstream, params)
    assert {record["id"] for record in delivered} == set(upstream.rows)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("keyset", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_random_changes_and_deletes_lose_nothing(style, keyset, seed):
    """The fake's cursors and next links are keyset ones: an offset in disguise is
    documented as unsafe within a tie (and everywhere without a since filter)."""
    chance = random.Random(seed)
    times = sorted(chance.choice([1, 2, 2, 3, 5, 5, 5, 8]) for _ in range(25))
    upstream = make(style, times)
    alive_at_start = upstream.live()
    touched: set[str] = set()
    for request in range(2, 40):
        if chance.random() < 0.3:
            victim = chance.choice(sorted(upstream.live()))
            touched.add(victim)
            if chance.random() < 0.8:
                upstream.changes[request] = lambda v=victim: upstream.change(v)
            else:
                upstream.changes[request] = lambda v=victim: upstream.delete(v)
    paging, params = block(style, size=4, keyset=keyset)
    _, delivered = run(paging, upstream, params)
    ids = {record["id"] for record in delivered}
    assert alive_at_start - touched <= ids
    last = position(delivered[-1])
    for record_id in upstream.live() - ids:  # not delivered: only if the next run will see it
        assert keyset and position(upstream.rows[record_id]) > last


def test_a_list_that_keeps_shifting_fails_the_run_instead_of_looping():
    upstream = make("pages", list(range(1, 30)))
    for request in range(2, 200):
        # A record appears before the ones read: the list shifts, and nothing is new.
        upstream.changes[request] = lambda n=request: upstream.rows.update(
            {f"a{n:03d}": {"id": f"a{n:03d}", "t": 0, "deleted": False}}
        )
    paging, params = block("pages", keyset=False, max_restarts=3)
    with pytest.raises(UpstreamError, match="kept shifting"):
        run(paging, upstream, params)


# --- answers the blocks refuse ------------------------------------------------------------------


def test_an_answer_without_the_list_is_an_upstream_error():
    paging, params = block("cursor")

    class Broken:
        def get_json(self, url, params=None):
            return {"items": []}

    with pytest.raises(UpstreamError, match="no list at 'data'"):
        list(paging.pages(Broken(), BASE, params))


def test_a_next_link_to_another_origin_is_not_followed():
    class Elsewhere:
        def get_json_response(self, url, params=None):
            links = {"next": {"url": "http://other.example/things?page=2"}}
            return {"data": [{"t": 1, "id": "a"}]}, FakeResponse(url, links)

    paging = NextUrlPaging(position=position)
    with pytest.raises(UpstreamError, match="another origin"):
        list(paging.pages(Elsewhere(), BASE, {}))


def test_a_top_level_list_is_read_with_records_none():
    class Bare:
        def get_json(self, url, params=None):
            return [{"t": 1, "id": "a"}] if params["page"] == 1 else []

    paging = PageNumberPaging(position=position, records=None, size=5, total_pages_key=None)
    assert list(paging.pages(Bare(), BASE)) == [[{"t": 1, "id": "a"}]]


class IntegerCodec:
    """Stands in for an adapter's ``positions``: raw text in, typed values out."""

    def encode(self, values):
        return "_".join(f"{int(value):08d}" for value in values)

    def decode(self, token):
        return tuple(int(part) for part in token.split("_"))


def test_raw_positions_are_compared_as_typed_values_through_the_codec():
    """``"17" < "9"`` as text: without the codec, record 17 would be taken as delivered."""
    records = [{"t": "9", "n": "1"}, {"t": "17", "n": "2"}]
    asked = []

    class Upstream:
        def get_json(self, url, params=None):
            asked.append(dict(params))
            since = params.get("updated_since", 0)
            return {"data": [r for r in records if int(r["t"]) >= since], "next_cursor": None}

    paging = CursorPaging(
        position=lambda record: (record["t"], record["n"]),
        since_params=lambda anchor: {"updated_since": anchor},
        codec=IntegerCodec(),
    )
    pages = list(paging.pages(Upstream(), BASE, {}, since=(9,)))
    assert pages == [records]
    assert asked == [{"updated_since": 9}]


# --- upstreams that loop: every block stops (issue 18) -------------------------------------------


class Looping:
    """Answers the same page, and the same cursor and next link, whatever is asked."""

    def __init__(self, records, cursor="c-1", link="/things?after=c-1"):
        self.records, self.cursor, self.link, self.asked = records, cursor, link, 0

    def get_json(self, url, params=None):
        return self.get_json_response(url, params)[0]

    def get_json_response(self, url, params=None):
        self.asked += 1
        if self.asked > 100:
            raise AssertionError("the walk went on: 100 requests for the same page")
        body = {"data": list(self.records), "next_cursor": self.cursor, "next": self.link}
        return body, FakeResponse(url, {})


@pytest.mark.parametrize("since_params", [None, lambda t: {"updated_since": t}])
def test_a_cursor_that_repeats_stops_the_walk_at_once(since_params):
    upstream = Looping([{"t": 1, "id": "a"}])
    paging = CursorPaging(position=position, since_params=since_params)
    with pytest.raises(UpstreamError, match="sent the cursor 'c-1' again after"):
        list(paging.pages(upstream, BASE, {}))
    # the cursor's page; with a filter, the query asked again from the new anchor too
    assert upstream.asked == (2 if since_params is None else 3)


def test_a_next_link_that_repeats_stops_the_walk():
    upstream = Looping([{"t": 1, "id": "a"}])
    paging = NextUrlPaging(position=position, next_key="next")
    with pytest.raises(UpstreamError, match="sent the next link .*after=c-1' again"):
        list(paging.pages(upstream, BASE, {}))
    assert upstream.asked == 2


@pytest.mark.parametrize("kind", ["offset", "pages"])
def test_a_window_walk_over_an_upstream_that_ignores_the_window_stops(kind):
    """The offset or page moves on, but the same records come back each time: the shift
    check takes it for a list that moves, and stops after ``max_restarts``."""
    upstream = Looping([{"t": 1, "id": "a"}, {"t": 2, "id": "b"}], cursor=None)
    if kind == "offset":
        paging = OffsetPaging(position=position, size=2, max_restarts=5)
    else:
        paging = PageNumberPaging(position=position, size=2, total_pages_key=None, max_restarts=5)
    with pytest.raises(UpstreamError, match="kept shifting while it was read"):
        list(paging.pages(upstream, BASE, {}))
    assert upstream.asked <= 3 * 7


def test_a_window_walk_whose_windows_bring_nothing_new_stops_at_the_idle_bound():
    """An upstream whose every window holds the records of the first again, shifted by
    nothing the probe can see: the walk stops on no progress, not after the whole list."""

    class Repeating:
        asked = 0

        def get_json(self, url, params=None):
            self.asked += 1
            assert self.asked < 100, "the walk went on"
            if params.get("limit") == 1:  # the shift probe: the record it expects
                return {"data": [{"t": 2, "id": "b"}]}
            return {"data": [{"t": 1, "id": "a"}, {"t": 2, "id": "b"}]}

    with pytest.raises(UpstreamError, match="3 pages in a row that bring nothing past"):
        list(OffsetPaging(position=position, size=2).pages(Repeating(), BASE, {}))


def test_a_fresh_cursor_with_the_same_page_each_time_stops_after_the_idle_bound():
    class NewCursorSamePage(Looping):
        def get_json_response(self, url, params=None):
            body, response = super().get_json_response(url, params)
            body["next_cursor"] = f"c-{self.asked}"
            return body, response

    upstream = NewCursorSamePage([{"t": 1, "id": "a"}])
    paging = CursorPaging(position=position, max_idle_pages=4)
    with pytest.raises(UpstreamError, match="4 pages in a row"):
        list(paging.pages(upstream, BASE, {}))
    assert upstream.asked == 5  # the first page, then four that brought nothing new


def test_empty_pages_that_are_not_the_last_count_as_no_progress():
    class Empty(Looping):
        def get_json_response(self, url, params=None):
            body, response = super().get_json_response(url, params)
            body["next_cursor"] = f"c-{self.asked}"
            return body, response

    with pytest.raises(UpstreamError, match="3 pages in a row"):
        list(CursorPaging(position=position).pages(Empty([]), BASE, {}))


def test_a_walk_through_a_wide_tie_behind_since_is_progress_not_a_loop():
    """A since inside a tie of many pages: every page is behind since (nothing fresh), yet
    each comes after the one before, so the walk goes on until it gets past since."""
    upstream = FakeUpstream("cursor", [5] * 40 + [6] * 3)
    paging, params = block("cursor", keyset=True)
    params["limit"] = 4
    pages = list(paging.pages(upstream, BASE, params, since=(5, "r035")))
    assert [r["id"] for page in pages for r in page] == [f"r{n:03d}" for n in range(36, 43)]


@pytest.mark.parametrize(("cursor", "kind"), [({"after": 3}, "dict"), (True, "bool")])
def test_a_cursor_that_is_not_a_string_or_a_number_is_refused_not_taken_for_the_end(cursor, kind):
    upstream = Looping([{"t": 1, "id": "a"}], cursor=cursor)
    with pytest.raises(UpstreamError, match=f"cursor at 'next_cursor' is a JSON {kind}"):
        list(CursorPaging(position=position).pages(upstream, BASE, {}))


def test_a_next_link_that_is_not_text_is_refused_not_taken_for_the_end():
    upstream = Looping([{"t": 1, "id": "a"}], link={"href": "/things?page=2"})
    with pytest.raises(UpstreamError, match="next link is a JSON dict, not a URL"):
        list(NextUrlPaging(position=position, next_key="next").pages(upstream, BASE, {}))


@pytest.mark.parametrize("end", [None, ""])
def test_a_null_or_empty_next_link_ends_the_walk(end):
    upstream = Looping([{"t": 1, "id": "a"}], link=end)
    pages = list(NextUrlPaging(position=position, next_key="next").pages(upstream, BASE, {}))
    assert pages == [[{"t": 1, "id": "a"}]]


# --- promises a fork relies on (issue 20) -----------------------------------------------------


class ProbesWrong:
    """A page-number upstream of nine records, pages of three, whose one-record probe
    before a page answers a record that was not the page before's last ``wrong`` times
    at each page, then the right one: the list "shifted" that often under each step."""

    def __init__(self, wrong: int) -> None:
        self.wrong = wrong
        self.rows = [{"id": f"r{n}", "t": n} for n in range(9)]
        self.probes: dict[int, int] = {}

    def get_json(self, url, params=None):
        size, page = int(params["per_page"]), int(params["page"])
        if size == 1:
            self.probes[page] = self.probes.get(page, 0) + 1
            if self.probes[page] <= self.wrong:
                return {"data": [{"id": "other", "t": -1}]}
        return {"data": self.rows[(page - 1) * size : page * size]}


def test_by_default_a_list_that_shifts_twenty_times_in_a_row_is_still_read():
    """``max_restarts``' default, 20: an upstream that is written to while it is read
    (a bulk load) gets that many fresh starts of a query before the run fails."""
    paging = PageNumberPaging(position=position, size=3, total_pages_key=None)
    pages = list(paging.pages(ProbesWrong(20), BASE, {}))
    assert [r["id"] for page in pages for r in page] == [f"r{n}" for n in range(9)]
    with pytest.raises(UpstreamError, match=r"kept shifting while it was read \(20 restarts"):
        list(paging.pages(ProbesWrong(21), BASE, {}))


def test_the_restart_limit_counts_restarts_in_a_row_and_each_new_page_resets_it():
    """Two shifts before each page, over three pages: six restarts in all, never more
    than two in a row, so a limit of two reads the whole list and a limit of one fails."""
    paging = PageNumberPaging(position=position, size=3, total_pages_key=None, max_restarts=2)
    pages = list(paging.pages(ProbesWrong(2), BASE, {}))
    assert [r["id"] for page in pages for r in page] == [f"r{n}" for n in range(9)]
    strict = PageNumberPaging(position=position, size=3, total_pages_key=None, max_restarts=1)
    with pytest.raises(UpstreamError, match=r"\(1 restarts in a row\)"):
        list(strict.pages(ProbesWrong(2), BASE, {}))


@pytest.mark.parametrize("style", STYLES)
def test_nothing_is_asked_after_the_page_the_upstream_calls_its_last(style):
    upstream = make(style, list(range(1, 8)))
    paging, params = block(style, keyset=False)
    pages, delivered = run(paging, upstream, params)
    assert len(delivered) == 7
    windows = [r for r in upstream.requests if "1" not in (r.get("per_page"), r.get("limit"))]
    assert len(windows) == 3  # 7 records, pages of 3 (and the shift checks' probes)


@pytest.mark.parametrize("style", STYLES)
def test_a_since_whose_last_page_holds_only_what_was_delivered_ends_with_one_request(style):
    """A run that resumes at the newest record: the upstream's one page (it calls it
    its last) holds only that record, already delivered: no entity, and no more asked."""
    upstream = make(style, [1, 2, 3])
    paging, params = block(style)
    pages, delivered = run(paging, upstream, params, since=(3, "r002"))
    assert delivered == [] and pages == []
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["updated_since"] == "3"


def test_a_next_link_under_a_missing_or_null_key_ends_the_walk():
    for body in ({"data": [{"t": 1, "id": "a"}]}, {"data": [{"t": 1, "id": "a"}], "links": None}):

        class Once:
            asked = 0

            def get_json_response(self, url, params=None, body=body):
                Once.asked += 1
                return body, FakeResponse(url, {})

        paging = NextUrlPaging(position=position, next_key="links.next")
        assert [r["id"] for page in paging.pages(Once(), BASE, {}) for r in page] == ["a"]
        assert Once.asked == 1


@pytest.mark.parametrize("block_class", [OffsetPaging, PageNumberPaging])
def test_a_page_size_of_one_reads_the_list_and_zero_is_refused_when_the_block_is_made(
    block_class,
):
    upstream = make("offset" if block_class is OffsetPaging else "pages", [1, 2, 3])
    paging = block_class(position=position, size=1)
    assert [r["id"] for page in paging.pages(upstream, BASE, {}) for r in page] == [
        "r000",
        "r001",
        "r002",
    ]
    with pytest.raises(ValueError, match="the page size must be at least 1"):
        block_class(position=position, size=0)


def test_by_default_a_window_walk_asks_for_pages_of_100():
    upstream = make("offset", list(range(1, 5)))
    paging = OffsetPaging(position=position)
    list(paging.pages(upstream, BASE, {}))
    assert upstream.requests[0] == {"offset": "0", "limit": "100"}


def test_inside_a_tie_the_walk_steps_through_its_query_and_re_anchors_only_past_it():
    """Eight records at t=5, pages of three: the query from anchor 5 is stepped through
    by its cursor (re-asking from the same anchor after each page would read the tie's
    first page again and again), to the query's last page."""
    upstream = make("cursor", [1] + [5] * 8 + [9])
    paging, params = block("cursor")
    _, delivered = run(paging, upstream, params)
    assert [r["id"] for r in delivered] == sorted(upstream.rows)
    asked = [(r.get("updated_since"), r.get("cursor")) for r in upstream.requests]
    assert asked == [(None, None), ("5", None), ("5", "5:r003"), ("5", "5:r006")]


def test_a_forks_star_import_gets_every_paging_block() -> None:
    """A fork may write ``from service.framework.paging import *``: each block it documents
    must come with it, and the import must not fail on a name the module does not have."""
    namespace: dict[str, Any] = {}
    exec("from service.framework.paging import *", namespace)
    blocks = ("CursorPaging", "LoopGuard", "MergedPaging", "NextUrlPaging", "OffsetPaging")
    assert {*blocks, "PageNumberPaging", "Paging"} <= namespace.keys()


def test_a_loop_guard_remembers_the_last_64_cursors():
    """A cursor that comes back within 64 steps is a loop, stopped at once; one that
    comes back later is left to the idle bound (pages that bring nothing new)."""
    guard = LoopGuard(BASE)
    for n in range(64):
        guard.step(f"c-{n}")
    with pytest.raises(UpstreamError, match=r"sent the cursor 'c-0' again after 0 pages"):
        guard.step("c-0")
    guard = LoopGuard(BASE)
    for n in range(65):
        guard.step(f"c-{n}")
    guard.step("c-0")


def test_by_default_a_loop_guard_stops_at_the_third_page_that_brings_nothing():
    guard = LoopGuard(BASE)
    guard.page(None)
    guard.page(None)
    with pytest.raises(
        UpstreamError,
        match=r"sent 3 pages in a row that bring nothing .* stops after 3 pages: GET http",
    ):
        guard.page(None)


def test_a_loop_guards_errors_count_the_pages_read():
    guard = LoopGuard(BASE)
    guard.page((1, "a"))
    guard.page((2, "b"))
    guard.step("c-2")
    with pytest.raises(UpstreamError, match=r"sent the cursor 'c-2' again after 2 pages"):
        guard.step("c-2")


def test_restarts_before_the_first_new_page_are_counted_from_zero_too():
    """A run resuming behind the first page (all of it delivered) whose list shifts
    twenty times before the next: twenty restarts are allowed, as anywhere else."""
    paging = PageNumberPaging(position=position, size=3, total_pages_key=None)
    pages = list(paging.pages(ProbesWrong(20), BASE, {}, since=(2, "r2")))
    assert [r["id"] for page in pages for r in page] == [f"r{n}" for n in range(3, 9)]


def test_an_answer_that_is_not_a_list_where_the_answer_is_the_list_is_an_upstream_error():
    class Wrapped:
        def get_json(self, url, params=None):
            return {"data": [{"t": 1, "id": "a"}]}

    paging = PageNumberPaging(position=position, records=None, size=5, total_pages_key=None)
    with pytest.raises(UpstreamError) as raised:
        list(paging.pages(Wrapped(), BASE))
    assert str(raised.value) == f"upstream list answer has no list: GET {BASE}"


def test_an_empty_cursor_ends_the_walk():
    upstream = Looping([{"t": 1, "id": "a"}], cursor="")
    assert list(CursorPaging(position=position).pages(upstream, BASE, {})) == [
        [{"t": 1, "id": "a"}]
    ]
    assert upstream.asked == 1


def test_an_empty_window_ends_the_walk_and_is_not_a_page_that_brought_nothing():
    """Two windows that repeat the first (nothing new: two idle pages of the three the
    guard allows), then an empty one: the list has ended, the run has not looped."""

    class RepeatsThenEnds:
        def get_json(self, url, params=None):
            if params["limit"] == 1:  # the shift probe: the record before the window
                return {"data": [{"t": 2, "id": "b"}]}
            if params["offset"] >= 6:
                return {"data": []}
            return {"data": [{"t": 1, "id": "a"}, {"t": 2, "id": "b"}]}

    pages = list(OffsetPaging(position=position, size=2).pages(RepeatsThenEnds(), BASE, {}))
    assert pages == [[{"t": 1, "id": "a"}, {"t": 2, "id": "b"}]]
