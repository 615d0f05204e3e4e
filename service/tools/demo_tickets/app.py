"""The demo Tickets API as a Flask app: the API a connector calls, and ``/_admin`` for tests.

Small on purpose: every list request filters and sorts the collection afresh (fine for
the thousands of tickets the tests use). The JSON helpers, the fault settings and the
``/_admin`` switches that do not depend on a ticket's shape are the Records demo's
(``service.tools.demo_upstream``), so both demos misbehave the same way.
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import re
import threading
import time
from typing import Any

import flask
from werkzeug.routing import BaseConverter

from service.tools.demo_upstream import admin
from service.tools.demo_upstream.faults import changed
from service.tools.demo_upstream.faults import due_change
from service.tools.demo_upstream.faults import fault_response
from service.tools.demo_upstream.faults import no_faults
from service.tools.demo_upstream.faults import require_keys
from service.tools.demo_upstream.faults import spend_counted_fault
from service.tools.demo_upstream.faults import write_fault
from service.tools.demo_upstream.responses import error_response
from service.tools.demo_upstream.responses import json_response
from service.tools.demo_upstream.responses import register_error_handlers
from service.tools.demo_upstream.responses import request_json
from service.tools.demo_upstream.store import InvalidRequest

Ticket = dict[str, Any]

API_ENDPOINTS = frozenset({"list_tickets", "get_ticket", "put_ticket", "delete_ticket"})
RESERVED_FIELDS = ("id", "modified_at", "deleted")
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_SUBJECTS = ("Printer on fire", "Cannot log in", "Invoice missing", "VPN drops", "New laptop")


def format_time(seconds: int) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ``: fixed width, so text order is time order."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> int | None:
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        return None
    try:
        moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(moment.timestamp())


class Clock:
    """Whole seconds, as the API's times are: writes within one second share its time.

    ``tick`` makes it coarser still; ``freeze`` stops it (every write gets one time until
    it is advanced or thawed). It never goes back before the latest time it handed out
    or saw inserted.
    """

    def __init__(self) -> None:
        self.last = 0
        self.tick = 1
        self.frozen: int | None = None

    def now(self) -> int:
        if self.frozen is not None:
            return self.frozen
        now = int(time.time())
        return now - now % self.tick

    def next(self) -> str:
        self.last = max(self.now(), self.last)
        return format_time(self.last)

    def thaw(self) -> None:
        self.tick, self.frozen = 1, None

    def describe(self) -> dict[str, Any]:
        return {
            "now": format_time(self.now()),
            "frozen": self.frozen is not None,
            "tick": self.tick,
        }


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class ResourceConverter(BaseConverter):
    """Collection names; ``_admin`` can never be one."""

    regex = "[a-z][a-z0-9-]*"


class State:
    """The tickets of every collection, the faults, the clock and the counts, behind one lock."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.clock = Clock()
        self.collections: dict[str, dict[int, Ticket]] = {}
        self.faults: dict[str, Any] = {}
        self.stats: dict[str, int] = {}

    def reset(self, seed: bool) -> None:
        self.collections = {"tickets": seeded_tickets()} if seed else {}
        for tickets in self.collections.values():
            for ticket in tickets.values():
                self.clock.last = max(self.clock.last, parse_time(ticket["modified_at"]) or 0)
        self.clock.thaw()
        self.clear_faults()
        self.stats = {"GET": 0, "PUT": 0, "DELETE": 0, "list_pages": 0, "faulted": 0}

    def clear_faults(self) -> None:
        self.faults = no_faults()

    def new_collection(self) -> dict[int, Ticket]:
        return {}

    def require_live(self, ticket_id: Any) -> None:
        if not any(
            not tickets.get(ticket_id, {"deleted": True})["deleted"]
            for tickets in self.collections.values()
        ):
            raise InvalidRequest("change_after_pages.id names no live ticket")


def seeded_tickets() -> dict[int, Ticket]:
    """Forty tickets, five to a second, one of them deleted."""
    start = parse_time("2026-01-02T03:04:05Z") or 0
    tickets = {}
    for number in range(1, 41):
        tickets[number] = {
            "id": number,
            "modified_at": format_time(start + (number - 1) // 5),
            "deleted": number == 13,
            "subject": _SUBJECTS[number % len(_SUBJECTS)],
            "status": ("open", "pending", "closed")[number % 3],
            "requester": {"name": f"User {number}", "email": f"user{number}@example.com"},
            "tags": ["hardware"] if number % 2 else [],
        }
    return tickets


def create_app(api_key: str = "demo-key", seed: bool = True) -> flask.Flask:
    """The demo Tickets API; each app has its own state."""
    if not api_key:
        raise ValueError("the API key must not be empty")
    state = State(api_key)
    state.reset(seed)
    app = flask.Flask(__name__)
    app.extensions["demo_tickets"] = state
    app.url_map.converters["resource"] = ResourceConverter
    register_error_handlers(app)
    _register_api(app, state)
    app.register_blueprint(_tickets_admin(state))
    return app


def _number(name: str, default: int, low: int, high: int | None = None) -> int:
    raw = flask.request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < low or (high and int(raw) > high):
        bound = f"from {low} to {high}" if high else f"of at least {low}"
        raise InvalidRequest(f"{name} must be a whole number {bound}")
    return int(raw)


def _ticket_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or raw.startswith("0"):
        raise InvalidRequest(f"a ticket id is a positive integer, not {raw!r}")
    return int(raw)


def _register_api(app: flask.Flask, state: State) -> None:
    @app.before_request
    def gate() -> flask.Response | None:
        """Count, delay, inject storms, then check the key, like a proxy in front of an API."""
        if flask.request.endpoint not in API_ENDPOINTS:
            return None
        with state.lock:
            state.stats[flask.request.method] += 1
            if flask.request.endpoint == "list_tickets":
                state.stats["list_pages"] += 1
            latency_ms = state.faults["latency_ms"]
            storm = spend_counted_fault(state, "storm")
        if latency_ms:
            time.sleep(latency_ms / 1000)
        if storm is not None:
            return fault_response(storm["status"], storm["retry_after"])
        given = flask.request.headers.get("X-Api-Key", "")
        if not hmac.compare_digest(given.encode("utf-8"), state.api_key.encode("utf-8")):
            return error_response(401, "missing or wrong X-Api-Key")
        return None

    def unknown(resource: str) -> flask.Response:
        return error_response(404, f"unknown collection {resource!r}")

    @app.get("/<resource:resource>", endpoint="list_tickets")
    def list_tickets(resource: str) -> flask.Response:
        page = _number("page", 1, 1)
        per_page = _number("per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        since = flask.request.args.get("modified_since")
        if since is not None and parse_time(since) is None:
            raise InvalidRequest("modified_since must be in the form YYYY-MM-DDTHH:MM:SSZ")
        with state.lock:
            failure = state.faults["fail_after_pages"]
            if failure is not None and failure["served"] >= failure["pages"]:
                state.stats["faulted"] += 1
                return fault_response(failure["status"])
            if failure is not None:
                failure["served"] += 1
            tickets = state.collections.get(resource)
            if tickets is None:
                return unknown(resource)
            due = due_change(state)
            if due is not None and due in tickets:
                tickets[due] = changed(tickets[due], state.clock.next(), "modified_at")
            if since is None:
                chosen = [t for t in tickets.values() if not t["deleted"]]
            else:
                chosen = [t for t in tickets.values() if t["modified_at"] >= since]
        chosen.sort(key=lambda t: (t["modified_at"], t["id"]))
        start = (page - 1) * per_page
        return json_response(
            {
                "items": chosen[start : start + per_page],
                "page": page,
                "per_page": per_page,
                "total": len(chosen),
                "total_pages": math.ceil(len(chosen) / per_page),
            }
        )

    @app.get("/<resource:resource>/<ticket>", endpoint="get_ticket")
    def get_ticket(resource: str, ticket: str) -> flask.Response:
        number = _ticket_id(ticket)
        with state.lock:
            tickets = state.collections.get(resource)
            if tickets is None:
                return unknown(resource)
            found = tickets.get(number)
        if found is None or found["deleted"]:
            return error_response(404, f"no ticket {number} in {resource!r}")
        return json_response(found)

    @app.put("/<resource:resource>/<ticket>", endpoint="put_ticket")
    def put_ticket(resource: str, ticket: str) -> flask.Response:
        number = _ticket_id(ticket)
        fault = write_fault(state, str(number))
        if fault is not None:
            return fault
        body = request_json()
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object of the ticket's fields")
        fields = {k: v for k, v in body.items() if k not in RESERVED_FIELDS}
        with state.lock:
            tickets = state.collections.get(resource)
            if tickets is None:
                return unknown(resource)
            stored = {"id": number, "modified_at": state.clock.next(), "deleted": False, **fields}
            tickets[number] = stored
        return json_response(stored)

    @app.delete("/<resource:resource>/<ticket>", endpoint="delete_ticket")
    def delete_ticket(resource: str, ticket: str) -> flask.Response:
        number = _ticket_id(ticket)
        fault = write_fault(state, str(number))
        if fault is not None:
            return fault
        with state.lock:
            tickets = state.collections.get(resource)
            if tickets is None:
                return unknown(resource)
            old = tickets.get(number)
            if old is None or old["deleted"]:
                return error_response(404, f"no ticket {number} in {resource!r}")
            tickets[number] = {**old, "modified_at": state.clock.next(), "deleted": True}
        response = flask.Response(status=204)
        del response.headers["Content-Type"]
        return response


def _inserted(body: object, clock: Clock) -> list[Ticket]:
    """Admin inserts: whole tickets; without ``modified_at`` they share the clock's time."""
    if not isinstance(body, list):
        raise InvalidRequest("the body must be a JSON list of tickets")
    tickets = []
    for number, given in enumerate(body):
        if not isinstance(given, dict) or not is_id(given.get("id")):
            raise InvalidRequest(f"ticket {number} must be an object with a positive integer id")
        at = given.get("modified_at")
        if at is None:
            at = clock.next()
        elif parse_time(at) is None:
            raise InvalidRequest(f"ticket {number}: modified_at must be YYYY-MM-DDTHH:MM:SSZ")
        if not isinstance(given.get("deleted", False), bool):
            raise InvalidRequest(f"ticket {number}: deleted must be true or false")
        tickets.append({**given, "modified_at": at, "deleted": given.get("deleted", False)})
    return tickets


def _tickets_admin(state: State) -> flask.Blueprint:
    """The shared ``/_admin`` switches, and those that know tickets."""
    tickets_admin = admin.blueprint(state)

    @tickets_admin.post("/reset")
    def reset() -> flask.Response:
        body = require_keys(request_json() or {}, "the body", {"seed"})
        seed = body.get("seed", False)
        if not isinstance(seed, bool):
            raise InvalidRequest("seed must be true or false")
        with state.lock:
            state.reset(seed)
            return json_response({"reset": True, "collections": sorted(state.collections)})

    @tickets_admin.post("/records/<resource:resource>")
    def insert(resource: str) -> flask.Response:
        body = request_json()
        with state.lock:
            tickets = _inserted(body, state.clock)
            collection = state.collections.setdefault(resource, {})
            for ticket in tickets:
                collection[ticket["id"]] = ticket
                state.clock.last = max(state.clock.last, parse_time(ticket["modified_at"]) or 0)
        return json_response({"inserted": len(tickets)})

    @tickets_admin.get("/records/<resource:resource>")
    def dump(resource: str) -> flask.Response:
        with state.lock:
            tickets = state.collections.get(resource)
            if tickets is None:
                return error_response(404, f"unknown collection {resource!r}")
            everything = sorted(tickets.values(), key=lambda t: (t["modified_at"], t["id"]))
        return json_response(everything)

    @tickets_admin.put("/clock")
    def set_clock() -> flask.Response:
        """``{"freeze": true}`` (or a time), ``{"advance": 5}``, ``{"tick": 10}``."""
        body = require_keys(request_json(), "the body", {"freeze", "advance", "tick"})
        with state.lock:
            clock = state.clock
            if body.get("tick") is not None:
                if not is_id(body["tick"]):
                    raise InvalidRequest("tick must be a whole number of seconds >= 1")
                clock.tick = body["tick"]
            freeze = body.get("freeze")
            if freeze is True:
                clock.frozen = max(clock.now(), clock.last)
            elif freeze is not None:
                at = parse_time(freeze)
                if at is None:
                    raise InvalidRequest("freeze must be true or a time YYYY-MM-DDTHH:MM:SSZ")
                clock.frozen = max(at, clock.last)
            if body.get("advance") is not None:
                if (
                    clock.frozen is None
                    or not isinstance(body["advance"], int)
                    or body["advance"] < 0
                ):
                    raise InvalidRequest("advance takes whole seconds >= 0, on a frozen clock")
                clock.frozen += body["advance"]
            return json_response(clock.describe())

    return tickets_admin
