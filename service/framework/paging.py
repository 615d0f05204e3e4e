"""Paging through an upstream's list without losing records: ready blocks for ``pages()``.

A fork picks the block that matches how its upstream pages, instead of writing the loop:

| the upstream's list answers                          | block               |
| ---------------------------------------------------- | ------------------- |
| a cursor in the body (``"next_cursor": "..."``)       | ``CursorPaging``    |
| the next page's URL, in the body or a ``Link`` header | ``NextUrlPaging``   |
| ``offset`` and ``limit``                              | ``OffsetPaging``    |
| page numbers (``page``, ``per_page``, ``total_pages``) | ``PageNumberPaging`` |
| changes and deletions in two lists (each one of the above) | ``MergedPaging`` |

Each block is configured once (in the adapter's ``__init__``) and its ``pages(client, url,
params, since=since)`` is what the adapter's ``pages()`` returns: the records a page at a
time, in the upstream's order, each record once.

Why a loop is not enough: while a run pages through the list, records change. A changed
record moves to the end of the (time, id) order, and every record after its old place
moves up by one: a page-number or offset loop then skips the record that moved across the
page boundary it just passed, and it is never delivered. The blocks prevent that two ways:

- Keyset re-anchoring, when the upstream can filter on the position's first part (its
  modification time, inclusive: ``updated_since``, ``modified_since``, ``updated_at[gte]``).
  Pass ``since_params``. After each page the block asks again from the start of the list
  with the filter set to the last delivered record's time, and skips every record whose
  position is not after the last delivered one. A change then only moves a record later,
  where the block still finds it. When a whole page shares one time (a bulk import), the
  filter cannot move on; the block steps to the next page of the same query (below).
- Shift checks, for the steps within one query of ``OffsetPaging`` and
  ``PageNumberPaging`` (all of the list, when the upstream has no filter). Before a page
  is delivered, the block reads the one record just before it again (a page of one); if
  that record is no longer the previous page's last, the list shifted under the walk, and
  the block reads the query again from its start, skipping what it delivered. No loss,
  at the price of a one-record request per step and a re-read per shift; if the list
  keeps shifting (``max_restarts`` times in a row without progress), the run fails
  (``UpstreamError``), and Sesam tries again later.
- ``CursorPaging`` and ``NextUrlPaging`` trust the upstream's cursor for the steps within
  one query: an upstream whose cursor is a position (a keyset cursor, like the Records
  API's) loses nothing; one whose cursor or next link is an offset in disguise can lose a
  record within a tie wider than a page, or everywhere without ``since_params``.

What every block needs of the upstream: a list in a stable order that is the order of
``position`` (the feed checks it); for re-anchoring, a filter that is inclusive (for an
exclusive one, ``modified_after``, step the time back by one tick of the upstream's clock
in ``since_params``).

Where the blocks find things in an answer (``records``, ``cursor_key``, ``next_key``,
``total_key``, ``total_pages_key``): a dotted path (``"links.next"``), a key that holds
dots itself taken as it is when the answer has it (``"@odata.nextLink"``), a list of keys
taken literally (``["d", "__next"]``, ``["@odata.nextLink"]``), or a function of the answer
(``lambda body: body["paging"]["next"]``). See ``dig``.

Progress or stop: an upstream with a bug can send the same cursor or next link again, or
pages that bring nothing past what the walk has already seen (the same page again, empty
pages that are not the last); a walk would then read for ever. Every block fails the run
instead (``UpstreamError``): at once when a cursor or next link repeats one of the last
``LoopGuard.REMEMBERED``, and after ``max_idle_pages`` pages in a row without progress. A
hand-written loop over another kind of cursor uses ``LoopGuard`` itself.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

from service.framework.bounded import same_origin
from service.framework.upstream import UpstreamClient
from service.framework.upstream import UpstreamError

Record = dict[str, Any]
Position = tuple[Any, ...]
Page = tuple[list[Record], bool]  # a page's records, and whether it is the query's last
#: Where a value is in a JSON answer (``dig``): a dotted path, a list of literal keys, or a
#: function of the answer.
Where = str | Sequence[str] | Callable[[Any], Any]
WHERE_FIELDS = ("records", "cursor_key", "next_key", "total_key", "total_pages_key")

__all__ = [
    "CursorPaging",
    "LoopGuard",
    "MergedPaging",
    "NextUrlPaging",
    "OffsetPaging",
    "PageNumberPaging",
    "Paging",
]


class ListShifted(Exception):
    """The upstream's list moved under an offset or page-number walk: read it again."""


class LoopGuard:
    """Stops a paging walk that makes no progress, for the blocks and hand-written loops.

    ``step(cursor)`` before asking for the page a cursor (or next link, or page window)
    names: it fails when the cursor repeats one of the last ``REMEMBERED``, since asking
    again would bring the same answer, and the same cursor again. ``page(last)`` after
    each page, with the position of its last record (None for an empty page): it fails
    after ``max_idle`` pages in a row that bring nothing past the greatest position seen.
    """

    REMEMBERED = 64

    def __init__(self, url: str, max_idle: int = 3) -> None:
        self.url = url
        self.max_idle = max_idle
        self._recent: collections.deque[str] = collections.deque(maxlen=self.REMEMBERED)
        self._seen: Any = None
        self._idle = 0
        self.pages = 0

    def step(self, cursor: Any, what: str = "cursor") -> None:
        key = repr(cursor)
        if key in self._recent:
            raise UpstreamError(
                f"the upstream sent the {what} {cursor!r} again after {self.pages} pages: "
                f"following it would read the same pages for ever, so the run stops: "
                f"GET {self.url}",
                url=self.url,
            )
        self._recent.append(key)

    def page(self, last: Any) -> None:
        self.pages += 1
        if last is not None and (self._seen is None or last > self._seen):
            self._seen = last
            self._idle = 0
            return
        self._idle += 1
        if self._idle >= self.max_idle:
            raise UpstreamError(
                f"the upstream sent {self._idle} pages in a row that bring nothing past what "
                f"it sent before (empty, or records already seen): it loops, so the run "
                f"stops after {self.pages} pages: GET {self.url}",
                url=self.url,
            )


@dataclasses.dataclass(kw_only=True)
class Paging(abc.ABC):
    """What every block shares: positions, re-anchoring, where the records are.

    ``position``: the adapter's ``position(record)``, a tuple that orders the records
    as the upstream does; its first part is the anchor (with ``codec``, see below). ``since_params``: the filter that
    asks for records from an anchor on, inclusive (``lambda t: {"updated_since": t}``);
    None when the upstream has none. ``records``: where the list is in the answer
    (``"data"``, ``"result.items"``, ``["value"]``, a function: see ``dig``), None when the
    answer is the list.
    """

    position: Callable[[Record], Position]
    since_params: Callable[[Any], dict[str, Any]] | None = None
    records: Where | None = "data"
    max_restarts: int = 20
    #: Pages in a row that bring nothing past what the walk has seen before it fails.
    max_idle_pages: int = 3
    #: The adapter's ``positions`` codec (``encode``/``decode``), when ``position``
    #: returns raw values (ISO text of any precision, ids) rather than typed ones: each
    #: record's position is then normalised through it before it is compared or used as
    #: an anchor, so it compares like the ``since`` the framework decoded.
    codec: Any = None

    def __post_init__(self) -> None:
        for name in WHERE_FIELDS:
            if hasattr(self, name):
                check_where(getattr(self, name), name)

    def key(self, record: Record) -> Position:
        """The record's position as typed, comparable values."""
        values = self.position(record)
        if self.codec is not None:
            values = self.codec.decode(self.codec.encode(values))
        return values

    def pages(
        self,
        client: UpstreamClient,
        url: str,
        params: dict[str, Any] | None = None,
        *,
        since: Position | Any = None,
    ) -> Iterator[list[Record]]:
        """Every record after ``since`` (a position, or None for all), a page at a time.

        ``since`` is what the framework hands ``Adapter.pages``; a bare anchor (not a
        tuple) is taken as the one-part position ``(anchor,)``, which every record at that
        time comes after. ``params``: the request's own query parameters (page size,
        fields, filters).
        """
        if since is not None and not isinstance(since, tuple):
            since = (since,)
        base = dict(params or {})
        last = since
        anchor = since[0] if since is not None else None
        shifts = 0
        while True:
            query = dict(base)
            if self.since_params is not None and anchor is not None:
                query.update(self.since_params(anchor))
            walk = self.walk(client, url, query)
            moved_on = False
            try:
                for records, final in walk:
                    fresh = [r for r in records if last is None or self.key(r) > last]
                    if not fresh:
                        continue  # all delivered already (a tie): the query's next page
                    shifts = 0
                    last = self.key(fresh[-1])
                    yield fresh
                    if final:
                        break  # what changed since moved past ``last``: the next run's
                    if self.since_params is not None and last[0] != anchor:
                        anchor = last[0]  # ask again from the new anchor
                        moved_on = True
                        break
            except ListShifted:
                shifts += 1
                if shifts > self.max_restarts:
                    raise UpstreamError(
                        f"the upstream's list kept shifting while it was read "
                        f"({self.max_restarts} restarts in a row): GET {url}",
                        url=url,
                    ) from None
                continue
            finally:
                walk.close()
            if not moved_on:
                return

    def walk(self, client: UpstreamClient, url: str, params: dict[str, Any]) -> Iterator[Page]:
        """The pages of one query, in order, as the upstream's paging steps through it,
        each with whether the upstream says it is the last. May raise ``ListShifted``
        (then the query is asked again from its start). Fails a query that loops."""
        guard = LoopGuard(url, self.max_idle_pages)
        for records, final in self.steps(client, url, params, guard):
            guard.page(self.key(records[-1]) if records else None)
            yield records, final

    @abc.abstractmethod
    def steps(
        self, client: UpstreamClient, url: str, params: dict[str, Any], guard: LoopGuard
    ) -> Iterator[Page]:
        """``walk``'s pages as the upstream's paging gives them; ``guard.step`` before
        each request that follows a cursor, a link or a window."""

    def extract(self, body: Any, url: str) -> list[Record]:
        """The answer's list of records; an answer without one is the upstream's error."""
        found = dig(body, self.records)
        if not isinstance(found, list):
            where = f" at {self.records!r}" if self.records else ""
            raise UpstreamError(f"upstream list answer has no list{where}: GET {url}", url=url)
        return found


@dataclasses.dataclass(kw_only=True)
class CursorPaging(Paging):
    """A cursor in the answer (``cursor_key``: where, see ``dig``) that the next request sends
    as ``cursor_param``; no cursor (null, empty, missing) on the last page. The page size
    is the adapter's, in ``params``. The Records API: ``CursorPaging(position=...,
    since_params=lambda t: {"updated_since": t})`` with ``params={"limit": 1000}``."""

    cursor_key: Where = "next_cursor"
    cursor_param: str = "cursor"

    def steps(
        self, client: UpstreamClient, url: str, params: dict[str, Any], guard: LoopGuard
    ) -> Iterator[Page]:
        query = dict(params)
        while True:
            body = client.get_json(url, query)
            cursor = dig(body, self.cursor_key)
            if cursor is not None and (
                isinstance(cursor, bool) or not isinstance(cursor, str | int)
            ):
                raise UpstreamError(
                    f"the upstream's cursor at {self.cursor_key!r} is a JSON "
                    f"{type(cursor).__name__}, not a string or a number: GET {url}",
                    url=url,
                )
            final = cursor is None or cursor == ""
            yield self.extract(body, url), final
            if final:
                return
            guard.step(cursor)
            query = {**params, self.cursor_param: cursor}


@dataclasses.dataclass(kw_only=True)
class NextUrlPaging(Paging):
    """The next page's URL: at ``next_key`` in the answer (a dotted path, ``"links.next"``;
    OData's ``"@odata.nextLink"`` as it is; a list of literal keys; a function: see
    ``dig``), or, when ``next_key`` is None, in an RFC 8288 ``Link: <...>; rel="next"``
    header. The URL carries the query, so ``params`` go on the first request only. A
    relative URL is resolved against the request's; one that leads to another origin is
    refused (the credentials would go with it)."""

    next_key: Where | None = None

    def steps(
        self, client: UpstreamClient, url: str, params: dict[str, Any], guard: LoopGuard
    ) -> Iterator[Page]:
        target: str = url
        query: dict[str, Any] | None = params
        while True:
            body, response = client.get_json_response(target, query)
            if self.next_key is not None:
                link = dig(body, self.next_key)
            else:
                link = response.links.get("next", {}).get("url")
            if link is not None and not isinstance(link, str):
                raise UpstreamError(
                    f"the upstream's next link is a JSON {type(link).__name__}, not a URL: "
                    f"GET {target}",
                    url=target,
                )
            final = not link
            yield self.extract(body, target), final
            if final:
                return
            following = urljoin(target, link)
            if not same_origin(following, url):
                raise UpstreamError(
                    f"the upstream's next page is on another origin, not followed: GET {url}",
                    url=url,
                )
            guard.step(following, "next link")
            target, query = following, None


@dataclasses.dataclass(kw_only=True)
class _Windows(Paging):
    """Pages as windows of the list by index; each step is checked for a shift.

    A page with fewer records than asked is not taken for the last one: many upstreams
    cap the page size without a word, and ending there would lose the rest of the list
    (and on a full run Sesam would delete it). The walk ends at an empty page, or where
    the upstream's count says the list ends."""

    size: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 1:
            raise ValueError("the page size must be at least 1")

    @abc.abstractmethod
    def window(self, index: int, size: int) -> dict[str, Any]:
        """The query parameters of ``size`` records from ``index`` (0-based) on."""

    @abc.abstractmethod
    def is_last(self, body: Any, index: int, count: int) -> bool:
        """Whether the upstream says that the window from ``index``, which brought
        ``count`` records, is the last."""

    def steps(
        self, client: UpstreamClient, url: str, params: dict[str, Any], guard: LoopGuard
    ) -> Iterator[Page]:
        index = 0
        previous: Position | None = None  # the last record of the window before
        short = False  # the window before brought fewer records than asked
        while True:
            body = client.get_json(url, {**params, **self.window(index, self.size)})
            records = self.extract(body, url)
            if not records:
                return  # the end of the list
            if short:
                self.after_short(url, len(records))
            if previous is not None:
                probe = self.extract(
                    client.get_json(url, {**params, **self.window(index - 1, 1)}), url
                )
                if not probe or self.key(probe[0]) != previous:
                    raise ListShifted
            final = self.is_last(body, index, len(records))
            yield records, final
            if final:
                return
            previous = self.key(records[-1])
            short = len(records) < self.size
            index += self.advance(len(records))

    @abc.abstractmethod
    def advance(self, count: int) -> int:
        """How far the next window starts after one that brought ``count`` records."""

    def after_short(self, url: str, count: int) -> None:
        """A window brought ``count`` records after one that brought fewer than asked."""


@dataclasses.dataclass(kw_only=True)
class OffsetPaging(_Windows):
    """``offset`` and ``limit`` (names in ``offset_param``, ``limit_param``), ``size``
    records a page; the next offset is the last one plus the records it brought, so an
    upstream that caps ``limit`` lower is still read whole. Ends at an empty page, or when
    the answer's ``total_key`` (where the count is, if the upstream gives one: see ``dig``)
    says so (without it, the walk's last request is one that finds the list's end)."""

    offset_param: str = "offset"
    limit_param: str = "limit"
    total_key: Where | None = None

    def window(self, index: int, size: int) -> dict[str, Any]:
        return {self.offset_param: index, self.limit_param: size}

    def is_last(self, body: Any, index: int, count: int) -> bool:
        total = dig(body, self.total_key)
        return isinstance(total, int) and index + count >= total

    def advance(self, count: int) -> int:
        return count


@dataclasses.dataclass(kw_only=True)
class PageNumberPaging(_Windows):
    """Page numbers (``page_param``, from ``first_page``) of ``size`` records
    (``size_param``). Ends at an empty page, or when the answer's ``total_pages_key`` says
    so (without it, the walk's last request is one that finds the list's end). A short
    page followed by more records means the upstream caps the page size below ``size``:
    its page numbers then count other pages than the walk's, so the run fails
    (``UpstreamError``) rather than skip records; set ``size`` to the upstream's maximum.
    The shift check asks for one record with a page size of 1."""

    page_param: str = "page"
    size_param: str = "per_page"
    total_pages_key: Where | None = "total_pages"
    first_page: int = 1

    def window(self, index: int, size: int) -> dict[str, Any]:
        return {self.page_param: self.first_page + index // size, self.size_param: size}

    def is_last(self, body: Any, index: int, count: int) -> bool:
        total = dig(body, self.total_pages_key)
        return isinstance(total, int) and index // self.size + 1 >= total

    def advance(self, count: int) -> int:
        return self.size

    def after_short(self, url: str, count: int) -> None:
        raise UpstreamError(
            f"the upstream answered a page with fewer than the {self.size} records asked, "
            f"and then {count} more: it caps the page size lower, so its page numbers do "
            f"not count pages of {self.size}; set the paging's size to its maximum: GET {url}",
            url=url,
        )


@dataclasses.dataclass(kw_only=True)
class MergedPaging:
    """Changes and deletions that the upstream keeps in two lists (OData's ``/Orders`` and
    ``/DeletedOrders``, an audit log of deletions beside the records), read as one list in
    feed order.

    ``changes`` and ``deletions`` are two blocks, each made for its own list (its paging,
    where its records are, its ``position`` and ``since_params``; both with the adapter's
    ``codec``, so that their positions compare). ``tombstone`` turns an entry of the
    deletion list into a record that the adapter's ``position`` and ``to_entity`` read (its
    id, the deletion's time where a record has its modification time, a deleted flag; the
    same position as the entry's); None passes the entries on as they are.

    ``pages(client, changes_url, deletions_url, params, deletion_params, since=since)``:
    without ``since`` (a full run, which Sesam wants as the live records) the changes list
    alone; with it, both lists from ``since`` on, merged by position. Each block keeps its
    own guarantees (a change mid-run moves later and is read there, a tie is stepped
    through, a loop stops the run), and the merge keeps their order: the merged list is in
    position order, each position once.

    Two lists are read at two moments. Once one of them has ended, the other can still
    bring records written after that end, and a deletion written meanwhile, earlier than
    those records, would land behind the ``since`` Sesam then holds, lost for good. So a
    list that has ended is read again (from the last position handed on) each time the
    other brings a page, before that page is handed on: after one list ends, each page of
    the other costs one request more.

    One position in both lists, a record deleted and created again at one instant (a
    coarse clock): the changes list's record is delivered, the deletion dropped. The
    changes list shows the record as it is when read, so at that instant it exists; had it
    been deleted after, that deletion would carry a later position and come later. The
    other way round, Sesam would delete a record that exists and keep it deleted until it
    changes again. With a coarse clock, run with a settle window, so that an instant is
    read once it is over.
    """

    changes: Paging
    deletions: Paging
    tombstone: Callable[[Record], Record] | None = None

    def pages(
        self,
        client: UpstreamClient,
        changes_url: str,
        deletions_url: str,
        params: dict[str, Any] | None = None,
        deletion_params: dict[str, Any] | None = None,
        *,
        since: Position | Any = None,
    ) -> Iterator[list[Record]]:
        """The live records (no ``since``), or every change and deletion after ``since``,
        a page at a time, in position order."""
        if since is None:
            yield from self.changes.pages(client, changes_url, params)
            return
        if not isinstance(since, tuple):
            since = (since,)
        live = _List(
            lambda after: self.changes.pages(client, changes_url, params, since=after),
            self.changes.key,
        )
        gone = _List(
            lambda after: self.deletions.pages(client, deletions_url, deletion_params, since=after),
            self.deletions.key,
        )
        try:
            yield from self.merge(live, gone, since)
        finally:
            live.close()
            gone.close()

    def merge(self, live: _List, gone: _List, since: Position) -> Iterator[list[Record]]:
        """Both lists as one: a page is handed on each time a list needs its next page
        read, so at most a page of each is held."""
        last = since
        out: list[Record] = []
        while True:
            if out and (live.needs_page() or gone.needs_page()):
                yield out
                out = []
            _read(live, gone, last)
            if live.head is None and gone.head is None:
                break
            if gone.head is None or (live.head is not None and live.head <= gone.head):
                if gone.head is not None and live.head == gone.head:
                    gone.pop()  # one instant, one record: the change wins (above)
                last = live.head
                out.append(live.pop())
            else:
                last = gone.head
                entry = gone.pop()
                out.append(self.tombstone(entry) if self.tombstone is not None else entry)
        if out:
            yield out


class _List:
    """One of ``MergedPaging``'s lists: read a page at a time, its first unread record's
    position at hand, and read again from a position once it has ended."""

    def __init__(
        self,
        walk: Callable[[Position], Iterator[list[Record]]],
        key: Callable[[Record], Position],
    ) -> None:
        self.walk = walk
        self.key = key
        self.pages: Iterator[list[Record]] | None = None
        self.records: collections.deque[Record] = collections.deque()
        self.done = False
        self.head: Position | None = None

    def needs_page(self) -> bool:
        return not self.records and not self.done

    def start(self, after: Position) -> None:
        """Walk the list (again) from ``after`` on."""
        self.close()
        self.pages = self.walk(after)
        self.done = False

    def fill(self, after: Position) -> bool:
        """Read pages until one brings records or the list ends; whether one did."""
        if self.pages is None:
            self.start(after)
        read = False
        while self.needs_page():
            assert self.pages is not None  # nosec B101: narrows the type; start() set it
            page = next(self.pages, None)
            if page is None:
                self.done = True
            elif page:
                self.records.extend(page)
                read = True
        self.head = self.key(self.records[0]) if self.records else None
        return read

    def pop(self) -> Record:
        record = self.records.popleft()
        self.head = self.key(self.records[0]) if self.records else None
        return record

    def close(self) -> None:
        """End the walk in progress (a generator's ``close``: its requests stop)."""
        close = getattr(self.pages, "close", None)
        if close is not None:
            close()


def _read(live: _List, gone: _List, last: Position) -> None:
    """Fill both lists. A list that has ended is read again from ``last`` when the other
    has just brought a page: it may have grown since it ended, with records earlier than
    that page's."""
    waiting = [live, gone]
    while waiting:
        this = waiting.pop(0)
        other = gone if this is live else live
        if this.fill(last) and other.done:
            other.start(last)
            if other not in waiting:
                waiting.append(other)


def dig(body: Any, where: Where | None) -> Any:
    """The value at ``where`` in a JSON answer; None if absent.

    - ``None``: the answer itself.
    - A string: a key the answer holds as it is (``"@odata.nextLink"``, dots and all), or
      else a dotted path (``"links.next"``: ``body["links"]["next"]``). The key as it is
      comes first because a dotted path that finds nothing reads as "no next page": a walk
      would end after its first page, and a full run would hand Sesam one page as the
      whole truth.
    - A list or tuple of strings: keys taken literally, one per level, no dots split
      (``["d", "__next"]``, ``["@odata.nextLink"]``).
    - A function of the answer: what it returns (for an answer no path describes).
    """
    if where is None:
        return body
    if callable(where):
        return where(body)
    if isinstance(where, str):
        if isinstance(body, dict) and where in body:
            return body[where]
        where = where.split(".")
    for key in where:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def check_where(where: Any, name: str) -> None:
    """Refuse, when a block is made, a ``where`` that ``dig`` cannot follow."""
    if where is None or callable(where) or isinstance(where, str):
        return
    if (
        isinstance(where, list | tuple)
        and where
        and all(isinstance(key, str) and key for key in where)
    ):
        return
    raise TypeError(
        f"{name} must be a dotted path, a list of keys (strings), a function of the answer, "
        f"or None; not {where!r}"
    )
