"""The admin API, on the main listener under ``/_hostile/``, without auth: what a test uses
to seed records, set rules, and read the log and the stats. Its own requests are neither
logged nor counted: the log and the stats are what the connector did."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from service.tools.hostile_upstream.records import Invalid
from service.tools.hostile_upstream.rules import RuleError
from service.tools.hostile_upstream.rules import parse_rules
from service.tools.hostile_upstream.state import State
from service.tools.hostile_upstream.wire import Reply
from service.tools.hostile_upstream.wire import Request
from service.tools.hostile_upstream.wire import error_reply
from service.tools.hostile_upstream.wire import json_reply

PREFIX = "/_hostile/"


def answer(state: State, request: Request) -> Reply:
    try:
        return _route(state, request)
    except (Invalid, RuleError, ValueError) as error:
        return error_reply(400, str(error))


def _route(state: State, request: Request) -> Reply:
    route = request.path.removeprefix(PREFIX)
    method = request.method
    if route == "health" and method == "GET":
        return json_reply(200, {"status": "ok", **state.urls})
    if route == "reset" and method == "POST":
        with state.lock:
            state.reset()
        return json_reply(200, {"reset": True})
    if route.startswith("records/") and method in ("GET", "POST"):
        return _records(state, route.removeprefix("records/"), method, request.body)
    if route == "rules":
        return _rules(state, method, request.body)
    if route == "log" and method in ("GET", "DELETE"):
        listener = parse_qs(request.query).get("listener", [None])[0]
        with state.lock:
            if method == "DELETE":
                state.log.clear()
            entries = [e for e in state.log if listener in (None, e["listener"])]
        return json_reply(200, entries)
    if route == "stats" and method in ("GET", "DELETE"):
        with state.lock:
            if method == "DELETE":
                state.clear_stats()
            return json_reply(200, state.stats())
    if route == "oauth" and method in ("GET", "PUT"):
        with state.lock:
            if method == "PUT":
                state.oauth.configure(_body(request.body))
            return json_reply(200, state.oauth.describe())
    if route == "oauth/tokens" and method == "DELETE":
        with state.lock:
            state.oauth.issued.clear()
            return json_reply(200, state.oauth.describe())
    return error_reply(404, f"no admin endpoint {method} {request.path}")


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise Invalid("the body is not JSON") from None


def _records(state: State, name: str, method: str, raw: bytes) -> Reply:
    with state.lock:
        if method == "POST":
            given = _body(raw)
            return json_reply(200, {"seeded": state.store.seed(name, given)})
        if not state.store.exists(name):
            return error_reply(404, f"unknown collection {name!r}")
        return json_reply(200, state.store.dump(name))


def _rules(state: State, method: str, raw: bytes) -> Reply:
    """``PUT`` replaces the rules, ``POST`` adds to them, ``DELETE`` clears them; every
    answer is the rules now, each with how often it answered."""
    if method in ("PUT", "POST"):
        rules = parse_rules(_body(raw))  # outside the lock: a gzip bomb takes a second
        with state.lock:
            state.rules = rules if method == "PUT" else state.rules + rules
    elif method == "DELETE":
        with state.lock:
            state.rules = []
    elif method != "GET":
        return error_reply(405, "rules take GET, PUT, POST or DELETE")
    with state.lock:
        return json_reply(200, [rule.describe() for rule in state.rules])
