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
"""

from __future__ import annotations

import functools
import logging
import queue
import re
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

from service.framework import jsontext
from service.framework.adapter import Adapter
from service.framework.adapter import require_collection
from service.framework.errors import BadRequest
from service.framework.errors import UpstreamContractError
from service.framework.positions import Positions
from service.framework.positions import Timestamp
from service.framework.positions import utc_text
from service.framework.upstream import UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

# [0-9], not \d: \d is any Unicode digit ("５" would pass).
LIMIT = re.compile(r"[0-9]+")


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


def parse_since(since: str, positions: Positions) -> tuple[Any, ...]:
    """The typed values of a ``since``: a token of this feed, or its first parts (a bare
    timestamp, from an operator resetting a pipe by hand, means "from that time on")."""
    try:
        return positions.decode(since)
    except ValueError as error:
        raise ValueError(
            f"since must be an _updated value from this feed ({positions.describe()}), "
            f"or its first parts: {error}"
        ) from None


def settled_until(positions: Positions, settle_seconds: float) -> str | None:
    """With a settle window, the greatest token the feed may hand out now: records whose
    time is within the window are held back until a later run (``FEED_SETTLE_SECONDS``)."""
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
    since: str | None,
    limit: int | None,
    position: Callable[[dict[str, Any]], tuple[Any, ...]],
    to_entity: Callable[[dict[str, Any]], dict[str, Any]],
    stats: dict[str, int],
    positions: Positions,
    until: str | None = None,
    ordered: bool = True,
) -> Iterator[bytes]:
    """One JSON text (UTF-8 bytes) per upstream page: its entities, comma-separated, no
    brackets. With ``until`` (``settled_until``), the feed ends before the first record
    past it; with ``ordered`` false (a full-runs-only feed), the upstream's order is not
    checked.

    One pass per page, the least Python per record: its position, its token, the order
    checks, ``to_entity``; then one encoding of the page's entities (``jsontext.dumps``).
    Pure: no Flask, no sockets, so it is unit-tested directly.
    """
    last = since
    remaining = limit
    first = True
    encode = positions.encode
    for page in pages:
        entities = []
        append = entities.append
        for record in page:
            values = position(record)
            try:
                token = encode(values)
            except (ValueError, UnicodeEncodeError) as error:
                raise _not_a_position(positions, values, error) from None
            if since is not None and token <= since:
                continue  # delivered already: the upstream's since is inclusive
            if last is not None and token <= last:
                raise UpstreamContractError(
                    f"the upstream's order is not the position's order: {token} after {last}"
                )
            if until is not None and token > until:
                stats["held_back"] = 1
                remaining = 0  # too recent to be final: the next run delivers it
                break
            if ordered:
                last = token
            entity = to_entity(record)
            entity["_updated"] = token
            append(entity)
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    break
        if entities:
            text = _page_text(entities)
            stats["entities"] += len(entities)
            yield text if first else b"," + text
            first = False
        else:
            yield b""
        if remaining == 0:
            return


def _page_text(entities: list[dict[str, Any]]) -> bytes:
    """A page's entities as JSON text, comma-separated, without the brackets."""
    try:
        return jsontext.dumps(entities)[1:-1]
    except UnicodeEncodeError:
        raise UpstreamContractError(
            "an entity holds a string that is not valid Unicode (a lone surrogate)"
        ) from None


class Prefetched(Iterator[T]):
    """Fetch the next upstream page while the current one is written: one page ahead.

    The upstream's time and the connector's own then overlap instead of adding up. The
    source runs in one background thread; its errors surface here, in order, after the
    pages before them. ``close()`` stops it (the limit reached, the client gone).
    """

    def __init__(self, source: Iterator[T]) -> None:
        self._slot: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=self._produce, args=(source,), name="feed-prefetch", daemon=True
        )
        self._thread.start()

    def _offer(self, item: Any, error: BaseException | None = None) -> bool:
        while not self._stop.is_set():
            try:
                self._slot.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for page in source:
                if not self._offer(page):
                    return
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
        item, error = self._slot.get()
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


_END = object()


def register_feed(app: Flask, adapter: Adapter) -> None:
    """``GET /<collection>``: the feed of one upstream collection."""
    app.add_url_rule("/<collection>", "feed", functools.partial(feed, adapter), methods=["GET"])


def read_query(
    adapter: Adapter, collection: str
) -> tuple[tuple[Any, ...] | None, str | None, int | None]:
    """The request's ``since`` and ``limit``: (since's typed values, since, the limit)."""
    try:
        since = request.args.get("since") or None
        values = parse_since(since, adapter.positions) if since is not None else None
        limit = parse_limit(request.args.get("limit"))
    except ValueError as error:
        raise BadRequest(str(error)) from None
    if since is not None and not adapter.supports_since:
        raise BadRequest(
            f"the {collection} feed does full runs only (its upstream cannot be read in "
            "position order): set supports_since to false on the pipe's json source"
        )
    return values, since, limit


def feed(adapter: Adapter, collection: str) -> Response:
    """Stream the collection; the first upstream page is read before the answer starts."""
    require_collection(adapter, collection)
    positions = adapter.positions
    since_values, since, limit = read_query(adapter, collection)
    stats = {"entities": 0}
    started = time.monotonic()
    upstream_pages = Prefetched(adapter.pages(collection, since_values))
    chunks = entity_chunks(
        upstream_pages,
        since=since,
        limit=limit,
        position=adapter.position,
        to_entity=adapter.to_entity,
        stats=stats,
        positions=positions,
        until=settled_until(positions, adapter.settings.feed_settle_seconds),
        ordered=adapter.supports_since,
    )
    try:
        head = next(chunks)  # the first upstream page, before any byte is sent
    except StopIteration:
        head = None
    except BaseException:
        upstream_pages.close()
        raise

    def generate() -> Iterator[bytes]:
        outcome = "broken"
        try:
            if head is None:
                yield b"[]"
                outcome = "ok"
                return
            yield b"[" + head
            yield from chunks
            yield b"]"
            outcome = "ok"
        except (UpstreamError, UpstreamContractError) as error:
            log.error(
                "feed %s broken after %d entities, closing without ']': %s",
                collection,
                stats["entities"],
                error,
            )
            raise
        finally:
            upstream_pages.close()
            log.info(
                "feed %s since=%s limit=%s entities=%d seconds=%.3f %s",
                collection,
                since,
                limit,
                stats["entities"],
                time.monotonic() - started,
                outcome,
            )

    return Response(stream_with_context(generate()), mimetype="application/json")
