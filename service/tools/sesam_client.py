"""Sesam's side of the two JSON protocols, written once for the tools and the tests.

The local Sesam runner, the functional tests, the conformance suite and the benchmarks all
talk to a connector the way Sesam's pipes do; this module is the one place that knows how
(the rules it follows are Sesam's own, as its documentation states them):

- ``Paging``: a ``json`` source with ``supports_since``, ``is_chronological`` and
  ``page_size`` asks ``limit=<page_size>``, then ``since=<_updated of the last entity>``,
  again and again, until a page comes back empty.
- ``Sequence``: a ``json`` sink's query parameters: ``sequence_id`` and ``is_full`` on
  every request, a new ``request_id`` each time, ``previous_request_id`` on all but the
  first, ``is_first`` and ``is_last`` on a full sync.
- ``batches``: a sink's batches, always ending with one empty batch.
- ``SesamClient``: the HTTP calls themselves, for one pipe's URL.

The protocol parts take a function or an iterable and do no HTTP, so they are tested and
reused without a server; ``SesamClient`` adds ``requests`` for whoever has a URL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import requests

Entity = dict[str, Any]
Params = dict[str, str]
TIMEOUT = (60.0, 1800.0)  # Sesam's defaults: 60 s to connect, 1800 s for a response
CONTENT_TYPE = "application/json; charset=UTF-8"  # what Sesam's json sink sends
DEFAULT_BATCH_SIZE = 100  # Sesam's json sink default


class PagingError(RuntimeError):
    """Paging did not end: the since never reached an empty page."""


class SesamError(RuntimeError):
    """The connector answered what Sesam would not take (a non-2xx, or not an array)."""


# --- pull ---------------------------------------------------------------------------------


class Paging:
    """Sesam's paging of one feed run, from ``since`` (None: a full run).

    ``pages(fetch)`` calls ``fetch(params)`` for each page, ``params`` being the query
    (``limit``, and ``since`` after the first page of a full run), and yields every page
    that is not empty. Afterwards ``since`` is what Sesam keeps for its next run and
    ``requests`` how many pages were asked for, the final empty one included.
    ``max_requests`` stops a feed whose since never advances (PagingError).
    """

    def __init__(
        self, page_size: int, since: str | None = None, *, max_requests: int | None = None
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.page_size = page_size
        self.since = since
        self.requests = 0
        self.max_requests = max_requests

    def params(self) -> Params:
        """The next request's query, as Sesam sends it (``since`` always as a string)."""
        params = {"limit": str(self.page_size)}
        if self.since is not None:
            params["since"] = self.since
        return params

    def pages(self, fetch: Callable[[Params], list[Entity]]) -> Iterator[list[Entity]]:
        while True:
            if self.max_requests is not None and self.requests >= self.max_requests:
                raise PagingError(
                    f"paging did not end after {self.requests} requests (since={self.since!r})"
                )
            page = fetch(self.params())
            self.requests += 1
            if not page:
                return
            self.since = str(page[-1]["_updated"])  # Sesam hands _updated back as text
            yield page


# --- push ---------------------------------------------------------------------------------


def batches(entities: Iterable[Entity], size: int) -> Iterator[list[Entity]]:
    """Batches of ``size``, then always one empty batch, as Sesam's json sink sends them
    (150 entities at 100 go as 100, 50, 0)."""
    batch: list[Entity] = []
    for entity in entities:
        batch.append(entity)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
    yield []


def batch_sizes(total: int, size: int) -> list[int]:
    """The sizes ``batches`` yields for ``total`` entities (for progress and tests)."""
    return [size] * (total // size) + ([total % size] if total % size else []) + [0]


class Sequence:
    """The query parameters of one sync's requests, in the order Sesam sends them.

    Every request has ``sequence_id``, ``is_full`` and a new ``request_id``; all but the
    first have ``previous_request_id``. A full sync marks its first request ``is_first``
    and its last (the final empty batch) ``is_last``. With ``always_flags`` a full sync's
    requests carry both flags, ``false`` where they do not hold: a sink must take both
    spellings.

    ``params(last=...)`` answers the next request's parameters and moves the sequence on
    (a failed request is retried with the same parameters, as Sesam does);
    ``upcoming(last=...)`` answers them without moving on, and ``accepted(params)`` moves
    on afterwards, for a client that moves only on success.
    """

    def __init__(
        self,
        *,
        full: bool,
        new_id: Callable[[], str] | None = None,
        always_flags: bool = False,
    ) -> None:
        self.full = full
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self.always_flags = always_flags
        self.sequence_id = self.new_id()
        self.previous: str | None = None

    def upcoming(self, *, last: bool, request_id: str | None = None) -> Params:
        params = {
            "sequence_id": self.sequence_id,
            "is_full": "true" if self.full else "false",
            "request_id": request_id or self.new_id(),
        }
        if self.previous is not None:
            params["previous_request_id"] = self.previous
        first = self.previous is None
        if self.full and (first or self.always_flags):
            params["is_first"] = "true" if first else "false"
        if self.full and (last or self.always_flags):
            params["is_last"] = "true" if last else "false"
        return params

    def accepted(self, params: Mapping[str, str]) -> None:
        self.previous = params["request_id"]

    def params(self, *, last: bool) -> Params:
        params = self.upcoming(last=last)
        self.accepted(params)
        return params


def encode(batch: Any) -> bytes:
    """A batch as Sesam sends it: UTF-8 JSON, never NaN or Infinity."""
    return json.dumps(batch, ensure_ascii=False, allow_nan=False).encode("utf-8")


# --- HTTP ---------------------------------------------------------------------------------


class SesamClient:
    """Sesam's HTTP calls to one pipe's URL (``http://host:port/<collection>``)."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        auth: Any = None,
        timeout: float | tuple[float, float] = TIMEOUT,
    ) -> None:
        self.url = url
        self.http = session or requests.Session()
        if auth is not None:
            self.http.auth = auth
        self.timeout = timeout

    def get(
        self, params: Mapping[str, Any] | None = None, *, stream: bool = False
    ) -> requests.Response:
        """One feed request, as it comes (a ``requests.Response``)."""
        return self.http.get(
            self.url,
            params=params,
            timeout=self.timeout,
            headers={"Accept": "application/json"},
            stream=stream,
        )

    def post(
        self, batch: Any, params: Mapping[str, str] | None = None, *, raw: bytes | None = None
    ) -> requests.Response:
        """One sink request: ``batch`` as JSON (or ``raw`` bytes, sent as they are)."""
        return self.http.post(
            self.url,
            params=params,
            data=encode(batch) if raw is None else raw,
            timeout=self.timeout,
            headers={"Content-Type": CONTENT_TYPE},
        )

    def page(self, params: Mapping[str, Any] | None = None) -> list[Entity]:
        """One feed page; SesamError unless it is a 2xx with a JSON array."""
        response = self.get(params)
        if not 200 <= response.status_code < 300:
            raise SesamError(f"GET {self.url}: HTTP {response.status_code} {response.text[:300]}")
        entities = response.json()
        if not isinstance(entities, list):
            raise SesamError(f"GET {self.url}: a JSON {type(entities).__name__}, not an array")
        return entities

    def pull(self, paging: Paging) -> Iterator[list[Entity]]:
        """Every page of a run, as ``Paging`` asks for them."""
        return paging.pages(self.page)

    def push(
        self,
        entities: Iterable[Entity],
        sequence: Sequence,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[requests.Response]:
        """A whole sync, the final empty batch included; stops at the first non-2xx, as
        Sesam stops a sync (it retries later). Answers the responses."""
        answers: list[requests.Response] = []
        for batch in batches(entities, batch_size):
            response = self.post(batch, sequence.params(last=not batch))
            answers.append(response)
            if not 200 <= response.status_code < 300:
                break
        return answers

    def close(self) -> None:
        self.http.close()
