"""An in-memory Records API that follows the upstream contract to the letter.

Why it exists: the functional tests need a real upstream on loopback that can misbehave
on demand, `docker-compose up` needs something to sync against, and the benchmark needs
a huge collection that costs no memory. It follows the contract, not a real product, so
it is deliberately strict: anything the contract calls wrong gets a 400 here.

Run it beside the connector:

    python -m service.tools.demo_upstream --port 8000 --token demo-token

Test hooks live under `/_admin` (no auth; collection names cannot start with `_`):
reset, bulk inserts with chosen `updated_at`, a raw dump, fault injection and stats.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter
from werkzeug.serving import make_server

Record = dict[str, Any]
Key = tuple[str, str]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
RESERVED_FIELDS = ("id", "updated_at", "deleted")
RECORDS_API_ENDPOINTS = frozenset({"list_records", "get_record", "put_record", "delete_record"})
DROP_ENVIRON_KEY = "demo_upstream.drop_connection"

_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MICROSECOND = dt.timedelta(microseconds=1)


# --- timestamps -------------------------------------------------------------------------


def format_timestamp(micros: int) -> str:
    """Microseconds since the epoch in the contract's exact form (string order = time order)."""
    moment = (_EPOCH + dt.timedelta(microseconds=micros)).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: object) -> int | None:
    """The exact `YYYY-MM-DDTHH:MM:SS.ffffffZ` form as microseconds, or None if it is not."""
    if not isinstance(text, str) or not _TIMESTAMP.fullmatch(text):
        return None
    try:
        moment = dt.datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return (moment - _EPOCH) // _ONE_MICROSECOND


class _Clock:
    """Hands out write times that only move forward, even if the wall clock does not."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> str:
        self.last = max(time.time_ns() // 1000, self.last + 1)
        return format_timestamp(self.last)

    def saw(self, micros: int) -> None:
        """An inserted record's time: later writes must sort after it."""
        self.last = max(self.last, micros)


# --- collections ------------------------------------------------------------------------


class StoredCollection:
    """Records by id plus their (updated_at, id) keys kept sorted, so a page is a bisect."""

    read_only = False

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.keys: list[Key] = []

    def __len__(self) -> int:
        return len(self.keys)

    def record_at(self, position: int) -> Record:
        return self.records[self.keys[position][1]]

    def get(self, record_id: str) -> Record | None:
        return self.records.get(record_id)

    def put(self, record: Record) -> None:
        """Store a new record object; stored dicts are never mutated, so pages can be
        serialised outside the lock."""
        old = self.records.get(record["id"])
        if old is not None:
            del self.keys[bisect.bisect_left(self.keys, (old["updated_at"], old["id"]))]
        self.records[record["id"]] = record
        bisect.insort(self.keys, (record["updated_at"], record["id"]))

    def put_many(self, records: list[Record]) -> None:
        """Bulk inserts re-sort once instead of paying an insort per record."""
        if len(records) * 8 <= len(self.keys):
            for record in records:
                self.put(record)
            return
        for record in records:
            self.records[record["id"]] = record
        self.keys = sorted((r["updated_at"], r["id"]) for r in self.records.values())

    def all_records(self) -> list[Record]:
        return [self.records[record_id] for _, record_id in self.keys]


_FIRST_NAMES = ("Ada", "Bjørn", "Chloé", "Dmitri", "Eva", "Fatima", "Gustav", "Hana")
_ASCII_FIRST = ("ada", "bjorn", "chloe", "dmitri", "eva", "fatima", "gustav", "hana")
_LAST_NAMES = ("Lovelace", "Hansen", "Dubois", "Ivanov", "Berg", "Haddad", "Lund", "Sato")
_CITIES = ("Oslo", "Bergen", "Trondheim", "Stavanger", "Tromsø", "Lyon", "Kyoto", "Porto")
_STREETS = ("Storgata", "Kirkeveien", "Rue Neuve", "Main Street", "Sakura-dori")
_TAGS = ("customer", "supplier", "partner", "lead", "vip", "archived", "nordic", "beta")
_SYNTHETIC_START = parse_timestamp("2025-01-01T00:00:00.000000Z") or 0


class SyntheticCollection:
    """A read-only collection computed from the record's index, never stored.

    Record i has id `rec-{i:09d}` and shares its `updated_at` with the other records of
    its run of `tie_size`, so index order is (updated_at, id) order and any position is
    found by bisecting over computed keys: memory stays flat whatever the count.
    """

    read_only = True

    def __init__(self, count: int, tie_size: int) -> None:
        self.count = count
        self.tie_size = tie_size
        self.keys = self  # bisect only needs __len__ and __getitem__
        self._last_run: tuple[int, str] = (-1, "")  # a page mostly stays in one run

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, position: int) -> Key:
        if not 0 <= position < self.count:
            raise IndexError(position)
        return (self.updated_at(position), f"rec-{position:09d}")

    def updated_at(self, position: int) -> str:
        run = position // self.tie_size
        last_run, text = self._last_run  # one tuple: safe to share between threads
        if run != last_run:
            text = format_timestamp(_SYNTHETIC_START + run * 1_000_000)
            self._last_run = (run, text)
        return text

    def record_at(self, position: int) -> Record:
        """About 300 bytes of JSON, with the nesting and non-ASCII text real data has."""
        first = _FIRST_NAMES[position % 8]
        last = _LAST_NAMES[(position // 8) % 8]
        return {
            "id": f"rec-{position:09d}",
            "updated_at": self.updated_at(position),
            "deleted": False,
            "name": f"{first} {last}",
            "email": f"{_ASCII_FIRST[position % 8]}.{last.lower()}.{position}@example.com",
            "address": {
                "street": f"{_STREETS[position % 5]} {position % 300 + 1}",
                "city": _CITIES[(position // 3) % 8],
                "postcode": f"{1000 + position % 9000:04d}",
                "country": "NO",
            },
            "tags": [_TAGS[position % 8], _TAGS[(position // 8) % 8]],
            "score": (position * 7919) % 100_003 / 100,
            "description": f"Benchmark record {position} of run {position // self.tie_size}.",
        }

    def get(self, record_id: str) -> Record | None:
        digits = record_id[4:]
        if not (record_id.startswith("rec-") and len(digits) >= 9 and digits.isdecimal()):
            return None
        position = int(digits)
        if position >= self.count or record_id != f"rec-{position:09d}":
            return None
        return self.record_at(position)


Collection = StoredCollection | SyntheticCollection


# --- seed data --------------------------------------------------------------------------

_PEOPLE = (
    ("Ada Lovelace", "c-1", "London", ["math", "engines"]),
    ("Bjørn Hansen", "c-2", "Oslo", ["sales"]),
    ("Chloé Dubois", "c-3", "Lyon", ["design", "ux"]),
    ("Dmitri Ivanov", "c-4", "Tromsø", []),
    ("Eva Berg", "c-2", "Bergen", ["support"]),
    ("Fatima Haddad", "c-5", "Oslo", ["finance", "audit"]),
    ("Gustav Lund", "c-6", "Trondheim", ["ops"]),
    ("Hana Sato", "c-7", "Kyoto", ["research"]),
    ("Ingrid Åsheim", "c-1", "Stavanger", ["sales", "vip"]),
    ("José Álvarez", "c-8", "Porto", ["legal"]),
    ("Kari Nordmann", "c-2", "Oslo", []),
    ("Lars Øvrebø", "c-9", "Bodø", ["ops", "on-call"]),
    ("Mei Chen", "c-10", "Oslo", ["research", "ml"]),
    ("Nils Strand", "c-3", "Drammen", ["support"]),
    ("Olga Petrova", "c-4", "Bergen", ["design"]),
    ("Pål Eriksen", "c-5", "Ålesund", ["finance"]),
    ("Quentin Moreau", "c-6", "Lyon", []),
    ("Rania Aziz", "c-7", "Oslo", ["sales"]),
    ("Siri Bakken", "c-8", "Hamar", ["legal", "gdpr"]),
    ("Tomás Ruiz", "c-9", "Porto", ["ops"]),
)
_COMPANIES = (
    ("Analytical Engines Ltd", "GB", 1843),
    ("Fjord Handel AS", "NO", 1990),
    ("Atelier Lumière", "FR", 2004),
    ("Polar Logistics", "NO", 2011),
    ("Haddad & Berg", "NO", 1998),
    ("Nordlys Drift AS", "NO", 2015),
    ("Sakura Research KK", "JP", 1977),
    ("Ribeira Jurídica", "PT", 2001),
    ("Bodø Bryggeri", "NO", 1893),
    ("Blåbær AI", "NO", 2023),
)


def seed_collections() -> dict[str, StoredCollection]:
    """Small, varied demo data; records share `updated_at` in batches, like bulk imports."""
    people = StoredCollection()
    for number, (name, company, city, tags) in enumerate(_PEOPLE, start=1):
        batch = (number - 1) // 5
        people.put(
            {
                "id": f"p-{number}",
                "updated_at": f"2026-03-0{batch + 1}T12:00:00.000000Z",
                "deleted": False,
                "name": name,
                "email": f"person{number}@example.com",
                "company_id": company,
                "address": {"city": city, "country": "NO" if number % 3 else "EU"},
                "tags": tags,
                "active": number % 4 != 0,
                "score": round(number * 1.5, 1),
                "manager_id": f"p-{number - 1}" if number > 1 else None,
            }
        )
    people.put(
        {
            "id": "p-21",
            "updated_at": "2026-03-05T08:30:00.000000Z",
            "deleted": True,
            "name": "Ulla Tombstone",
            "email": "person21@example.com",
        }
    )
    companies = StoredCollection()
    for number, (name, country, founded) in enumerate(_COMPANIES, start=1):
        companies.put(
            {
                "id": f"c-{number}",
                "updated_at": "2026-02-15T09:00:00.000000Z",
                "deleted": False,
                "name": name,
                "country": country,
                "founded": founded,
                "contacts": [{"type": "email", "value": f"post@company{number}.example"}],
            }
        )
    return {"people": people, "companies": companies}


# --- state ------------------------------------------------------------------------------


class InvalidRequest(ValueError):
    """A request the contract calls wrong: 400."""


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
        self.clock = _Clock()
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
        self.clear_faults()
        self.stats = _fresh_stats()

    def clear_faults(self) -> None:
        self.faults = {
            "latency_ms": self.base_latency_ms,
            "storm": None,
            "fail_after_pages": None,
            "fail_writes": None,
            "fail_write_ids": None,
        }

    def public_faults(self) -> dict[str, Any]:
        shown = dict(self.faults)
        if shown["fail_write_ids"] is not None:
            shown["fail_write_ids"] = dict(shown["fail_write_ids"])
            shown["fail_write_ids"]["ids"] = sorted(shown["fail_write_ids"]["ids"])
        return shown


# --- HTTP helpers -----------------------------------------------------------------------


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


def _fault_response(status: int, retry_after: float | None = None) -> flask.Response:
    headers = {}
    if retry_after is not None:
        seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
        headers["Retry-After"] = str(seconds)
    return error_response(status, f"injected fault: HTTP {status}", headers)


def _encodable(record: Record) -> bool:
    """Reject what cannot go out as strict UTF-8 JSON (lone surrogates, NaN) at write time."""
    try:
        json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _request_json() -> Any:
    """The body as JSON; an empty body is None, a malformed one a 400."""
    if not flask.request.get_data():
        return None
    try:
        return json.loads(flask.request.get_data())
    except ValueError as exc:
        raise InvalidRequest("the body is not valid UTF-8 JSON") from exc


def _cursor_fingerprint(resource: str, limit: int, since: str | None) -> str:
    """Binds a cursor to the parameters that shaped its list."""
    raw = json.dumps([resource, limit, since], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_cursor(last: Record, fingerprint: str) -> str:
    raw = json.dumps([last["updated_at"], last["id"], fingerprint], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, fingerprint: str) -> Key:
    """The (updated_at, id) the previous page ended on; 400 for anything else."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        updated_at, record_id, seen = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidRequest("cursor is not a cursor this server issued") from exc
    if parse_timestamp(updated_at) is None or not isinstance(record_id, str):
        raise InvalidRequest("cursor is not a cursor this server issued")
    if seen != fingerprint:
        raise InvalidRequest("cursor was issued for other parameters (limit, updated_since)")
    return (updated_at, record_id)


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def list_page(
    collection: Collection, start: int, limit: int, live_only: bool
) -> tuple[list[Record], bool]:
    """Up to `limit` records from `start`, and whether any record follows them."""
    data: list[Record] = []
    position = start
    size = len(collection)
    while position < size and len(data) < limit:
        record = collection.record_at(position)
        position += 1
        if not (live_only and record["deleted"]):
            data.append(record)
    while position < size:
        if not (live_only and collection.record_at(position)["deleted"]):
            return data, True
        position += 1
    return data, False


class ResourceConverter(BaseConverter):
    """Collection names as the contract spells them; `_admin` can never be one."""

    regex = "[a-z][a-z0-9-]*"


class RecordIdConverter(BaseConverter):
    """Everything after the collection: an id may contain `/` (sent as %2F), even first,
    and line breaks, which `.` would not match."""

    regex = r"[\s\S]+"
    part_isolating = False


class _DropConnection:
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


# --- the app ----------------------------------------------------------------------------


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
    _register_error_handlers(app)
    _register_records_api(app, state)
    _register_admin_api(app, state)
    app.wsgi_app = _DropConnection(app.wsgi_app)  # type: ignore[method-assign]
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


def _register_error_handlers(app: flask.Flask) -> None:
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


def _spend_counted_fault(state: UpstreamState, name: str) -> dict[str, Any] | None:
    """Take one of a fault's ``count`` (under the state's lock); None when it is not set."""
    fault = state.faults[name]
    if fault is not None:
        fault["count"] -= 1
        if fault["count"] <= 0:
            state.faults[name] = None
        state.stats["faulted"] += 1
    return fault


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
            storm = _spend_counted_fault(state, "storm")
        if latency_ms:
            time.sleep(latency_ms / 1000)
        if storm is not None:
            if storm["mode"] == "drop":
                flask.request.environ[DROP_ENVIRON_KEY] = True
                return error_response(500, "dropped")
            return _fault_response(storm["status"], storm["retry_after"])
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
                return _fault_response(failure["status"])
        limit = _parse_limit(flask.request.args.get("limit"))
        since = flask.request.args.get("updated_since")
        if since is not None and parse_timestamp(since) is None:
            raise InvalidRequest("updated_since must be in the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
        fingerprint = _cursor_fingerprint(resource, limit, since)
        cursor = flask.request.args.get("cursor")
        after = decode_cursor(cursor, fingerprint) if cursor is not None else None
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return unknown(resource)
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

    def write_fault(record_id: str) -> flask.Response | None:
        """Injected write failures win over everything, as a broken backend would."""
        with state.lock:
            by_id = state.faults["fail_write_ids"]
            if by_id is not None and record_id in by_id["ids"]:
                state.stats["faulted"] += 1
                return _fault_response(by_id["status"])
            failing = _spend_counted_fault(state, "fail_writes")
            if failing is not None:
                return _fault_response(failing["status"])
        return None

    @app.put("/<resource:resource>/<record_id:record_id>", endpoint="put_record")
    def put_record(resource: str, record_id: str) -> flask.Response:
        fault = write_fault(record_id)
        if fault is not None:
            return fault
        body = _request_json()
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
            if not _encodable(record):
                raise InvalidRequest("the body holds values that are not valid JSON text")
            record["updated_at"] = state.clock.next()
            collection.put(record)
        return json_response(record)

    @app.delete("/<resource:resource>/<record_id:record_id>", endpoint="delete_record")
    def delete_record(resource: str, record_id: str) -> flask.Response:
        fault = write_fault(record_id)
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


def _is_int(value: object, low: int, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _status(spec: dict[str, Any], default: int | None = None) -> int:
    status = spec.get("status", default)
    if not _is_int(status, 400, 599):
        raise InvalidRequest("status must be an HTTP error status from 400 to 599")
    return status


def _require_keys(spec: object, name: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(spec, dict) or not set(spec) <= allowed:
        raise InvalidRequest(f"{name} must be an object with keys from {sorted(allowed)}")
    return spec


def parse_faults(body: object) -> dict[str, Any]:
    """Validate a PUT /_admin/faults body into fault state; null clears one fault."""
    spec = _require_keys(
        body,
        "the body",
        {"latency_ms", "storm", "fail_after_pages", "fail_writes", "fail_write_ids"},
    )
    parsed: dict[str, Any] = {}
    if "latency_ms" in spec:
        if not _is_number(spec["latency_ms"]):
            raise InvalidRequest("latency_ms must be a number >= 0")
        parsed["latency_ms"] = spec["latency_ms"]
    if spec.get("storm") is not None:
        storm = _require_keys(spec["storm"], "storm", {"status", "count", "retry_after", "mode"})
        status = _status(storm)
        storm_mode = storm.get("mode", "status")
        if storm_mode not in ("status", "drop"):
            raise InvalidRequest('storm.mode must be "status" or "drop"')
        retry_after = storm.get("retry_after", 1 if status == 429 else None)
        if retry_after is not None and not _is_number(retry_after):
            raise InvalidRequest("storm.retry_after must be a number >= 0 or null")
        if not _is_int(storm.get("count"), 0):
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
        failure = _require_keys(
            spec["fail_after_pages"], "fail_after_pages", {"pages", "status", "mode"}
        )
        if not _is_int(failure.get("pages"), 0):
            raise InvalidRequest("fail_after_pages.pages must be an integer >= 0")
        mode = failure.get("mode", "status")
        if mode not in ("status", "drop"):
            raise InvalidRequest('fail_after_pages.mode must be "status" or "drop"')
        parsed["fail_after_pages"] = {
            "pages": failure["pages"],
            "status": _status(failure, 500),
            "mode": mode,
            "served": 0,
        }
    elif "fail_after_pages" in spec:
        parsed["fail_after_pages"] = None
    if spec.get("fail_writes") is not None:
        failing = _require_keys(spec["fail_writes"], "fail_writes", {"count", "status"})
        if not _is_int(failing.get("count"), 0):
            raise InvalidRequest("fail_writes.count must be an integer >= 0")
        status = _status(failing, 500)
        parsed["fail_writes"] = (
            {"count": failing["count"], "status": status} if failing["count"] else None
        )
    elif "fail_writes" in spec:
        parsed["fail_writes"] = None
    if spec.get("fail_write_ids") is not None:
        by_id = _require_keys(spec["fail_write_ids"], "fail_write_ids", {"ids", "status"})
        ids = by_id.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("fail_write_ids.ids must be a list of strings")
        parsed["fail_write_ids"] = {"ids": set(ids), "status": _status(by_id, 500)}
    elif "fail_write_ids" in spec:
        parsed["fail_write_ids"] = None
    return parsed


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
        if not _encodable(record):
            raise InvalidRequest(f"record {number} holds values that are not valid JSON text")
        records.append(record)
    return records


def _register_admin_api(app: flask.Flask, state: UpstreamState) -> None:
    @app.get("/_admin/health")
    def admin_health() -> flask.Response:
        return json_response({"status": "ok"})

    @app.post("/_admin/reset")
    def admin_reset() -> flask.Response:
        body = _request_json()
        body = {} if body is None else _require_keys(body, "the body", {"seed"})
        seed = body.get("seed", False)
        if not isinstance(seed, bool):
            raise InvalidRequest("seed must be true or false")
        with state.lock:
            state.reset(seed)
            names = sorted(state.collections)
        return json_response({"reset": True, "seeded": seed, "collections": names})

    @app.post("/_admin/collections/<resource:resource>")
    def admin_create_collection(resource: str) -> flask.Response:
        with state.lock:
            created = resource not in state.collections
            if created:
                state.collections[resource] = StoredCollection()
        return json_response({"collection": resource, "created": created}, 201 if created else 200)

    @app.post("/_admin/records/<resource:resource>")
    def admin_insert_records(resource: str) -> flask.Response:
        body = _request_json()
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

    @app.get("/_admin/records/<resource:resource>")
    def admin_dump_records(resource: str) -> flask.Response:
        with state.lock:
            collection = state.collections.get(resource)
            if collection is None:
                return error_response(404, f"unknown collection {resource!r}")
            if isinstance(collection, SyntheticCollection):
                return error_response(405, f"{resource!r} is computed; list it with GET")
            records = collection.all_records()
        return json_response(records)

    @app.get("/_admin/faults")
    def admin_get_faults() -> flask.Response:
        with state.lock:
            return json_response(state.public_faults())

    @app.put("/_admin/faults")
    def admin_set_faults() -> flask.Response:
        parsed = parse_faults(_request_json())
        with state.lock:
            state.faults.update(parsed)
            return json_response(state.public_faults())

    @app.delete("/_admin/faults")
    def admin_clear_faults() -> flask.Response:
        with state.lock:
            state.clear_faults()
            return json_response(state.public_faults())

    @app.get("/_admin/stats")
    def admin_stats() -> flask.Response:
        with state.lock:
            return json_response(dict(state.stats))


# --- pre-encoded pages (benchmarks) ----------------------------------------------------


class PreEncodedPages:
    """WSGI middleware: every list page of the synthetic collections at one page size,
    encoded once at start and then served from memory as bytes.

    Why: computing and encoding a page in Python makes this server the slow part of a
    feed benchmark, so every connector looks close to the limit. With ``--pre-encoded``
    a page costs the server next to nothing and a benchmark measures its client. The
    bytes are the computed pages' own (built through the app), so nothing else changes;
    a request for anything else (another page size, ``updated_since``, a write, a wrong
    token) or while a fault or latency is set goes to the app as usual. Memory: the
    whole encoded collection (about 320 bytes a record).
    """

    def __init__(self, app: flask.Flask, page_size: int) -> None:
        self.state: UpstreamState = app.extensions["demo_upstream"]
        self.wsgi_app = app.wsgi_app
        self.limit = str(page_size)
        self.pages: dict[tuple[str, str | None], bytes] = {}
        client = app.test_client()
        headers = {"Authorization": f"Bearer {self.state.token}"}
        for name in self.state.synthetic:
            params = {"limit": self.limit}
            while True:
                response = client.get(f"/{name}", query_string=params, headers=headers)
                body = response.get_data()
                if response.status_code != 200:
                    raise RuntimeError(f"pre-encoding {name}: HTTP {response.status_code}")
                self.pages[(f"/{name}", params.get("cursor"))] = body
                tail = body[body.rindex(b'"next_cursor":') :]  # the envelope's last key
                cursor = json.loads(b"{" + tail)["next_cursor"]
                if cursor is None:
                    break
                params["cursor"] = cursor
        self.state.stats = _fresh_stats()  # building the pages is not traffic
        self.authorization = f"Bearer {self.state.token}".encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.page(environ)
        if body is None:
            return self.wsgi_app(environ, start_response)
        with self.state.lock:
            self.state.stats["GET"] += 1
            self.state.stats["list_pages"] += 1
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def page(self, environ: dict[str, Any]) -> bytes | None:
        """The stored page this request asks for, or None to let the app answer."""
        if environ.get("REQUEST_METHOD") != "GET":
            return None
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        cursor = query.pop("cursor", [None])
        if query != {"limit": [self.limit]} or len(cursor) != 1:
            return None
        body = self.pages.get((environ.get("PATH_INFO", ""), cursor[0]))
        faults = self.state.faults
        if body is None or faults["latency_ms"] or faults["storm"] or faults["fail_after_pages"]:
            return None
        given = environ.get("HTTP_AUTHORIZATION", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self.authorization):
            return None  # the app answers 401 with its own words
        return body


# --- command line -----------------------------------------------------------------------


def _synthetic_arg(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if not re.fullmatch(ResourceConverter.regex, name) or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=COUNT, got {text!r}")
    return name, int(count)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.demo_upstream",
        description="Serve an in-memory Records API for tests, demos and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token clients must send (default: $DEMO_UPSTREAM_TOKEN, else demo-token)",
    )
    parser.add_argument("--no-seed", action="store_true", help="start without demo data")
    parser.add_argument(
        "--synthetic",
        action="append",
        nargs="+",
        type=_synthetic_arg,
        default=[],
        metavar="NAME=COUNT",
        help="add a computed read-only collection of COUNT records",
    )
    parser.add_argument("--tie-size", type=int, default=1000, help="records per shared time")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay per API request")
    parser.add_argument(
        "--pre-encoded",
        type=int,
        default=None,
        metavar="PAGE_SIZE",
        help="encode every page of the synthetic collections at this page size once at "
        "start and serve them from memory (benchmarks: the upstream then costs next to "
        "nothing)",
    )
    parser.add_argument(
        "--server",
        choices=("werkzeug", "gunicorn"),
        default="werkzeug",
        help="werkzeug closes every connection; gunicorn (one process, threaded) keeps "
        "them alive, as a real API would: the benchmarks use it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = args.token or os.environ.get("DEMO_UPSTREAM_TOKEN") or "demo-token"
    synthetic = dict(pair for group in args.synthetic for pair in group)
    try:
        app = create_app(
            token=token,
            seed=not args.no_seed,
            synthetic=synthetic,
            latency_ms=args.latency_ms,
            tie_size=args.tie_size,
        )
    except ValueError as exc:
        print(f"demo upstream: {exc}", file=sys.stderr)
        return 2
    if args.pre_encoded is not None:
        if not 1 <= args.pre_encoded <= MAX_LIMIT:
            print(f"demo upstream: --pre-encoded must be 1 to {MAX_LIMIT}", file=sys.stderr)
            return 2
        app.wsgi_app = PreEncodedPages(app, args.pre_encoded)  # type: ignore[method-assign]
    if args.server == "gunicorn":
        return _serve_with_gunicorn(app, args.host, args.port)
    server = make_server(args.host, args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"demo upstream listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()  # returns on KeyboardInterrupt (Ctrl-C, or SIGTERM below)
    return 0


def _serve_with_gunicorn(app: flask.Flask, host: str, port: int) -> int:
    """One worker (the data lives in its memory), threaded, with keep-alive."""
    from gunicorn.app.base import BaseApplication

    class DemoServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": 1,
                "threads": 16,
                "worker_class": "gthread",
                "keepalive": 75,
                "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> flask.Flask:
            return app

    print(f"demo upstream listening on http://{host}:{port} (gunicorn)", flush=True)
    DemoServer().run()
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """Docker and test harnesses stop us with SIGTERM; leave as cleanly as on Ctrl-C."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
