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

import datetime
import functools
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any
from typing import TypeVar

from flask import Flask
from flask import Response
from flask import request
from flask import stream_with_context

from service.framework.adapter import Adapter
from service.framework.adapter import require_collection
from service.framework.errors import BadRequest
from service.framework.errors import UpstreamContractError
from service.framework.upstream import UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

# [0-9], not \d: \d is any Unicode digit ("٢٠٢٦" would pass).
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
TOKEN = re.compile(rf"({TIMESTAMP.pattern})(?:_((?:[0-9a-f]{{2}})+))?")
LIMIT = re.compile(r"[0-9]+")


def make_token(updated_at: str, record_id: str) -> str:
    """The ``_updated`` of a record: unique, and string order is feed order."""
    if not TIMESTAMP.fullmatch(updated_at):
        raise UpstreamContractError(
            f"record {record_id!r} has updated_at {updated_at!r}, "
            "not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ"
        )
    return f"{updated_at}_{record_id.encode('utf-8').hex()}"


def parse_since(since: str) -> tuple[str, str]:
    """Check a ``since`` value; answer (the upstream's updated_since, the token itself).

    A bare timestamp is accepted too (an operator resetting a pipe by hand): every
    record with that updated_at or later comes after it.
    """
    match = TOKEN.fullmatch(since)
    if match is None:
        raise ValueError(
            "since must be an _updated value from this feed "
            "(YYYY-MM-DDTHH:MM:SS.ffffffZ, optionally followed by _<hex id>)"
        )
    try:
        datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        raise ValueError(f"since holds a time that does not exist: {match.group(1)}") from None
    if match.group(2) is not None:
        try:
            bytes.fromhex(match.group(2)).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("since holds an id that is not UTF-8") from None
    return match.group(1), since


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
    position: Callable[[dict[str, Any]], tuple[str, str]],
    to_entity: Callable[[dict[str, Any]], dict[str, Any]],
    stats: dict[str, int],
) -> Iterator[str]:
    """One JSON text per upstream page: its entities, comma-separated, no brackets.

    Pure: no Flask, no sockets, so it is unit-tested directly.
    """
    last = since
    remaining = limit
    first = True
    for page in pages:
        entities = []
        for record in page:
            token = make_token(*position(record))
            if since is not None and token <= since:
                continue  # delivered already: updated_since is inclusive
            if last is not None and token <= last:
                raise UpstreamContractError(
                    f"the upstream's order is not (updated_at, id): {token} after {last}"
                )
            last = token
            entity = to_entity(record)
            entity["_updated"] = token
            entities.append(entity)
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    break
        if entities:
            text = json.dumps(entities, ensure_ascii=False, allow_nan=False, separators=(",", ":"))[
                1:-1
            ]
            stats["entities"] += len(entities)
            yield text if first else "," + text
            first = False
        else:
            yield ""
        if remaining == 0:
            return


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


def read_query() -> tuple[str | None, str | None, int | None]:
    """The request's ``since`` and ``limit``: (the upstream's since, the token, the limit)."""
    try:
        since_param = request.args.get("since")
        upstream_since, since = (None, None)
        if since_param is not None and since_param != "":
            upstream_since, since = parse_since(since_param)
        return upstream_since, since, parse_limit(request.args.get("limit"))
    except ValueError as error:
        raise BadRequest(str(error)) from None


def feed(adapter: Adapter, collection: str) -> Response:
    """Stream the collection; the first upstream page is read before the answer starts."""
    require_collection(adapter, collection)
    upstream_since, since, limit = read_query()
    stats = {"entities": 0}
    started = time.monotonic()
    upstream_pages = Prefetched(adapter.pages(collection, upstream_since))
    chunks = entity_chunks(
        upstream_pages,
        since=since,
        limit=limit,
        position=adapter.position,
        to_entity=adapter.to_entity,
        stats=stats,
    )
    try:
        head = next(chunks)  # the first upstream page, before any byte is sent
    except StopIteration:
        head = None
    except BaseException:
        upstream_pages.close()
        raise

    def generate() -> Iterator[str]:
        outcome = "broken"
        try:
            if head is None:
                yield "[]"
                outcome = "ok"
                return
            yield "[" + head
            yield from chunks
            yield "]"
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
