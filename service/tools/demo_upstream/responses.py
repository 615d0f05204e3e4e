"""JSON in and out of the demo upstreams' handlers, errors included."""

from __future__ import annotations

import json
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from service.tools.demo_upstream.store import InvalidRequest


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> flask.Response:
    """One json.dumps per response: pages are large and jsonify's key sorting is wasted."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return flask.Response(text, status=status, headers=headers, mimetype="application/json")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> flask.Response:
    return json_response({"error": message}, status, headers)


def register_error_handlers(app: flask.Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        """JSON everywhere, keeping the status and headers such as Allow."""
        response = exc.get_response()
        response.set_data(json.dumps({"error": exc.description or exc.name}))
        response.mimetype = "application/json"
        return response

    @app.errorhandler(InvalidRequest)
    def invalid_request(exc: InvalidRequest) -> flask.Response:
        return error_response(400, str(exc))


def request_json() -> Any:
    """The body as JSON; an empty body is None, a malformed one a 400."""
    if not flask.request.get_data():
        return None
    try:
        return json.loads(flask.request.get_data())
    except ValueError as exc:
        raise InvalidRequest("the body is not valid UTF-8 JSON") from exc
