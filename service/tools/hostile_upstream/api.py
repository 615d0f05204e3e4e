"""The default answers, when no rule takes a request: a minimal, correct Records API
(bearer token or OAuth2 token; list pages, read, write, delete) and its token endpoint.
Both listeners serve it from the same records: the other origin is a working copy of the
API, so that a credential or a write that reaches it is seen to work, and to be logged."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs
from urllib.parse import unquote

from service.tools.hostile_upstream.oauth import OAuth
from service.tools.hostile_upstream.records import COLLECTION
from service.tools.hostile_upstream.records import Invalid
from service.tools.hostile_upstream.records import Store
from service.tools.hostile_upstream.records import parse_limit
from service.tools.hostile_upstream.wire import Reply
from service.tools.hostile_upstream.wire import Request
from service.tools.hostile_upstream.wire import error_reply
from service.tools.hostile_upstream.wire import json_reply

TOKEN_PATH = "/oauth/token"


def answer(request: Request, store: Store, oauth: OAuth, token: str) -> Reply:
    """The Records API's answer to ``request`` (the caller holds the state's lock)."""
    if request.path == TOKEN_PATH:
        return oauth.token_endpoint(request)
    if not _authorized(request, oauth, token):
        return error_reply(401, "missing or wrong bearer token", [("WWW-Authenticate", "Bearer")])
    try:
        return _route(request, store)
    except Invalid as error:
        return error_reply(400, str(error))


def _authorized(request: Request, oauth: OAuth, token: str) -> bool:
    scheme, _, given = (request.header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    given = given.strip()
    return hmac.compare_digest(given.encode(), token.encode()) or oauth.accepts(given)


def _route(request: Request, store: Store) -> Reply:
    parts = request.path.split("/")
    if len(parts) not in (2, 3) or parts[0] or not COLLECTION.fullmatch(parts[1]):
        return error_reply(404, f"no such path: {request.path}")
    name = parts[1]
    if not store.exists(name):
        return error_reply(404, f"unknown collection {name!r}")
    if len(parts) == 2:
        if request.method != "GET":
            return error_reply(405, "a collection is read with GET", [("Allow", "GET")])
        query = {k: v[0] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
        limit = parse_limit(query.get("limit"))
        data, cursor = store.page(name, limit, query.get("cursor"), query.get("updated_since"))
        return json_reply(200, {"data": data, "next_cursor": cursor})
    try:
        record_id = unquote(parts[2], errors="strict")
    except UnicodeDecodeError:
        raise Invalid("the id is not percent-encoded UTF-8") from None
    if not record_id:
        return error_reply(404, f"no such path: {request.path}")
    if request.method == "GET":
        record = store.get(name, record_id)
        if record is None:
            return error_reply(404, f"no record {record_id!r} in {name!r}")
        return json_reply(200, record)
    if request.method == "PUT":
        return json_reply(200, store.put(name, record_id, _json(request.body)))
    if request.method == "DELETE":
        if not store.delete(name, record_id):
            return error_reply(404, f"no record {record_id!r} in {name!r}")
        return Reply(204)
    return error_reply(405, "a record takes GET, PUT or DELETE", [("Allow", "GET, PUT, DELETE")])


def _json(body: bytes) -> object:
    """Strict JSON: NaN and Infinity are not JSON, and would go out again as such."""

    def refuse(constant: str) -> None:
        raise Invalid(f"{constant} is not JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except ValueError as error:
        if isinstance(error, Invalid):
            raise
        raise Invalid("the body is not JSON") from None
