"""The entity feed: Sesam's JSON pull protocol, streamed.

``_updated`` is a since token ``<updated_at>_<hex of the id's UTF-8>``. The timestamp has
a fixed width and hex keeps byte order, so tokens sort as strings exactly in the
upstream's (updated_at, id) order and are unique even when thousands of records share
one updated_at. Resuming from a token asks the upstream for ``updated_since=<updated_at>``
(inclusive) and skips every record whose token is not greater than the one given.

Failure contract: the first upstream page is fetched before the response starts, so an
early failure gets a real status and a JSON error. A failure after that raises out of the
generator: gunicorn then drops the connection without the closing ``]`` (and without
the final chunk), so Sesam cannot take a truncated feed for the whole truth.

The upstream is untrusted: a record the adapter cannot place or map (no id, no time, not
an object), a record larger than ``UPSTREAM_MAX_RECORD_BYTES``, records out of order or
sent again (a cursor that loops), or ``Adapter.max_empty_pages`` empty pages in a row fail
the run, naming what and where, as upstream failures do (502, or a broken stream). Each
feed holds a reservation in the worker's memory budget (``service.framework.memory``:
503 when there is no room) and a deadline scope that its upstream reads fall under; when
Sesam hangs up, the read in flight is cut and no more pages are asked for.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import functools
import logging
import math
import queue
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import TypeVar

from flask import Flask
from flask import Response
from flask import request
from flask import stream_with_context

from service.framework import deadlines
from service.framework import jsontext
from service.framework import memory
from service.framework.adapter import Adapter
from service.framework.adapter import require_collection
from service.framework.errors import ApiError
from service.framework.errors import BadRequest
from service.framework.errors import ClientGone
from service.framework.errors import UpstreamContractError
from service.framework.memory import FEED_ANSWERS_HELD
from service.framework.memory import MemoryBudget
from service.framework.positions import TIMESTAMP
from service.framework.positions import Positions
from service.framework.positions import Timestamp
from service.framework.positions import utc_text
from service.framework.upstream import UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

# [0-9], not \d: \d is any Unicode digit ("５" would pass).
LIMIT = re.compile(r"[0-9]+")
#: An adapter's mistakes on the upstream's data: a record without a key it reads, of
#: another type, a value it cannot convert. The run fails as an upstream failure (502).
DATA_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)
CLIENT_POLL_SECONDS = 1.0  # while a page is awaited, whether Sesam is still there
RECENT_PAGES = 64  # a full-runs-only feed remembers this many pages, to catch a loop


def make_token(positions: Positions, values: tuple[Any, ...]) -> str:
    """The ``_updated`` of a record: unique, and string order is feed order."""
    try:
        return positions.encode(values)
    except (ValueError, UnicodeEncodeError) as error:
        raise _not_a_position(positions, values, error) from None


def _not_a_position(
    positions: Positions, values: tuple[Any, ...], error: Exception
) -> UpstreamContractError:
    return UpstreamContractError(
        f"a record's position {values!r} is not ({positions.describe()}): {error}"
    )


#: Between a provisional token's cutoff and the record's own token (see ``Since``): "!"
#: sorts below every character a token holds, and appears in none.
PROVISIONAL = "!"


@dataclasses.dataclass(frozen=True)
class Since:
    """A ``since`` as the feed resumes from it.

    ``token``: what Sesam has; a record whose token is not after it is not delivered
    again. A provisional token (``<cutoff>~!<token>``, handed out for a record still within
    the settle window, see ``settled_until``) also carries ``settled_from``, the cutoff it
    was handed out with: a record that has settled since, at a time after that cutoff, is
    delivered again, so that a record written late into that window is not lost.
    """

    token: str
    settled_from: str | None = None

    @property
    def floor(self) -> str:
        """Settled records not after this are skipped."""
        return self.settled_from or self.token


def parse_since(since: str, positions: Positions) -> tuple[Any, ...]:
    """The typed values of a ``since``, as the upstream is asked from them: a token of
    this feed, or its first parts (a bare timestamp, from an operator resetting a pipe by
    hand, means "from that time on"); for a provisional token, its cutoff's."""
    cutoff, marked, token = since.partition("~" + PROVISIONAL)
    try:
        if not marked:
            return positions.decode(since)
        if not isinstance(positions.parts[0], Timestamp):
            raise ValueError("this feed hands out no provisional tokens")
        TIMESTAMP.decode(cutoff, 0, True)  # the cutoff: a timestamp in the canonical form
        if len(cutoff) != TIMESTAMP.width:
            raise ValueError("a provisional token's cutoff must be a timestamp")
        positions.decode(token)  # the record's own token: one of this feed's
        return positions.decode(cutoff)
    except ValueError as error:
        raise ValueError(
            f"since must be an _updated value from this feed ({positions.describe()}), "
            f"or its first parts: {error}"
        ) from None


def resume(since: str) -> Since:
    """How the feed resumes from a ``since`` that ``parse_since`` took."""
    cutoff, marked, token = since.partition("~" + PROVISIONAL)
    return Since(token, cutoff + "~") if marked else Since(since)


def settle_window(adapter: Adapter) -> float:
    """The feed's settle window: ``FEED_SETTLE_SECONDS`` when the operator set it, else
    what the adapter declares for its upstream's clock (``Adapter.settle_seconds``)."""
    configured = adapter.settings.feed_settle_seconds
    return float(adapter.settle_seconds) if configured is None else configured


def settled_until(positions: Positions, settle_seconds: float) -> str | None:
    """With a settle window, the greatest token of a record that has settled: one whose
    time is within the window (``settle_window``) may still have company written late
    into its instant. Such a record is delivered now, with a provisional token
    (``<cutoff>~!<its token>``): it sorts after every settled one, so Sesam's next
    ``since`` is one, and the feed then asks the upstream again from the cutoff, and
    delivers again every record settled since, the late ones with them."""
    if settle_seconds <= 0 or not isinstance(positions.parts[0], Timestamp):
        return None
    cutoff = datetime.now(UTC) - timedelta(seconds=settle_seconds)
    return utc_text(cutoff) + "~"  # after every token of that instant, before the next


def parse_limit(limit: str | None) -> int | None:
    if limit is None or limit == "":
        return None
    if not LIMIT.fullmatch(limit) or int(limit) < 1:
        raise ValueError("limit must be a whole number of at least 1")
    return int(limit)


def entity_chunks(
    pages: Iterable[list[dict[str, Any]]],
    *,
    since: str | Since | None,
    limit: int | None,
    position: Callable[[dict[str, Any]], tuple[Any, ...]],
    to_entity: Callable[[dict[str, Any]], dict[str, Any]],
    stats: dict[str, int],
    positions: Positions,
    until: str | None = None,
    ordered: bool = True,
    max_record_bytes: int | None = None,
    max_empty_pages: int = 20,
) -> Iterator[bytes]:
    """One JSON text (UTF-8 bytes) per upstream page: its entities, comma-separated, no
    brackets. With ``until`` (``settled_until``), a record past it is delivered with a
    provisional token; with ``ordered`` false (a full-runs-only feed), the upstream's order
    is not checked, but a page sent again is.

    One pass per page, the least Python per record: its position, its token, the order
    checks, ``to_entity``; then one encoding of the page's entities (``jsontext.dumps``).
    Every record the upstream sends must come after the one before, delivered or not (a
    page sent again is a loop); ``max_empty_pages`` empty pages in a row are one too.
    Pure: no Flask, no sockets, so it is unit-tested directly.
    """
    seen: str | None = None  # the greatest token the upstream sent, delivered or not
    if isinstance(since, str):
        since = resume(since)
    floor = since.floor if since is not None else None
    after = since.token if since is not None else None
    if until is not None and floor is not None:
        # A since at or after the cutoff (a clock set back, a window made shorter): its
        # instant counts as settled, or a provisional token could sort before it.
        until = max(until, floor[: TIMESTAMP.width] + "~")
    mark = f"{until}{PROVISIONAL}"
    stats.setdefault("provisional", 0)
    remaining = limit
    first = True
    empty = 0
    recent: collections.deque[tuple[str, str]] = collections.deque(maxlen=RECENT_PAGES)
    encode = positions.encode
    for number, page in enumerate(_read_by_the_adapter(pages), 1):
        if not isinstance(page, list):
            raise UpstreamContractError(
                f"page {number} of the upstream is a {type(page).__name__}, not a list of "
                "records (the adapter's pages())"
            )
        if not page:
            empty += 1
            if empty >= max_empty_pages:
                raise UpstreamContractError(
                    f"the upstream sent {empty} empty pages in a row (up to page {number}) "
                    "without ending its list: it loops, so the run stops"
                )
            yield b""
            continue
        empty = 0
        entities = []
        append = entities.append
        record: Any = None
        try:
            for record in page:
                values = position(record)
                try:
                    token = encode(values)
                except (ValueError, UnicodeEncodeError) as error:
                    raise _not_a_position(positions, values, error) from None
                if ordered:
                    if seen is not None and token <= seen:
                        raise UpstreamContractError(
                            f"the upstream's order is not the position's order: {token} "
                            f"after {seen} (page {number}; a page sent again is a loop)"
                        )
                    seen = token
                if floor is not None and token <= floor:
                    continue  # delivered already: the upstream's since is inclusive
                if until is not None and token > until:  # within the settle window
                    if after is not None and token <= after:
                        continue  # delivered already, provisionally
                    stats["provisional"] += 1
                    updated = mark + token
                else:
                    updated = token
                entity = to_entity(record)
                entity["_updated"] = updated
                append(entity)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        break
            if not ordered:
                _check_not_again(recent, page, number, position, encode)
        except DATA_ERRORS as error:
            raise _bad_record(page, number, record, error) from None
        except RecursionError:
            raise _bad_record(page, number, record, "it is nested too deeply") from None
        del page, record
        if entities:
            text = _page_text(entities)
            if max_record_bytes is not None and len(text) > max_record_bytes:
                _check_record_sizes(entities, number, max_record_bytes)
            stats["entities"] += len(entities)
            del entities
            yield text if first else b"," + text
            first = False
        else:
            yield b""
        if remaining == 0:
            return


def _read_by_the_adapter(pages: Iterable[T]) -> Iterator[T]:
    """The adapter's pages. Its paging reads records too (a loop guard, a paging block,
    places each page's last record) before the feed sees them: a record it cannot read
    fails the run as the upstream's data does (502, or a broken stream), not as a 500."""
    number = 1
    try:
        for page in pages:
            yield page
            number += 1
    except DATA_ERRORS as error:
        what = (
            f"has no {error.args[0]!r}"
            if isinstance(error, KeyError) and error.args
            else f"{type(error).__name__}: {str(error)[:200]}"
        )
        raise UpstreamContractError(
            f"the upstream's page {number} holds a record the adapter's paging cannot read: {what}"
        ) from None


def _bad_record(page: list[Any], number: int, record: Any, error: Any) -> UpstreamContractError:
    """The 502 for a record the adapter could not place or map: which record, and why."""
    index = next((i for i, r in enumerate(page) if r is record), None)
    where = f"record {index} of page {number}" if index is not None else f"page {number}"
    ident = record.get("id", record.get("_id")) if isinstance(record, dict) else None
    if ident is not None and isinstance(ident, str | int):
        where += f" (id {str(ident)[:100]!r})"
    if not isinstance(record, dict):
        what = f"is a JSON {type(record).__name__}, not an object"
    elif isinstance(error, KeyError):
        what = f"has no {error.args[0]!r}" if error.args else "lacks a field the adapter reads"
    elif isinstance(error, str):
        what = error
    else:
        what = f"could not be read: {type(error).__name__}: {str(error)[:200]}"
    return UpstreamContractError(f"the upstream's {where} {what}")


def _check_not_again(
    recent: collections.deque[tuple[str, str]],
    page: list[Any],
    number: int,
    position: Callable[[dict[str, Any]], tuple[Any, ...]],
    encode: Callable[[tuple[Any, ...]], str],
) -> None:
    """A full-runs-only feed has no order to check: a page whose first and last records
    are those of a recent page is the upstream sending it again."""
    ends = (encode(position(page[0])), encode(position(page[-1])))
    if ends in recent:
        raise UpstreamContractError(
            f"the upstream sent page {number} again (the records from {ends[0]} to "
            f"{ends[1]}): it loops, so the run stops"
        )
    recent.append(ends)


def _check_record_sizes(entities: list[dict[str, Any]], number: int, limit: int) -> None:
    """Only for a page larger than the limit: is one of its entities larger?"""
    for index, entity in enumerate(entities):
        size = len(_page_text([entity]))
        if size > limit:
            raise UpstreamContractError(
                f"the upstream's record {entity.get('_id')!r} (entity {index} of page "
                f"{number}) is {size} bytes as an entity, more than UPSTREAM_MAX_RECORD_BYTES "
                f"({limit})"
            )


def _page_text(entities: list[dict[str, Any]]) -> bytes:
    """A page's entities as JSON text, comma-separated, without the brackets."""
    try:
        return jsontext.dumps(entities)[1:-1]
    except UnicodeEncodeError:
        raise UpstreamContractError(
            "an entity holds a string that is not valid Unicode (a lone surrogate)"
        ) from None
    except RecursionError:
        raise UpstreamContractError(
            "an entity is nested too deeply to be written as JSON"
        ) from None


class Prefetched(Iterator[T]):
    """Fetch the next upstream page while the current one is written: one page ahead,
    never more, so a feed holds two pages (the one written, the one read ahead).

    The upstream's time and the connector's own then overlap instead of adding up. The
    source runs in one background thread, in ``context`` when given (the request's memory
    ledger and deadline: ``service.framework.memory``, ``service.framework.deadlines``);
    its errors surface here, in order, after the pages before them. While a page is
    awaited, ``client_gone`` is asked every ``CLIENT_POLL_SECONDS``: when it says so,
    ``ClientGone`` is raised. ``close()`` stops the source (the limit reached, the client
    gone); cutting the deadline scope also stops the read it has in flight.
    """

    def __init__(
        self,
        source: Iterator[T],
        *,
        context: contextvars.Context | None = None,
        client_gone: Callable[[], bool] | None = None,
    ) -> None:
        self._slot: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
        self._taken = threading.Semaphore(0)
        self._stop = threading.Event()
        self._done = False
        self._client_gone = client_gone
        run = (context or contextvars.copy_context()).run
        self._thread = threading.Thread(
            target=run, args=(self._produce, source), name="feed-prefetch", daemon=True
        )
        self._thread.start()

    def _offer(self, item: Any, error: BaseException | None = None) -> bool:
        """Hand an item over, then wait until it is taken: the next page is not fetched
        before the consumer holds this one."""
        while not self._stop.is_set():
            try:
                self._slot.put((item, error), timeout=0.1)
                break
            except queue.Full:
                continue
        while not self._stop.is_set():
            if self._taken.acquire(timeout=0.1):
                return True
        return False

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for page in source:
                if not self._offer(page):
                    return
                del page
            self._offer(_END)
        except BaseException as error:  # handed to the consumer, raised there
            self._offer(None, error)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        while True:
            try:
                item, error = self._slot.get(timeout=CLIENT_POLL_SECONDS)
                break
            except queue.Empty:
                if self._client_gone is not None and self._client_gone():
                    self.close()
                    raise ClientGone from None
        self._taken.release()
        if error is not None:
            self._done = True
            raise error
        if item is _END:
            self._done = True
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._done = True
        self._stop.set()


def client_gone(sock: socket.socket | None) -> Callable[[], bool]:
    """Whether the client of this connection has closed its side (Sesam hung up): the
    socket reads as ready with nothing to read. Without a socket (the test client), never."""

    def gone() -> bool:
        if sock is None:
            return False
        try:
            ready, _, _ = select.select([sock], [], [], 0)
            return bool(ready) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # reset, or closed already
            return True

    return gone


_END = object()


def register_feed(app: Flask, adapter: Adapter, budget: MemoryBudget) -> None:
    """``GET /<collection>``: the feed of one upstream collection."""
    configured = adapter.settings.feed_settle_seconds
    if configured is not None and configured < adapter.settle_seconds:
        log.warning(
            "FEED_SETTLE_SECONDS=%g is below the %gs settle window %s declares for its "
            "upstream's clock: a record written late into an instant the feed has read can "
            "be missed; unset it to use the adapter's",
            configured,
            adapter.settle_seconds,
            type(adapter).__name__,
        )
    app.add_url_rule(
        "/<collection>", "feed", functools.partial(feed, adapter, budget), methods=["GET"]
    )


def read_query(
    adapter: Adapter, collection: str
) -> tuple[tuple[Any, ...] | None, Since | None, int | None]:
    """The request's ``since`` and ``limit``: (the typed values the upstream is asked
    from, how the feed resumes, the limit)."""
    text = request.args.get("since") or None
    if text is not None and not adapter.supports_since:
        raise BadRequest(
            f"the {collection} feed does full runs only (its upstream cannot be read in "
            "position order): set supports_since to false on the pipe's json source"
        )
    try:
        values = parse_since(text, adapter.positions) if text else None
        limit = parse_limit(request.args.get("limit"))
    except ValueError as error:
        raise BadRequest(str(error)) from None
    return values, resume(text) if text else None, limit


def feed(adapter: Adapter, budget: MemoryBudget, collection: str) -> Response:
    """Stream the collection; the first upstream page is read before the answer starts."""
    require_collection(adapter, collection)
    positions = adapter.positions
    since_values, since, limit = read_query(adapter, collection)
    request_since = request.args.get("since") or None
    stats = {"entities": 0, "provisional": 0}
    started = time.monotonic()
    ledger = budget.enter(
        f"the feed of {collection}",
        holds=FEED_ANSWERS_HELD,
        allowance=budget.feed_answer,  # as much as the last feed's pages took
        learn=True,
    )
    scope = deadlines.Deadline(math.inf, f"the feed of {collection}")
    gone = client_gone(request.environ.get("gunicorn.socket"))
    try:
        context = contextvars.copy_context()
        context.run(_enter, ledger, scope)
        upstream_pages = Prefetched(
            adapter.pages(collection, since_values), context=context, client_gone=gone
        )
    except BaseException:
        ledger.close()
        raise
    chunks = entity_chunks(
        upstream_pages,
        since=since,
        limit=limit,
        position=adapter.position,
        to_entity=adapter.to_entity,
        stats=stats,
        positions=positions,
        until=(
            settled_until(positions, settle_window(adapter))
            if adapter.supports_since  # a full-runs-only feed has no since to protect
            else None
        ),
        ordered=adapter.supports_since,
        max_record_bytes=adapter.settings.upstream_max_record_bytes,
        max_empty_pages=adapter.max_empty_pages,
    )

    def stop(reason: str) -> None:
        upstream_pages.close()
        scope.cut(reason)  # a read ahead in flight ends now
        ledger.close()

    try:
        head = next(chunks)  # the first upstream page, before any byte is sent
        while not head:  # pages with nothing to send (behind since): still no byte sent
            head = next(chunks)
    except StopIteration:
        head = None
    except BaseException:
        stop("the feed failed before its answer began")
        raise

    def generate() -> Iterator[bytes]:
        outcome = "broken"
        try:
            if head is None:
                yield b"[]"
                outcome = "ok"
                return
            yield b"[" + head
            for chunk in chunks:
                if gone():
                    raise ClientGone
                if chunk:
                    yield chunk
            yield b"]"
            outcome = "ok"
        except ClientGone:
            outcome = "client gone: the upstream is read no further"
        except (UpstreamError, UpstreamContractError, ApiError) as error:
            log.error(
                "feed %s broken after %d entities, closing without ']': %s",
                collection,
                stats["entities"],
                getattr(error, "detail", error),
            )
            raise
        finally:
            stop(f"the feed ended: {outcome}")
            log.info(
                "feed %s since=%s limit=%s entities=%d provisional=%d seconds=%.3f %s",
                collection,
                request_since,
                limit,
                stats["entities"],
                stats["provisional"],
                time.monotonic() - started,
                outcome,
            )

    return Response(stream_with_context(generate()), mimetype="application/json")


def _enter(ledger: memory.Ledger, scope: deadlines.Deadline) -> None:
    """In the read-ahead's context: its upstream answers count against the feed's
    ledger, and its requests fall under the feed's deadline scope."""
    memory.bind(ledger)
    deadlines.bind(scope)
