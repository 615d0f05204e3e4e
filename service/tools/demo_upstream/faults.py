"""Fault injection: what ``PUT /_admin/faults`` may switch on, and how a fault answers.

Faults are the demo upstream's reason to exist: the connector's tests need an upstream
that fails on demand (a storm of 5xx or 429, a list that breaks after some pages, writes
that fail by count or by id, a dropped connection, latency), and one that changes a record
while a client pages through a list (``change_after_pages``: after that many list pages,
the record is changed before the next one is served, as a concurrent writer would).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any
from typing import Protocol

import flask

from service.tools.demo_upstream.responses import error_response
from service.tools.demo_upstream.store import InvalidRequest

DROP_ENVIRON_KEY = "demo_upstream.drop_connection"


class FaultState(Protocol):
    """What fault injection needs of a demo's state (both demos' states have it)."""

    lock: threading.Lock
    faults: dict[str, Any]
    stats: dict[str, int]


def no_faults(latency_ms: float = 0) -> dict[str, Any]:
    """The fault settings of a server that behaves: only its configured latency."""
    return {
        "latency_ms": latency_ms,
        "storm": None,
        "fail_after_pages": None,
        "fail_writes": None,
        "fail_write_ids": None,
        "change_after_pages": None,
    }


def public_faults(faults: dict[str, Any]) -> dict[str, Any]:
    """The fault settings as JSON shows them: the failing ids as a sorted list."""
    shown = dict(faults)
    if shown["fail_write_ids"] is not None:
        shown["fail_write_ids"] = dict(shown["fail_write_ids"])
        shown["fail_write_ids"]["ids"] = sorted(shown["fail_write_ids"]["ids"])
    return shown


def fault_response(status: int, retry_after: float | None = None) -> flask.Response:
    headers = {}
    if retry_after is not None:
        seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
        headers["Retry-After"] = str(seconds)
    return error_response(status, f"injected fault: HTTP {status}", headers)


def spend_counted_fault(state: FaultState, name: str) -> dict[str, Any] | None:
    """Take one of a fault's ``count`` (under the state's lock); None when it is not set."""
    fault = state.faults[name]
    if fault is not None:
        fault["count"] -= 1
        if fault["count"] <= 0:
            state.faults[name] = None
        state.stats["faulted"] += 1
    return fault


def write_fault(state: FaultState, record_id: str) -> flask.Response | None:
    """The answer to a PUT or DELETE of ``record_id`` when a write fault is armed, else None.
    Injected write failures win over everything, as a broken backend would."""
    with state.lock:
        by_id = state.faults["fail_write_ids"]
        if by_id is not None and record_id in by_id["ids"]:
            state.stats["faulted"] += 1
            return fault_response(by_id["status"])
        failing = spend_counted_fault(state, "fail_writes")
        if failing is not None:
            return fault_response(failing["status"])
    return None


class DropConnection:
    """WSGI middleware that turns a view's drop request into a connection closed without
    a response, which is what a crashed proxy looks like to a client."""

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.wsgi_app(environ, start_response)
        if not environ.get(DROP_ENVIRON_KEY):
            return body
        if hasattr(body, "close"):
            body.close()
        # The servers only send the status line on the first write, so nothing is out yet.
        sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("demo upstream dropped the connection (injected fault)")


# --- the admin API's fault settings -----------------------------------------------------


def is_int(value: object, low: int, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def error_status(spec: dict[str, Any], default: int | None = None) -> int:
    status = spec.get("status", default)
    if not is_int(status, 400, 599):
        raise InvalidRequest("status must be an HTTP error status from 400 to 599")
    return status


def require_keys(spec: object, name: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(spec, dict) or not set(spec) <= allowed:
        raise InvalidRequest(f"{name} must be an object with keys from {sorted(allowed)}")
    return spec


def parse_faults(body: object) -> dict[str, Any]:
    """Validate a PUT /_admin/faults body into fault state; null clears one fault."""
    spec = require_keys(
        body,
        "the body",
        {
            "latency_ms",
            "storm",
            "fail_after_pages",
            "fail_writes",
            "fail_write_ids",
            "change_after_pages",
        },
    )
    parsed: dict[str, Any] = {}
    if "latency_ms" in spec:
        if not is_number(spec["latency_ms"]):
            raise InvalidRequest("latency_ms must be a number >= 0")
        parsed["latency_ms"] = spec["latency_ms"]
    if spec.get("storm") is not None:
        storm = require_keys(spec["storm"], "storm", {"status", "count", "retry_after", "mode"})
        status = error_status(storm)
        storm_mode = storm.get("mode", "status")
        if storm_mode not in ("status", "drop"):
            raise InvalidRequest('storm.mode must be "status" or "drop"')
        retry_after = storm.get("retry_after", 1 if status == 429 else None)
        if retry_after is not None and not is_number(retry_after):
            raise InvalidRequest("storm.retry_after must be a number >= 0 or null")
        if not is_int(storm.get("count"), 0):
            raise InvalidRequest("storm.count must be an integer >= 0")
        active = storm["count"] > 0
        parsed["storm"] = (
            {
                "status": status,
                "count": storm["count"],
                "retry_after": retry_after,
                "mode": storm_mode,
            }
            if active
            else None
        )
    elif "storm" in spec:
        parsed["storm"] = None
    if spec.get("fail_after_pages") is not None:
        failure = require_keys(
            spec["fail_after_pages"], "fail_after_pages", {"pages", "status", "mode"}
        )
        if not is_int(failure.get("pages"), 0):
            raise InvalidRequest("fail_after_pages.pages must be an integer >= 0")
        mode = failure.get("mode", "status")
        if mode not in ("status", "drop"):
            raise InvalidRequest('fail_after_pages.mode must be "status" or "drop"')
        parsed["fail_after_pages"] = {
            "pages": failure["pages"],
            "status": error_status(failure, 500),
            "mode": mode,
            "served": 0,
        }
    elif "fail_after_pages" in spec:
        parsed["fail_after_pages"] = None
    if spec.get("fail_writes") is not None:
        failing = require_keys(spec["fail_writes"], "fail_writes", {"count", "status"})
        if not is_int(failing.get("count"), 0):
            raise InvalidRequest("fail_writes.count must be an integer >= 0")
        status = error_status(failing, 500)
        parsed["fail_writes"] = (
            {"count": failing["count"], "status": status} if failing["count"] else None
        )
    elif "fail_writes" in spec:
        parsed["fail_writes"] = None
    if spec.get("fail_write_ids") is not None:
        by_id = require_keys(spec["fail_write_ids"], "fail_write_ids", {"ids", "status"})
        ids = by_id.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("fail_write_ids.ids must be a list of strings")
        parsed["fail_write_ids"] = {"ids": set(ids), "status": error_status(by_id, 500)}
    elif "fail_write_ids" in spec:
        parsed["fail_write_ids"] = None
    if spec.get("change_after_pages") is not None:
        change = require_keys(spec["change_after_pages"], "change_after_pages", {"pages", "id"})
        if not is_int(change.get("pages"), 0):
            raise InvalidRequest("change_after_pages.pages must be an integer >= 0")
        record_id = change.get("id")
        if not (isinstance(record_id, str) and record_id) and not is_int(record_id, 0):
            raise InvalidRequest("change_after_pages.id must be a record's id")
        parsed["change_after_pages"] = {"pages": change["pages"], "id": record_id, "served": 0}
    elif "change_after_pages" in spec:
        parsed["change_after_pages"] = None
    return parsed


def changed(record: dict[str, Any], at: str, time_field: str) -> dict[str, Any]:
    """A record as a concurrent writer leaves it: its ``changed`` count one up, a new time."""
    return {**record, "changed": record.get("changed", 0) + 1, time_field: at}


def due_change(state: FaultState) -> Any:
    """The id of the record an armed ``change_after_pages`` changes before this list
    page, or None; counts the page as served (under the state's lock)."""
    change = state.faults.get("change_after_pages")
    if change is None:
        return None
    if change["served"] >= change["pages"]:
        state.faults["change_after_pages"] = None
        return change["id"]
    change["served"] += 1
    return None
