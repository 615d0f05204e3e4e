"""The upstream HTTP client: one pooled session, timeouts, bounded retries, and no trust.

Retries are urllib3's ``Retry`` (exponential backoff with jitter, ``Retry-After`` for
429 and 503), with two additions. What is retried depends on whether sending the request
again is safe: a 429, or a 503 with ``Retry-After``, says the upstream did not process the
request, so it is retried whatever the method (POST and PATCH too); a 502, a 504, a 503
without ``Retry-After`` or a connection dropped after the request was sent leave unknown
whether it was processed, so only an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE:
twice is as once) is sent again, and a POST or PATCH fails at once, for Sesam to retry
the batch. A connection that could not be made sent nothing: retried for every method.
And a budget on the total time spent waiting, so a request that keeps failing fails the
operation instead of hanging a Sesam pipe. The budget
depends on who waits: the client's own (the feed's) by default, a shorter one inside
``retry_budget(seconds)`` (the sink's and the transform's, whose batches Sesam retries
itself). Errors name the upstream status and URL, never the token; a 401 or 403 says
that the upstream refused the credentials, and is never retried.

The upstream is untrusted, so every answer is bounded:

- in bytes: at most ``max_answer_bytes`` (``UPSTREAM_MAX_ANSWER_BYTES``) on the wire and
  after decompression (a small gzip body can inflate a thousandfold), read in pieces and
  refused past the limit (``AnswerTooLarge``); an error's body is read up to 64 KiB;
- in time: every request, from connecting to the last byte of the answer, retries and
  waits included, ends by its deadline (``UPSTREAM_REQUEST_DEADLINE``, or an enclosing
  one: ``service.framework.deadlines``), however slowly the upstream trickles;
- in memory: each answer is counted against the request being served
  (``service.framework.memory``) before it is parsed;
- in where it leads: a write never follows a redirect (a 3xx is a failure that names the
  Location: nothing was written), a read follows one only within the configured origin,
  so no credential of any auth block, retries and refreshes included, leaves it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import quote
from urllib.parse import urljoin

import requests
from urllib3.exceptions import InvalidHeader
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import ReadTimeoutError
from urllib3.exceptions import ResponseError
from urllib3.util.retry import Retry

from service.framework import deadlines
from service.framework import jsontext
from service.framework import memory
from service.framework.bounded import Session
from service.framework.bounded import origin
from service.framework.bounded import origin_text
from service.framework.bounded import read_body
from service.framework.deadlines import DeadlineAdapter
from service.framework.deadlines import DeadlinePassed
from service.framework.masking import mask
from service.framework.settings import Settings
from service.framework.upstream_auth import BearerToken
from service.framework.upstream_errors import UpstreamError
from service.framework.upstream_errors import UpstreamRefused
from service.framework.upstream_errors import UpstreamTimeout

if TYPE_CHECKING:
    from service.framework.rate_limit import RateLimitPacer

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Sent again after any transient failure: the same request twice leaves the upstream as
#: once (RFC 9110, 9.2.2). Other methods (POST, PATCH) only after ``not_processed``.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
REFUSED_STATUSES = frozenset({401, 403})
SAFE_METHODS = frozenset({"GET", "HEAD"})  # the only ones a redirect may be followed for
MAX_REDIRECTS = 5
ERROR_BODY_BYTES = 65536  # what is read of an error answer's body: its text, not a flood

# The retry budget of the requests made in this context (thread), when not the client's.
_budget: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "upstream_retry_budget", default=None
)


@contextlib.contextmanager
def retry_budget(seconds: float) -> Iterator[None]:
    """Upstream requests made in this block, in this thread, wait at most ``seconds``
    between retries in all, whatever the client's own budget. A context variable, so
    code that runs requests in worker threads enters it in each worker."""
    token = _budget.set(seconds)
    try:
        yield
    finally:
        _budget.reset(token)


class PathSegment(str):
    """A path segment already percent-encoded (``key_path`` makes one): ``UpstreamClient.url``
    puts it in as it is, where it would encode any other string again."""


def segment(value: str) -> str:
    """Percent-encode an id as exactly one path segment (``/``, ``?``, ``#`` included).

    ``.`` and ``..`` are encoded too: as they are, HTTP clients resolve them as dot
    segments, and ``people/..`` would address the API's root instead of the record. A
    ``PathSegment`` is already encoded: it goes in as it is.
    """
    if isinstance(value, PathSegment):
        return value
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def key_path(name: str, *key: str | int, **keys: str | int) -> PathSegment:
    """A record's address by its key, OData style, as one path segment for
    ``UpstreamClient.url``: ``key_path("Customers", "ALFKI")`` is ``Customers('ALFKI')``,
    ``key_path("Lines", OrderNo="SO-1", LineNo=3)`` is ``Lines(OrderNo='SO-1',LineNo=3)``.

    Text is quoted, its quotes doubled (``O'Brien`` is ``'O''Brien'``), integers go bare;
    then every character of a name or a value that is not unreserved is percent-encoded (a
    ``/`` in a value is ``%2F``, never a new segment; a space ``%20``), and the key's own
    syntax, ``(``, ``=``, ``,``, ``'`` and ``)``, stays as it is. One key value, or named
    parts in the upstream's order; a bool, a float or anything else is refused
    (``TypeError``): its form differs between APIs, so build that segment yourself.
    """
    if bool(key) == bool(keys) or len(key) > 1:
        raise TypeError("key_path takes one key value, or named key parts: one of them")
    parts = (
        [_key_literal(key[0])]
        if key
        else [f"{quote(part, safe='')}={_key_literal(value)}" for part, value in keys.items()]
    )
    return PathSegment(f"{quote(name, safe='')}({','.join(parts)})")


def _key_literal(value: str | int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"a key part is text or an integer, not {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    return quote("'" + value.replace("'", "''") + "'", safe="'")


def not_processed(status: int, has_retry_after: bool) -> bool:
    """Whether an answer says the upstream did not process the request, so that sending it
    again is safe for any method: a 429 (RFC 6585: refused for the rate, before any work),
    or a 503 that says when to come back (``Retry-After``: the service refused it, rather
    than failing part way). A 502, a 504 or a bare 503 may come after the work was done."""
    return status == 429 or (status == 503 and has_retry_after)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"the upstream sent {name}, which is not JSON")


def _finite_float(text: str) -> float:
    """A number too large for a float would be infinity, which no entity may hold."""
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the upstream sent {text}, which is too large for a number")
    return number


class BudgetRetry(Retry):
    """urllib3's Retry with a bound on the total time spent sleeping between tries, and
    every method retried on an answer that says the request was not processed."""

    def __init__(
        self, *args: Any, wait_budget: float = 60.0, waited: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.wait_budget = wait_budget
        self.waited = waited
        self.planned_sleep = 0.0

    def new(self, **kwargs: Any) -> BudgetRetry:
        kwargs.setdefault("wait_budget", self.wait_budget)
        kwargs.setdefault("waited", self.waited)
        return super().new(**kwargs)  # type: ignore[return-value]

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        """urllib3 retries only ``allowed_methods`` (the idempotent ones); an answer that
        says the request was not processed is retried for every method."""
        if (
            self.total is not False
            and status_code in (self.status_forcelist or ())
            and not_processed(status_code, has_retry_after)
        ):
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def parse_retry_after(self, retry_after: str) -> float:
        """Seconds (fractions too, though HTTP says whole) or an HTTP date."""
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return super().parse_retry_after(retry_after)

    def next_sleep(self, response: Any = None) -> float:
        """What the next sleep will be: Retry-After when the upstream says, else backoff."""
        if response is not None and self.respect_retry_after_header:
            try:
                retry_after = self.get_retry_after(response)
            except InvalidHeader:
                retry_after = None  # a garbled header: fall back to our own backoff
            if retry_after is not None:
                return retry_after
        return self.get_backoff_time()

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> BudgetRetry:
        scope = deadlines.current()
        if scope is not None and scope.passed:
            raise MaxRetryError(_pool, url or "", DeadlinePassed(scope.reason()))  # type: ignore[arg-type]
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        assert isinstance(new, BudgetRetry)  # nosec B101: narrows the type; Retry.new keeps it
        budget = _budget.get()
        if budget is not None:
            new.wait_budget = budget
        delay = new.next_sleep(response)
        if new.waited + delay > new.wait_budget:
            reason = error or ResponseError(
                f"gave up after waiting {new.waited:.1f}s of a {new.wait_budget:.0f}s "
                f"retry budget (next wait would be {delay:.1f}s)"
            )
            raise MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]
        if scope is not None and delay >= scope.remaining():
            reason = error or ResponseError(
                f"gave up: the next wait ({delay:.1f}s) would pass the deadline ({scope.what})"
            )
            raise MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]
        new.planned_sleep = delay
        new.waited += delay
        return new

    def sleep(self, response: Any = None) -> None:
        if self.planned_sleep > 0:
            scope = deadlines.current()
            if scope is not None:
                scope.sleep(self.planned_sleep)  # ends early when the request is cut
            else:
                time.sleep(self.planned_sleep)


class UpstreamClient:
    """JSON over HTTP to the upstream; one instance (one pool) per process.

    Credentials: ``token`` alone means ``Authorization: Bearer <token>``; any other scheme
    is an ``auth`` object from ``service.framework.upstream_auth`` (API key, basic, OAuth2
    client credentials). ``pacer`` (``service.framework.rate_limit``) slows requests down
    when the upstream announces that its quota runs out. The credentials go to
    ``base_url``'s origin (scheme, host and port) only.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        auth: requests.auth.AuthBase | None = None,
        pacer: RateLimitPacer | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        retries: int = 10,
        retry_budget: float = 120,
        pool_size: int = 32,
        backoff_factor: float = 0.5,
        deadline: float = 180,
        max_answer_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin(self.base_url)
        self.timeout = (connect_timeout, read_timeout)
        self.deadline = deadline
        self.max_answer_bytes = max_answer_bytes
        self.session = Session(self.base_url)  # the proxies, from the environment, once
        # A CA bundle the environment names, read once too (trust_env is off).
        self.session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self.session.auth = _auth(token, auth)
        self.pacer = pacer
        self.session.headers["Accept"] = "application/json"
        retry = BudgetRetry(
            total=retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=IDEMPOTENT_METHODS,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor,
            backoff_max=30,
            raise_on_status=False,
            respect_retry_after_header=True,
            wait_budget=retry_budget,
        )
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        base_url: str,
        token: str | None = None,
        *,
        auth: requests.auth.AuthBase | None = None,
        pacer: RateLimitPacer | None = None,
    ) -> UpstreamClient:
        """A client with the framework's timeout, retry and pool settings."""
        return cls(
            base_url,
            token,
            auth=auth,
            pacer=pacer,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            retries=settings.upstream_retries,
            retry_budget=settings.upstream_feed_retry_budget,
            pool_size=settings.upstream_pool_size,
            deadline=settings.upstream_request_deadline,
            max_answer_bytes=settings.upstream_max_answer_bytes,
        )

    def url(self, *segments: str) -> str:
        return "/".join([self.base_url, *(segment(s) for s in segments)])

    def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200,),
        max_bytes: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request with retries; a status outside ``ok`` raises UpstreamError.

        Any method: ``"PATCH"`` and ``"POST"`` as ``"PUT"`` (``json_body`` is the body; the
        answer's JSON is ``parse_json(response, method)``), each retried as far as that is
        safe (the module's docstring). ``headers`` go with this request only, beside the
        client's own (``{"If-Match": "*"}``, ``{"Prefer": "return=minimal"}``). The answer's
        body is read whole (``response.content``), at most ``max_bytes`` (the client's
        ``max_answer_bytes`` by default), by the request's deadline."""
        limit = self.max_answer_bytes if max_bytes is None else max_bytes
        what = f"UPSTREAM_REQUEST_DEADLINE ({self.deadline:g}s)"
        with deadlines.deadline(self.deadline, what) as scope:
            if self.pacer is not None:
                self.pacer.wait()
            try:
                response = self._follow(method, url, params, json_body, headers)
                good = response.status_code in ok
                read_body(response, limit if good else ERROR_BODY_BYTES, scope, cut_off=not good)
                scope.check()  # a cut socket can end a head or a body early, but look whole
            except (requests.exceptions.RequestException, DeadlinePassed) as error:
                raise _failure(method, url, error, scope) from error
        memory.charge_answer(memory.estimate(response.content))
        if self.pacer is not None:
            self.pacer.observe(response.headers)
        if response.status_code not in ok and response.status_code in REFUSED_STATUSES:
            raise UpstreamRefused(
                f"the upstream refused the credentials: it answered {response.status_code} "
                f"to {method} {response.url}{_error_detail(response)}; check the token the "
                "connector sends",
                status=response.status_code,
                url=response.url,
            )
        if response.status_code not in ok:
            raise UpstreamError(
                f"upstream answered {response.status_code} to {method} {response.url}"
                f"{_error_detail(response)}",
                status=response.status_code,
                url=response.url,
            )
        return response

    def _follow(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        json_body: Any,
        headers: dict[str, str] | None,
    ) -> requests.Response:
        """Send, following a redirect only for a read, and only within the origin."""
        target, query = url, params
        for _ in range(MAX_REDIRECTS + 1):
            response = self.session.request(
                method,
                target,
                params=query,
                json=json_body,
                headers=headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            )
            if not response.is_redirect:
                return response
            response.close()  # its body is not read: it may be endless
            location = urljoin(response.url, response.headers["location"])
            status = response.status_code
            if method not in SAFE_METHODS:
                raise UpstreamError(
                    f"the upstream answered {status} to {method} {response.url}, a redirect "
                    f"to {location}: a write is never sent on, so nothing was written",
                    status=status,
                    url=response.url,
                )
            if origin(location) != self.origin:
                raise UpstreamError(
                    f"the upstream answered {status} to {method} {response.url}, a redirect "
                    f"to another origin ({origin_text(location)}): not followed, so no "
                    f"credential leaves {origin_text(self.base_url)}",
                    status=status,
                    url=response.url,
                )
            target, query = location, None
        raise UpstreamError(
            f"the upstream redirected {method} {url} more than {MAX_REDIRECTS} times",
            url=url,
        )

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_json_response(url, params)[0]

    def get_json_response(
        self, url: str, params: dict[str, Any] | None = None
    ) -> tuple[Any, requests.Response]:
        """``get_json`` with the response too, for what the headers say (a ``Link``)."""
        response = self.request("GET", url, params=params)
        return parse_json(response), response

    def close(self) -> None:
        self.session.close()


def parse_json(response: requests.Response, method: str = "GET") -> Any:
    """The answer's JSON; text that is not JSON (or nests deeper than a parser can go)
    is the upstream's error."""
    try:
        return jsontext.loads(response.content, _reject_constant, _finite_float)
    except RecursionError:
        problem = "JSON nested too deeply to parse"
    except ValueError as error:
        problem = f"invalid JSON: {error}"
    raise UpstreamError(
        f"upstream sent {problem} to {method} {response.url}",
        status=response.status_code,
        url=response.url,
    )


def _failure(
    method: str, url: str, error: BaseException, scope: deadlines.Deadline
) -> UpstreamError:
    """The UpstreamError for a request that got no usable answer."""
    reason = error.args[0] if error.args else error
    reason = getattr(reason, "reason", reason)
    if scope.passed:
        return UpstreamTimeout(
            f"upstream gave no complete answer in time: {method} {url}: {scope.reason()}",
            url=url,
        )
    if isinstance(reason, ReadTimeoutError) or isinstance(error, requests.exceptions.Timeout):
        return UpstreamTimeout(f"upstream timed out after retries: {method} {url}", url=url)
    return UpstreamError(
        f"upstream unreachable after retries: {method} {url}: {type(reason).__name__}",
        url=url,
    )


def _auth(token: str | None, auth: requests.auth.AuthBase | None) -> requests.auth.AuthBase:
    """A token alone is a bearer token (the Records API's scheme); else the auth object."""
    if (token is None) == (auth is None):
        raise TypeError("UpstreamClient takes a bearer token or an auth object, one of them")
    return auth if auth is not None else BearerToken(token)  # type: ignore[arg-type]


def _error_detail(response: requests.Response) -> str:
    """The upstream's own error text, short, when it sent one."""
    try:
        body = jsontext.loads(response.content, _reject_constant)
    except (ValueError, RecursionError):
        return ""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f": {mask(body['error'])[:200]}"  # masked whole, then cut
    return ""
