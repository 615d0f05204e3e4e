"""How the connector proves who it is to the upstream: ready auth objects for UpstreamClient.

Each is a ``requests.auth.AuthBase``: pass one as ``UpstreamClient(base_url, auth=...)``
(or ``UpstreamClient.from_settings(settings, base_url, auth=...)``). A bare token,
``UpstreamClient(base_url, token)``, is ``BearerToken(token)``.

| upstream wants                          | object                                        |
| --------------------------------------- | --------------------------------------------- |
| ``Authorization: Bearer <token>``       | ``BearerToken(token)``                        |
| a key in a header (``X-Api-Key: <key>``) | ``ApiKey(key, header="X-Api-Key")``           |
| a key in the query (``?api_key=<key>``)  | ``ApiKey(key, query="api_key")``              |
| HTTP basic                              | ``Basic(username, password)``                 |
| OAuth2 client credentials               | ``OAuth2ClientCredentials(token_url, id, secret)`` |

Secrets never reach a log line, an exception's text or a ``repr``: each block registers
what it sends (``service.framework.masking``), so an upstream that quotes it back is
masked too. No credential leaves the origin it was sent to: the client follows no redirect
to another origin, and the blocks' own hooks (the API key's, OAuth2's resend after a 401)
act on the first origin only. The credentials a fork needs are settings it declares in its
adapter module (``docs/building-blocks.md``).
"""

from __future__ import annotations

import base64
import email.utils
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus
from urllib.parse import urljoin

import requests
from requests.auth import AuthBase
from requests.auth import HTTPBasicAuth

from service.framework import deadlines
from service.framework import masking
from service.framework.bounded import Session
from service.framework.bounded import origin
from service.framework.bounded import read_body
from service.framework.deadlines import DeadlineAdapter
from service.framework.deadlines import DeadlinePassed
from service.framework.upstream_errors import UpstreamError

log = logging.getLogger(__name__)

__all__ = ["ApiKey", "Basic", "BearerToken", "OAuth2ClientCredentials"]

TOKEN_ANSWER_BYTES = 65536  # a token endpoint's answer: a few hundred bytes, never more
#: A token endpoint's answers that are waited out and asked again: it is busy or limits the
#: rate. Asking for a token twice changes nothing upstream, so any of them is safe to retry.
TOKEN_RETRY_STATUSES = frozenset({429, 503})
# RFC 6750's b64token, as a token may appear in an Authorization header.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class BearerToken(AuthBase):
    """``Authorization: Bearer <token>``. requests drops the header on a redirect to
    another host."""

    def __init__(self, token: str) -> None:
        self._token = token
        masking.register(token)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerToken(token=<hidden>)"


class ApiKey(AuthBase):
    """An API key in a header (``header="X-Api-Key"``) or a query parameter
    (``query="api_key"``): exactly one of the two.

    In a header, the key is not sent on when the upstream redirects to another origin
    (requests does that for ``Authorization`` only). In the query, the key is masked in
    ``response.url``, so the client's error messages do not show it; prefer a header
    where the upstream allows one: a query string reaches access logs, and urllib3's
    DEBUG log lines.
    """

    def __init__(self, key: str, *, header: str | None = None, query: str | None = None) -> None:
        if (header is None) == (query is None):
            raise TypeError("ApiKey takes header= or query=, one of them")
        self._key = key
        self.header = header
        self.query = query
        masking.register(key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.header is not None:
            request.headers[self.header] = self._key
            request.register_hook("response", _forget_on_cross_origin_redirect(self.header))
        else:
            assert self.query is not None  # nosec B101: narrows the type; __init__ needs one
            request.prepare_url(request.url, {self.query: self._key})
            request.register_hook("response", self._mask_url)
        return request

    def _mask_url(self, response: requests.Response, **_: Any) -> requests.Response:
        response.url = mask_query(response.url, self.query or "")
        return response

    def __repr__(self) -> str:
        where = f"header={self.header!r}" if self.header is not None else f"query={self.query!r}"
        return f"ApiKey(key=<hidden>, {where})"


class Basic(HTTPBasicAuth):
    """HTTP basic auth (requests' own), with a ``repr`` that hides the password."""

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username, password)
        masking.register(password)
        masking.register(_basic(username, password))

    def __repr__(self) -> str:
        return f"Basic(username={self.username!r}, password=<hidden>)"


class OAuth2ClientCredentials(AuthBase):
    """OAuth2's client credentials grant (RFC 6749 section 4.4): a bearer token fetched
    from ``token_url`` with the client's id and secret, cached, fetched again
    ``refresh_margin`` seconds before it expires, and once more when the upstream answers
    401 to it (the request is then sent once again, with the new token).

    ``secret_in="header"`` sends the client's credentials as HTTP basic (the RFC's
    recommendation, ``client_secret_basic``); ``"body"`` sends them as form fields
    (``client_secret_post``). ``extra`` adds form fields (an ``audience``, a ``resource``).
    Thread-safe: one fetch at a time, and a 401 seen by many threads at once fetches one
    new token, not one each. A 429 or 503 from the token endpoint is waited out
    (``Retry-After``, else a short backoff) and asked again, up to ``retries`` times, all of
    it within the token request's bound (``timeout``'s two parts added): a wait that would
    pass it fails at once. Failures raise ``UpstreamError`` naming the token URL and the
    status, never the secret or the token.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        extra: dict[str, str] | None = None,
        secret_in: str = "header",
        refresh_margin: float = 60.0,
        timeout: tuple[float, float] = (10.0, 30.0),
        retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if secret_in not in ("header", "body"):
            raise ValueError('secret_in must be "header" or "body"')
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.extra = dict(extra or {})
        self.secret_in = secret_in
        self.refresh_margin = refresh_margin
        self.timeout = timeout
        self.retries = retries
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at: float | None = None
        self._session = Session(token_url)  # no ~/.netrc credentials in place of ours
        adapter = DeadlineAdapter()  # every token request under a deadline too
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        masking.register(client_secret)
        masking.register(_basic(quote_plus(client_id), quote_plus(client_secret)))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", _ResendOn401(self, request.url or ""))
        return request

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, "
            f"client_id={self.client_id!r}, client_secret=<hidden>)"
        )

    def token(self) -> str:
        """The current access token, fetched when there is none or it is about to expire."""
        with self._lock:
            if self._token is None or (
                self._expires_at is not None and self._clock() >= self._expires_at
            ):
                self._fetch()
            assert self._token is not None  # nosec B101: narrows the type; _fetch sets it or raises
            return self._token

    def forget(self, rejected: str | None = None) -> None:
        """Drop the cached token (only if it is ``rejected``, when given: another thread
        may have fetched a new one already)."""
        with self._lock:
            if rejected is None or rejected == self._token:
                self._token = None

    def _fetch(self) -> None:
        form = {"grant_type": "client_credentials", **self.extra}
        if self.scope:
            form["scope"] = self.scope
        auth = None
        if self.secret_in == "header":  # nosec B105: where the secret goes, not a password
            # RFC 6749 2.3.1: form-encode both before they go into basic auth.
            auth = HTTPBasicAuth(quote_plus(self.client_id), quote_plus(self._client_secret))
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._client_secret
        limit = sum(self.timeout)
        bound = f"the token request's timeout ({limit:g}s)"
        late = ""
        try:
            with deadlines.deadline(limit, bound) as scope:
                for attempt in range(self.retries + 1):
                    started = self._clock()
                    response = self._session.post(
                        self.token_url,
                        data=form,
                        auth=auth,
                        headers={"Accept": "application/json"},
                        timeout=self.timeout,
                        allow_redirects=False,
                        stream=True,
                    )
                    if response.status_code not in TOKEN_RETRY_STATUSES:
                        break
                    if attempt == self.retries:
                        late = f" (asked {attempt + 1} times)"
                        break
                    wait = _retry_after(response)
                    wait = min(0.5 * 2**attempt, 8.0) if wait is None else wait
                    if wait >= scope.remaining():
                        late = f" (asking again in {wait:g}s would pass {bound})"
                        break
                    response.close()  # its body is not read: the answer is the next one's
                    scope.sleep(wait)
                read_body(response, TOKEN_ANSWER_BYTES, scope, setting="the token answer's limit")
        except (requests.exceptions.RequestException, DeadlinePassed) as error:
            raise UpstreamError(
                f"the token endpoint is unreachable: POST {self.token_url}: {type(error).__name__}",
                url=self.token_url,
            ) from None  # the chained error would carry the request, form and all
        if response.status_code != 200:
            raise UpstreamError(
                f"the token endpoint answered {response.status_code} to POST {self.token_url}"
                f"{_oauth_error(response)}{late}",
                status=response.status_code,
                url=self.token_url,
            )
        try:
            body = response.json()
        except (ValueError, RecursionError):
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        token_type = body.get("token_type", "bearer") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or str(token_type).lower() != "bearer":
            raise UpstreamError(
                f"the token endpoint's answer holds no bearer access_token: POST {self.token_url}",
                status=response.status_code,
                url=self.token_url,
            )
        if not _TOKEN.fullmatch(token):
            raise UpstreamError(
                "the token endpoint's access_token holds characters a token cannot have "
                f"(a line break, a space): POST {self.token_url}",
                status=response.status_code,
                url=self.token_url,
            )
        masking.register(token, transient=True)
        lifetime = body.get("expires_in")  # type: ignore[union-attr]
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        self._token = token
        if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0:
            margin = min(self.refresh_margin, lifetime / 2)
            self._expires_at = started + lifetime - margin
            log.info("fetched an upstream access token, valid for %ds", lifetime)
        else:
            self._expires_at = None  # no lifetime given: kept until the upstream answers 401
            log.info("fetched an upstream access token, lifetime not given")


class _ResendOn401:
    """requests' response hook for one request: on a 401 from the origin the request was
    authorized for, a new token and the same request once more (as requests' own digest
    auth resends). On any other origin (a redirect that something followed) it does
    nothing: a new token is never sent there."""

    def __init__(self, auth: OAuth2ClientCredentials, url: str) -> None:
        self.auth = auth
        self.origin = origin(url)

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or origin(response.url) != self.origin:
            return response
        if origin(response.request.url or "") != self.origin:
            return response
        sent = response.request.headers.get("Authorization", "")
        self.auth.forget(sent.removeprefix("Bearer "))
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {self.auth.token()}"
        # Without this hook, so a second 401 is the answer instead of a loop.
        retry.hooks = {
            name: [hook for hook in hooks if not isinstance(hook, _ResendOn401)]
            for name, hooks in response.request.hooks.items()
        }
        if response.raw is not None:
            response.raw.close()  # its body is not read: the answer is the retry's
        assert response.connection is not None  # nosec B101: narrows the type; a sent response has one
        again: requests.Response = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


def _retry_after(response: requests.Response) -> float | None:
    """The seconds a ``Retry-After`` asks for (a number, or an HTTP date); None without a
    header that parses."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def _basic(username: str, password: str) -> str:
    """What HTTP basic auth sends for these credentials (requests' encoding)."""
    return base64.b64encode(f"{username}:{password}".encode("latin1", "replace")).decode()


def mask_query(url: str, name: str) -> str:
    """``url`` with the value of query parameter ``name`` replaced by ``<hidden>``."""
    key = re.escape(quote_plus(name))
    return re.sub(rf"([?&]{key}=)[^&#]*", r"\g<1><hidden>", url)


def _forget_on_cross_origin_redirect(header: str) -> Callable[..., requests.Response]:
    """A response hook: before requests follows a redirect to another origin, take
    ``header`` off the request it copies for the next hop."""

    def hook(response: requests.Response, **_: Any) -> requests.Response:
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if origin(target) != origin(response.request.url or ""):
                response.request.headers.pop(header, None)
        return response

    return hook


def _oauth_error(response: requests.Response) -> str:
    """RFC 6749's error code (``invalid_client``), when the answer has one: a code only,
    never free text, which could echo what was sent."""
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,64}", code):
        return f": {code}"
    return ""
