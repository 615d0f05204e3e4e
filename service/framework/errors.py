"""The one error path: every answer other than 2xx is an exception raised somewhere and
turned into JSON here, ``{"error": ..., "detail": ...}`` with its status and headers.

An upstream failure maps to its status in one place, ``upstream_failure``: a timeout is a
504, anything else a 502.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask import Response
from flask import jsonify
from werkzeug.exceptions import HTTPException

from service.framework.masking import mask
from service.framework.upstream_errors import UpstreamError
from service.framework.upstream_errors import UpstreamTimeout

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 2xx. ``extra`` becomes more keys of the JSON body."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ApiError):
    status = 400
    title = "Bad Request"


class Unauthorized(ApiError):
    status = 401
    title = "Unauthorized"


class NotFound(ApiError):
    status = 404
    title = "Not Found"


class Conflict(ApiError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    title = "Request Entity Too Large"


class UnsupportedMediaType(ApiError):
    status = 415
    title = "Unsupported Media Type"


class RequestTimeout(ApiError):
    status = 408
    title = "Request Timeout"


class ServiceUnavailable(ApiError):
    status = 503
    title = "Service Unavailable"


class BadGateway(ApiError):
    status = 502
    title = "Bad Gateway"


class UpstreamTimedOut(ApiError):
    status = 504
    title = "Upstream Timeout"


class ClientGone(ApiError):
    """Sesam closed the connection before its answer was complete: nothing more is read
    or written for it (499, as nginx logs it; nobody receives it)."""

    status = 499
    title = "Client Closed Request"

    def __init__(self, detail: str = "the client closed the connection") -> None:
        super().__init__(detail)


class UpstreamContractError(Exception):
    """The upstream broke a promise the connector relies on (its order, a field's form):
    a 502, and a feed that had begun streaming breaks instead of ending. The message may
    quote the upstream's data: secrets are masked in it."""

    def __init__(self, message: str) -> None:
        super().__init__(mask(message))


def upstream_failure(timeout: bool, detail: str, **extra: Any) -> ApiError:
    """The status of an upstream failure: 504 when it timed out, else 502."""
    return (UpstreamTimedOut if timeout else BadGateway)(detail, **extra)


def json_error(status: int, error: str, detail: str, **extra: Any) -> Response:
    response = jsonify({"error": error, "detail": detail, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        response = json_error(error.status, error.title, error.detail, **error.extra)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        """Werkzeug's own (an unknown route, a wrong method), with their headers kept."""
        response = json_error(error.code or 500, error.name, error.description or "")
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(UpstreamError)
    def upstream_error(error: UpstreamError) -> Response:
        log.error("upstream failure: %s", error)
        if error.status == 404:
            return api_error(NotFound(f"the upstream has no such collection: {error}"))
        extra = {} if isinstance(error, UpstreamTimeout) else {"upstream_status": error.status}
        return api_error(upstream_failure(isinstance(error, UpstreamTimeout), str(error), **extra))

    @app.errorhandler(UpstreamContractError)
    def contract_error(error: UpstreamContractError) -> Response:
        log.error("upstream broke its contract: %s", error)
        return api_error(BadGateway(str(error)))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return api_error(ApiError("the connector failed; see its log"))
