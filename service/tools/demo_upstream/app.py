"""The demo Records API as a Flask app: the records API a connector calls, and the admin
API the tests use (``/_admin``: reset, inserts, dumps, faults, stats; the switches it shares
with the Tickets demo are in ``admin``)."""

from __future__ import annotations

import bisect
import hmac
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.routing import BaseConverter

from service.tools.demo_upstream import admin
from service.tools.demo_upstream.faults import DROP_ENVIRON_KEY
from service.tools.demo_upstream.faults import DropConnection
from service.tools.demo_upstream.faults import changed
from service.tools.demo_upstream.faults import due_change
from service.tools.demo_upstream.faults import fault_response
from service.tools.demo_upstream.faults import no_faults
from service.tools.demo_upstream.faults import public_faults
from service.tools.demo_upstream.faults import require_keys
from service.tools.demo_upstream.faults import spend_counted_fault
from service.tools.demo_upstream.faults import write_fault
from service.tools.demo_upstream.responses import error_response
from service.tools.demo_upstream.responses import json_response
from service.tools.demo_upstream.responses import register_error_handlers
from service.tools.demo_upstream.responses import request_json
from service.tools.demo_upstream.seed import seed_collections
from service.tools.demo_upstream.store import RESERVED_FIELDS
from service.tools.demo_upstream.store import Clock
from service.tools.demo_upstream.store import Collection
from service.tools.demo_upstream.store import InvalidRequest
from service.tools.demo_upstream.store import Key
from service.tools.demo_upstream.store import Record
from service.tools.demo_upstream.store import StoredCollection
from service.tools.demo_upstream.store import cursor_fingerprint
from service.tools.demo_upstream.store import decode_cursor
from service.tools.demo_upstream.store import encodable
from service.tools.demo_upstream.store import encode_cursor
from service.tools.demo_upstream.store import list_page
from service.tools.demo_upstream.store import parse_limit
from service.tools.demo_upstream.store import parse_timestamp
from service.tools.demo_upstream.synthetic import SyntheticCollection

RECORDS_API_ENDPOINTS = frozenset({"list_records", "get_record", "put_record", "delete_record"})


# --- state ------------------------------------------------------------------------------


def _fresh_stats() -> dict[str, int]:
    return {"GET": 0, "PUT": 0, "DELETE": 0, "list_pages": 0, "faulted": 0}


class UpstreamState:
    """Everything one app holds, behind one lock, so a threaded server stays consistent."""

    def __init__(
        self, token: str, synthetic: dict[str, int], latency_ms: float, tie_size: int
    ) -> None:
        self.token = token
        self.synthetic = {name: SyntheticCollection(n, tie_size) for name, n in synthetic.items()}
        self.base_latency_ms = latency_ms
        self.lock = threading.Lock()
        self.clock = Clock()
        self.collections: dict[str, Collection] = {}
        self.faults: dict[str, Any] = {}
        self.stats = _fresh_stats()

    def reset(self, seed: bool) -> None:
        """Back to a blank server: synthetic collections stay, they are configuration."""
        self.collections = dict(self.synthetic)
        if seed:
            seeded = seed_collections()
            for collection in seeded.values():
                for record in collection.all_records():
                    self.clock.saw(parse_timestamp(record["updated_at"]) or 0)
            self.collections.update(seeded)
        self.clock.thaw()
        self.clear_faults()
        self.stats = _fresh_stats()

    def clear_faults(self) -> None:
        self.faults = no_faults(self.base_latency_ms)

    def new_collection(self) -> StoredCollection:
        return StoredCollection()

    def require_live(self, record_id: Any) -> None:
        """``change_after_pages`` changes a stored record: a computed one cannot change."""
        if not any(
            isinstance(c, StoredCollection)
            and (r := c.get(record_id)) is not None
            and not r["deleted"]
            for c in self.collections.values()
        ):
            raise InvalidRequest("change_after_pages.id names no live stored record")


# --- the app ----------------------------------------------------------------------------


class ResourceConverter(BaseConverter):
    """Collection names as the contract spells them; `_admin` can never be one."""

    regex = "[a-z][a-z0-9-]*"


class RecordIdConverter(BaseConverter):
    """Everything after the collection: an id may contain `/` (sent as %2F), even first,
    and line breaks, which `.` would not match."""

    regex = r"[\s\S]+"
    part_isolating = False


def create_app(
    token: str = "demo-token",
    seed: bool = True,
    synthetic: dict[str, int] | None = None,
    latency_ms: float = 0,
    tie_size: int = 1000,
) -> flask.Flask:
    """The demo upstream; each app has its own state, so tests can run several at once."""
    state = _build_state(token, seed, synthetic or {}, latency_ms, tie_size)
    app = flask.Flask(__name__)
    app.extensions["demo_upstream"] = state
    _configure_routing(app)
    register_error_handlers(app)
    _register_records_api(app, state)
    app.register_blueprint(_records_admin(state))
    app.wsgi_app = DropConnection(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _build_state(
    token: str, seed: bool, synthetic: dict[str, int], latency_ms: float, tie_size: int
) -> UpstreamState:
    if not token:
        raise ValueError("token must not be empty")
    if tie_size < 1:
        raise ValueError("tie_size must be at least 1")
    if latency_ms < 0:
        raise ValueError("latency_ms must not be negative")
    for name, count in synthetic.items():
        if not re.fullmatch(ResourceConverter.regex, name) or name in ("people", "companies"):
            raise ValueError(f"synthetic collection name {name!r} is invalid or taken")
        if count < 0:
            raise ValueError(f"synthetic collection {name!r} needs a count >= 0")
    state = UpstreamState(token, synthetic, latency_ms, tie_size)
    state.reset(seed)
    return state


def _configure_routing(app: flask.Flask) -> None:
    # Must precede the rules: with merged slashes an id like "a//b" would be redirected.
    app.url_map.merge_slashes = False
    app.url_map.converters["resource"] = ResourceConverter
    app.url_map.converters["record_id"] = RecordIdConverter


def _register_records_api(app: flask.Flask, state: UpstreamState) -> None:
    @app.before_request
    def gate() -> flask.Response | None:
        """Count, delay, inject storms, then check the token: in that order, like a proxy
        in front of a real API."""
        if flask.request.endpoint not in RECORDS_API_ENDPOINTS:
            return None
        with state.lock:
            state.stats[flask.request.method] = state.stats.get(flask.request.method, 0) + 1
            if flask.request.endpoint == "list_records":
                state.stats["list_pages"] += 1
            latency_ms = state.faults["latency_ms"]
            storm = spend_counted_fault(state, "storm")
        if latency_ms:
            time.sleep(latency_ms / 1000)
        if storm is not None:
            if storm["mode"] == "drop":
                flask.request.environ[DROP_ENVIRON_KEY] = True
                return error_response(500, "dropped")
            return fault_response(storm["status"], storm["retry_after"])
        scheme, _, given = flask.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), state.token.encode("utf-8")
        ):
            return error_response(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )
        return None

    def unknown(resource: str) -> flask.Response:
        return error_response(404, f"unknown collection {resource!r}")

    @app.get("/<resource:resource>", endpoint="list_records")
    def list_records(resource: str) -> flask.Response:
        with state.lock:
            failure = state.faults["fail_after_pages"]
            if failure is not None and failure["served"] >= failure["pages"]:
                state.stats["faulted"] += 1
                if failure["mode"] == "drop":
                    flask.request.environ[DROP_ENVIRON_KEY] = True
                    return error_response(500, "dropped")
                return fault_response(failure["status"])
        limit = parse_limit(flask.request.args.get("limit"))
        since = flask.request.args.get("updated_since")
        if since is not None and parse_timestamp(since) is None:
            raise InvalidRequest("updated_since must be in the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
        fingerprint = cursor_fingerprint(resource, limit, since)
        cursor = flask.request.args.get("cursor")
        after = decode_cursor(cursor, fingerprint) if cursor is not None else None
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return unknown(resource)
            due = due_change(state)
            if due is not None and isinstance(collection, StoredCollection):
                old = collection.get(due)
                if old is not None:
                    collection.put(changed(old, state.clock.next(), "updated_at"))
            page = None if collection.read_only else page_from(collection, after, since, limit)
        if page is None:  # computed records need no lock
            page = page_from(collection, after, since, limit)
        data, more = page
        with state.lock:
            if state.faults["fail_after_pages"] is not None:
                state.faults["fail_after_pages"]["served"] += 1
        next_cursor = encode_cursor(data[-1], fingerprint) if more and data else None
        return json_response({"data": data, "next_cursor": next_cursor})

    def page_from(
        collection: Collection, after: Key | None, since: str | None, limit: int
    ) -> tuple[list[Record], bool]:
        if after is not None:
            start = bisect.bisect_right(collection.keys, after)
        elif since is not None:
            start = bisect.bisect_left(collection.keys, (since, ""))
        else:
            start = 0
        return list_page(collection, start, limit, live_only=since is None)

    @app.get("/<resource:resource>/<record_id:record_id>", endpoint="get_record")
    def get_record(resource: str, record_id: str) -> flask.Response:
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return unknown(resource)
            record = collection.get(record_id)
        if record is None or record["deleted"]:
            return error_response(404, f"no record {record_id!r} in {resource!r}")
        return json_response(record)

    @app.put("/<resource:resource>/<record_id:record_id>", endpoint="put_record")
    def put_record(resource: str, record_id: str) -> flask.Response:
        fault = write_fault(state, record_id)
        if fault is not None:
            return fault
        body = request_json()
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object of the record's fields")
        fields = {k: v for k, v in body.items() if k not in RESERVED_FIELDS}
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return unknown(resource)
            if isinstance(collection, SyntheticCollection):
                return error_response(405, f"collection {resource!r} is read-only")
            record = {"id": record_id, "updated_at": "", "deleted": False, **fields}
            if not encodable(record):
                raise InvalidRequest("the body holds values that are not valid JSON text")
            record["updated_at"] = state.clock.next()
            collection.put(record)
        return json_response(record)

    @app.delete("/<resource:resource>/<record_id:record_id>", endpoint="delete_record")
    def delete_record(resource: str, record_id: str) -> flask.Response:
        fault = write_fault(state, record_id)
        if fault is not None:
            return fault
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return unknown(resource)
            if isinstance(collection, SyntheticCollection):
                return error_response(405, f"collection {resource!r} is read-only")
            old = collection.get(record_id)
            if old is None or old["deleted"]:
                return error_response(404, f"no record {record_id!r} in {resource!r}")
            collection.put({**old, "updated_at": state.clock.next(), "deleted": True})
        response = flask.Response(status=204)
        del response.headers["Content-Type"]  # no body, so no body type
        return response


# --- admin API --------------------------------------------------------------------------


def parse_inserted_records(body: object, next_time: Callable[[], str]) -> list[Record]:
    """Admin bulk insert: full records as given; the ones without updated_at share one
    server time, the way a bulk import stamps a batch."""
    if not isinstance(body, list):
        raise InvalidRequest("the body must be a JSON list of records")
    batch_time: str | None = None
    records: list[Record] = []
    for number, given in enumerate(body):
        if not isinstance(given, dict):
            raise InvalidRequest(f"record {number} is not a JSON object")
        record_id = given.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise InvalidRequest(f"record {number} needs a non-empty string id")
        updated_at = given.get("updated_at")
        if updated_at is None:
            batch_time = batch_time or next_time()
            updated_at = batch_time
        elif parse_timestamp(updated_at) is None:
            raise InvalidRequest(
                f"record {number}: updated_at must be in the form YYYY-MM-DDTHH:MM:SS.ffffffZ"
            )
        deleted = given.get("deleted", False)
        if not isinstance(deleted, bool):
            raise InvalidRequest(f"record {number}: deleted must be true or false")
        fields = {k: v for k, v in given.items() if k not in RESERVED_FIELDS}
        record = {"id": record_id, "updated_at": updated_at, "deleted": deleted, **fields}
        if not encodable(record):
            raise InvalidRequest(f"record {number} holds values that are not valid JSON text")
        records.append(record)
    return records


def _records_admin(state: UpstreamState) -> flask.Blueprint:
    """The shared ``/_admin`` switches, and those that know this demo's records."""
    records_admin = admin.blueprint(state)

    @records_admin.get("/health")
    def health() -> flask.Response:
        return json_response({"status": "ok"})

    @records_admin.post("/reset")
    def reset() -> flask.Response:
        body = request_json()
        body = {} if body is None else require_keys(body, "the body", {"seed"})
        seed = body.get("seed", False)
        if not isinstance(seed, bool):
            raise InvalidRequest("seed must be true or false")
        with state.lock:
            state.reset(seed)
            names = sorted(state.collections)
        return json_response({"reset": True, "seeded": seed, "collections": names})

    @records_admin.post("/records/<resource:resource>")
    def insert_records(resource: str) -> flask.Response:
        body = request_json()
        with state.lock:
            collection = state.collections.get(resource)
            if isinstance(collection, SyntheticCollection):
                return error_response(405, f"collection {resource!r} is read-only")
            records = parse_inserted_records(body, state.clock.next)
            if collection is None:
                collection = state.collections[resource] = StoredCollection()
            for record in records:
                state.clock.saw(parse_timestamp(record["updated_at"]) or 0)
            collection.put_many(records)
        return json_response({"inserted": len(records)})

    @records_admin.get("/records/<resource:resource>")
    def dump_records(resource: str) -> flask.Response:
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return error_response(404, f"unknown collection {resource!r}")
            if isinstance(collection, SyntheticCollection):
                return error_response(405, f"{resource!r} is computed; list it with GET")
            records = collection.all_records()
        return json_response(records)

    @records_admin.get("/faults")
    def get_faults() -> flask.Response:
        with state.lock:
            return json_response(public_faults(state.faults))

    @records_admin.put("/clock")
    def set_clock() -> flask.Response:
        """``{"tick": 1}`` makes the clock coarse (whole seconds); ``{"freeze": true}``
        stops it now (or at a time given in the contract's form); ``{"advance": 2}`` moves a
        frozen clock on. ``DELETE`` gives back the real clock."""
        body = require_keys(request_json(), "the body", {"tick", "freeze", "advance"})
        with state.lock:
            clock = state.clock
            tick, freeze, advance = body.get("tick"), body.get("freeze"), body.get("advance")
            if tick is not None:
                if not isinstance(tick, int | float) or isinstance(tick, bool) or tick <= 0:
                    raise InvalidRequest("tick must be a number of seconds > 0")
                clock.tick = max(1, round(tick * 1_000_000))
            if freeze is True:
                clock.freeze()
            elif freeze is not None:
                at = parse_timestamp(freeze)
                if at is None:
                    raise InvalidRequest(
                        "freeze must be true or a time YYYY-MM-DDTHH:MM:SS.ffffffZ"
                    )
                clock.freeze(at)
            if advance is not None:
                if not isinstance(advance, int | float) or isinstance(advance, bool) or advance < 0:
                    raise InvalidRequest("advance must be a number of seconds >= 0")
                clock.advance(round(advance * 1_000_000))
            return json_response(clock.describe())

    return records_admin
