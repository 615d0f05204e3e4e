"""The one error path (``service/framework/errors.py``): what Sesam and an operator get for
each failure, whichever route raised it: a JSON body ``{"error", "detail"}`` with the
status's own title, the headers the failure set, one log line for an upstream failure and
one traceback for a bug."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed

from service.framework.errors import ApiError
from service.framework.errors import BadGateway
from service.framework.errors import BadRequest
from service.framework.errors import ClientGone
from service.framework.errors import Conflict
from service.framework.errors import NotFound
from service.framework.errors import PayloadTooLarge
from service.framework.errors import RequestTimeout
from service.framework.errors import ServiceUnavailable
from service.framework.errors import Unauthorized
from service.framework.errors import UnsupportedMediaType
from service.framework.errors import UpstreamContractError
from service.framework.errors import UpstreamTimedOut
from service.framework.errors import register_error_handlers
from service.framework.errors import upstream_failure
from service.framework.upstream_errors import UpstreamError
from service.framework.upstream_errors import UpstreamTimeout


def answer(failure: Callable[[], Exception]) -> tuple[int, dict, dict]:
    """The status, JSON body and headers of a route that raises ``failure()``."""
    app = Flask(__name__)
    register_error_handlers(app)

    @app.get("/fail")
    def fail() -> str:
        raise failure()

    response = app.test_client().get("/fail")
    assert response.content_type == "application/json"
    return response.status_code, response.get_json(), dict(response.headers)


@pytest.mark.parametrize(
    ("error", "status", "title"),
    [
        (BadRequest, 400, "Bad Request"),
        (Unauthorized, 401, "Unauthorized"),
        (NotFound, 404, "Not Found"),
        (RequestTimeout, 408, "Request Timeout"),
        (Conflict, 409, "Conflict"),
        (PayloadTooLarge, 413, "Request Entity Too Large"),
        (UnsupportedMediaType, 415, "Unsupported Media Type"),
        (ClientGone, 499, "Client Closed Request"),
        (ApiError, 500, "Internal Server Error"),
        (BadGateway, 502, "Bad Gateway"),
        (ServiceUnavailable, 503, "Service Unavailable"),
        (UpstreamTimedOut, 504, "Upstream Timeout"),
    ],
)
def test_each_failure_is_its_status_with_its_title_and_the_detail(error, status, title):
    got, body, _ = answer(lambda: error("what happened"))
    assert (got, body) == (status, {"error": title, "detail": "what happened"})


def test_a_client_gone_says_so_without_being_told():
    _, body, _ = answer(ClientGone)
    assert body["detail"] == "the client closed the connection"


def test_a_failures_headers_and_extra_keys_reach_sesam():
    status, body, headers = answer(
        lambda: ServiceUnavailable("busy", headers={"Retry-After": "5"}, failed=["a"])
    )
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert body == {"error": "Service Unavailable", "detail": "busy", "failed": ["a"]}


def test_werkzeugs_own_failures_are_json_and_keep_their_headers():
    status, body, headers = answer(lambda: MethodNotAllowed(valid_methods=["POST"]))
    assert status == 405
    assert body["error"] == "Method Not Allowed"
    assert body["detail"]
    assert headers["Allow"] == "POST"
    assert headers["Content-Type"] == "application/json"


class Teapot(HTTPException):
    code = 418  # and no description


def test_a_werkzeug_failure_without_a_description_has_an_empty_detail():
    status, body, _ = answer(Teapot)
    assert status == 418
    assert body == {"error": "I'm a teapot", "detail": ""}


def test_an_upstream_failure_is_a_502_with_its_status(caplog):
    caplog.set_level(logging.ERROR, logger="service.framework.errors")
    status, body, _ = answer(lambda: UpstreamError("upstream answered 503 to GET /x", status=503))
    assert status == 502
    assert body == {
        "error": "Bad Gateway",
        "detail": "upstream answered 503 to GET /x",
        "upstream_status": 503,
    }
    assert [r.getMessage() for r in caplog.records] == [
        "upstream failure: upstream answered 503 to GET /x"
    ]


def test_an_upstream_timeout_is_a_504_without_a_status():
    status, body, _ = answer(lambda: UpstreamTimeout("GET /x timed out"))
    assert status == 504
    assert body == {"error": "Upstream Timeout", "detail": "GET /x timed out"}


def test_an_upstream_404_is_a_404_naming_the_collection():
    status, body, _ = answer(lambda: UpstreamError("GET /nosuch: 404", status=404))
    assert status == 404
    assert body == {
        "error": "Not Found",
        "detail": "the upstream has no such collection: GET /nosuch: 404",
    }


def test_an_upstream_that_breaks_its_contract_is_a_502_logged_once(caplog):
    caplog.set_level(logging.ERROR, logger="service.framework.errors")
    status, body, _ = answer(lambda: UpstreamContractError("records out of order"))
    assert (status, body) == (502, {"error": "Bad Gateway", "detail": "records out of order"})
    assert [r.getMessage() for r in caplog.records] == [
        "upstream broke its contract: records out of order"
    ]


def test_a_bug_is_a_500_that_points_to_the_log_where_its_traceback_is(caplog):
    caplog.set_level(logging.ERROR, logger="service.framework.errors")
    status, body, _ = answer(lambda: KeyError("secret detail"))
    assert status == 500
    assert body == {"error": "Internal Server Error", "detail": "the connector failed; see its log"}
    assert [r.getMessage() for r in caplog.records] == ["unhandled error"]
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize(("timeout", "status"), [(True, 504), (False, 502)])
def test_upstream_failure_is_504_only_for_a_timeout(timeout, status):
    assert upstream_failure(timeout, "x").status == status
