"""The test switches under ``/_admin`` that both demos have alike: creating a collection,
setting and clearing faults, reading and thawing the clock, and the counts.

The switches that know a demo's records (reset, inserts, dumps, setting the clock) differ
between the Records and the Tickets demo, so each demo adds its own to the blueprint
``blueprint`` returns. No auth: collection names cannot start with ``_``.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol

import flask

from service.tools.demo_upstream.faults import FaultState
from service.tools.demo_upstream.faults import parse_faults
from service.tools.demo_upstream.faults import public_faults
from service.tools.demo_upstream.responses import json_response
from service.tools.demo_upstream.responses import request_json


class AdminClock(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def thaw(self) -> None: ...


class AdminState(FaultState, Protocol):
    """What the shared switches need of a demo's state; they hold its lock for each change."""

    clock: AdminClock
    collections: dict[str, Any]

    def clear_faults(self) -> None: ...

    def new_collection(self) -> Any:
        """An empty collection of the demo's kind."""

    def require_live(self, record_id: Any) -> None:
        """Raise InvalidRequest unless some collection holds a live record with this id,
        one that ``change_after_pages`` can change."""


def blueprint(state: AdminState) -> flask.Blueprint:
    """The shared switches over one app's state. The app adds its own switches to it, then
    registers it; its URLs need the app's ``resource`` converter, registered before."""
    admin = flask.Blueprint("admin", __name__, url_prefix="/_admin")

    @admin.post("/collections/<resource:resource>")
    def create_collection(resource: str) -> flask.Response:
        with state.lock:
            created = resource not in state.collections
            if created:
                state.collections[resource] = state.new_collection()
        return json_response({"collection": resource, "created": created}, 201 if created else 200)

    @admin.put("/faults")
    def set_faults() -> flask.Response:
        parsed = parse_faults(request_json())
        with state.lock:
            change = parsed.get("change_after_pages")
            if change is not None:
                state.require_live(change["id"])
            state.faults.update(parsed)
            return json_response(public_faults(state.faults))

    @admin.delete("/faults")
    def clear_faults() -> flask.Response:
        with state.lock:
            state.clear_faults()
            return json_response(public_faults(state.faults))

    @admin.get("/clock")
    def get_clock() -> flask.Response:
        with state.lock:
            return json_response(state.clock.describe())

    @admin.delete("/clock")
    def thaw_clock() -> flask.Response:
        """The real clock again: neither frozen nor coarse."""
        with state.lock:
            state.clock.thaw()
            return json_response(state.clock.describe())

    @admin.get("/stats")
    def stats() -> flask.Response:
        with state.lock:
            return json_response(dict(state.stats))

    return admin
