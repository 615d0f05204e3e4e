"""JSON errors everywhere: ``{"error": ..., "detail": ...}`` with the HTTP status kept."""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError

from service.framework.feed import FeedError
from service.framework.upstream import UpstreamError
from service.framework.upstream import UpstreamTimeout

log = logging.getLogger(__name__)


def json_error(status: int, error: str, detail: str, **extra: object) -> Response:
    response = jsonify({"error": error, "detail": detail, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = json_error(error.code or 500, error.name, error.description or "")
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(UpstreamError)
    def upstream_error(error: UpstreamError) -> Response:
        log.error("upstream failure: %s", error)
        if isinstance(error, UpstreamTimeout):
            return json_error(504, "Upstream Timeout", str(error))
        if error.status == 404:
            return json_error(404, "Not Found", f"the upstream has no such collection: {error}")
        return json_error(502, "Bad Gateway", str(error), upstream_status=error.status)

    @app.errorhandler(FeedError)
    def feed_error(error: FeedError) -> Response:
        log.error("feed failure: %s", error)
        return json_error(502, "Bad Gateway", str(error))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return json_error(500, InternalServerError.name, "the connector failed; see its log")
