"""The demo upstream's records: timestamps, collections kept in (updated_at, id) order,
pages and cursors. Plain Python, no HTTP: the handlers in ``app`` call these."""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Sequence
from typing import Any
from typing import Protocol

Record = dict[str, Any]
Key = tuple[str, str]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
RESERVED_FIELDS = ("id", "updated_at", "deleted")

_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MICROSECOND = dt.timedelta(microseconds=1)


class InvalidRequest(ValueError):
    """A request the contract calls wrong: 400."""


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


class Clock:
    """Hands out write times that never go backwards, even if the wall clock does.

    By default every write gets a new microsecond. For tests it can be made coarse
    (``tick``: times are cut to whole ticks, and writes within one tick share its time) or
    frozen (every write gets one time until it is advanced or thawed): the way a
    second-precision upstream stamps writes, made as long as a test needs.
    """

    def __init__(self) -> None:
        self.last = 0
        self.tick = 1  # microseconds
        self.frozen: int | None = None

    def now(self) -> int:
        if self.frozen is not None:
            return self.frozen
        now = time.time_ns() // 1000
        return now - now % self.tick

    def next(self) -> str:
        fine = self.frozen is None and self.tick == 1
        self.last = max(self.now(), self.last + 1 if fine else self.last)
        return format_timestamp(self.last)

    def saw(self, micros: int) -> None:
        """An inserted record's time: later writes must sort after it."""
        self.last = max(self.last, micros)

    def freeze(self, at: int | None = None) -> None:
        """Stop the clock at ``at`` (microseconds), or at now, never before the last write."""
        self.frozen = max(self.now() if at is None else at, self.last)

    def advance(self, micros: int) -> None:
        if self.frozen is None:
            raise InvalidRequest("advance needs a frozen clock")
        self.frozen += micros

    def thaw(self) -> None:
        self.frozen = None
        self.tick = 1

    def describe(self) -> dict[str, Any]:
        return {
            "now": format_timestamp(self.now()),
            "frozen": self.frozen is not None,
            "tick_seconds": self.tick / 1_000_000,
        }


# --- collections ------------------------------------------------------------------------


class Collection(Protocol):
    """What the list, get and write handlers need of a collection, stored or computed."""

    read_only: bool

    @property
    def keys(self) -> Sequence[Key]: ...

    def __len__(self) -> int: ...

    def record_at(self, position: int) -> Record: ...

    def get(self, record_id: str) -> Record | None: ...


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


# --- pages and cursors ------------------------------------------------------------------


def encodable(record: Record) -> bool:
    """Reject what cannot go out as strict UTF-8 JSON (lone surrogates, NaN) at write time."""
    try:
        json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def cursor_fingerprint(resource: str, limit: int, since: str | None) -> str:
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


def parse_limit(raw: str | None) -> int:
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
