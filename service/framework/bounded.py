"""Reading an untrusted answer: bounded in bytes and in time, and where it may lead.

The upstream client (``service.framework.upstream``) and the OAuth2 token block
(``service.framework.upstream_auth``) read every answer through ``read_body``: at most a
stated number of bytes on the wire and after decompression (a small gzip body can inflate
a thousandfold), checked against the request's deadline between pieces; past the limit the
answer is refused, or, for an error's text, cut. Both send through a ``Session``, which
reads no redirect's body by itself. ``origin`` is what a credential is bound to: scheme,
host and port.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import DecodeError
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError
from urllib3.exceptions import SSLError

from service.framework.deadlines import Deadline
from service.framework.upstream_errors import AnswerTooLarge

PIECE_BYTES = 1 << 20  # an answer is read in pieces of this size, counted as they come


class Session(requests.Session):
    """requests' Session for ``url``, with the environment's proxies for it read once, here:
    with ``trust_env`` requests reads the proxy variables on every request (a fifth of a
    sink write's CPU) and may put a matching ~/.netrc entry in place of the credentials.

    And without its redirect resolver: the framework follows redirects itself, or not at
    all. With ``allow_redirects=False`` requests still runs the resolver once, to offer
    ``Response.next``, and the resolver first reads the redirect's whole body into
    memory: an endless one (or one of gigabytes) before any limit is checked."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.trust_env = False
        self.proxies = requests.utils.get_environ_proxies(url)

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Any:
        return iter(())


def read_body(
    response: requests.Response,
    limit: int,
    scope: Deadline | None,
    *,
    cut_off: bool = False,
    setting: str = "UPSTREAM_MAX_ANSWER_BYTES",
) -> None:
    """Read the whole body into ``response.content``, at most ``limit`` bytes on the wire
    and after decompression, and hand the connection back to the pool.

    In one call when the upstream declares a length within the limit and sends the body
    as it is (most pages: one call instead of one per 10 KB, as ``requests`` would); else
    in pieces, each counted, with the deadline checked between them. Past the limit the
    answer is refused (``AnswerTooLarge``, naming ``setting``), or, with ``cut_off`` (an
    error's text), cut there; either way the connection is closed, not drained. Failures
    become the exceptions ``requests`` raises for them.
    """
    if response._content is not False:
        return  # read already (a transport adapter or a hook did)
    raw = response.raw
    declared = response.headers.get("Content-Length", "")
    plain = response.headers.get("Content-Encoding", "identity").lower() == "identity"
    whole = False
    content = b""
    try:
        if declared.isdigit() and int(declared) > limit and not cut_off:
            raise too_large(response, limit, setting)  # declared: not a byte of it is read
        if plain and not raw.chunked and declared.isdigit() and int(declared) <= limit:
            content = raw.read(decode_content=True)
            whole = True
        else:
            pieces: list[bytes] = []
            size = 0
            while True:
                piece = raw.read(min(PIECE_BYTES, limit + 1 - size), decode_content=True)
                if not piece:
                    whole = True
                    break
                size += len(piece)
                pieces.append(piece)
                if size > limit or raw.tell() > limit:
                    if not cut_off:
                        raise too_large(response, limit, setting)
                    break
                if scope is not None:
                    scope.check()
            content = b"".join(pieces)[:limit]
    except ProtocolError as error:
        raise requests.exceptions.ChunkedEncodingError(error) from error
    except DecodeError as error:
        raise requests.exceptions.ContentDecodingError(error) from error
    except ReadTimeoutError as error:
        raise requests.exceptions.ConnectionError(error) from error
    except SSLError as error:
        raise requests.exceptions.SSLError(error) from error
    finally:
        if whole:
            raw.release_conn()
        else:
            response.close()  # what is left of the body is not read: close, not pool
    # requests' own fields for a body it has read: ``content``, ``text`` and ``json()``
    # answer from it.
    response._content = content
    response._content_consumed = True


def too_large(response: requests.Response, limit: int, setting: str) -> AnswerTooLarge:
    method = response.request.method if response.request is not None else "?"
    return AnswerTooLarge(
        f"the upstream's answer to {method} {response.url} is larger than {setting} "
        f"({limit} bytes, on the wire or decompressed): not read further; ask for smaller "
        "pages (a lower page size), or raise the limit and the memory budget with it",
        status=response.status_code,
        url=response.url,
    )


def origin(url: str) -> tuple[str, str, int | None]:
    """A URL's origin: scheme, host and port (the scheme's default when not given)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin anything shares
        port = -1
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def origin_text(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def same_origin(url: Any, base: str) -> bool:
    """Whether ``url`` is on ``base``'s origin, and carries no credentials of its own."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return origin(url) == origin(base) and parts.username is None and parts.password is None
