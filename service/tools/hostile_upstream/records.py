"""The records behind the default answers: collections in memory, keyset pages, cursors.

Written from the contract (the Records API in docs/demo-upstream.md), apart from the demo
upstream's store, so that the connector is checked against a second reading of the
contract rather than one implementation's accidents. Plain Python; the caller holds the
state's lock.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime as dt
import hashlib
import json
import re
import time
from typing import Any

Record = dict[str, Any]
Key = tuple[str, str]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
RESERVED = ("id", "updated_at", "deleted")
COLLECTION = re.compile(r"[a-z][a-z0-9-]*")
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


class Invalid(ValueError):
    """A request the contract calls wrong: 400, with this message."""


def timestamp(micros: int) -> str:
    """Microseconds since the epoch in the contract's one form, where string order is time
    order."""
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_timestamp(text: object) -> bool:
    if not isinstance(text, str) or not TIMESTAMP.fullmatch(text):
        return False
    try:
        dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise Invalid(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


class Store:
    """Collections of records by id. The (updated_at, id) order is sorted when a list asks
    for it and kept until the next write: the tool's collections are small."""

    def __init__(self) -> None:
        self.collections: dict[str, dict[str, Record]] = {}
        self.order: dict[str, list[Key]] = {}
        self.last = 0

    def stamp(self) -> str:
        """A write time, never before one handed out or seeded."""
        self.last = max(time.time_ns() // 1000, self.last + 1)
        return timestamp(self.last)

    def _saw(self, text: str) -> None:
        moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
        self.last = max(
            self.last, (moment - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
        )

    def _store(self, name: str, record: Record) -> None:
        self.collections.setdefault(name, {})[record["id"]] = record
        self.order.pop(name, None)

    def seed(self, name: str, given: object) -> int:
        """Records as given: ids as they are, a missing ``updated_at`` one time shared by
        the batch (a bulk import), ``deleted`` false unless given. Creates the collection."""
        if not COLLECTION.fullmatch(name):
            raise Invalid(f"collection names match {COLLECTION.pattern}")
        if not isinstance(given, list):
            raise Invalid("the body must be a JSON list of records")
        batch = None
        records = []
        for number, record in enumerate(given):
            if not isinstance(record, dict):
                raise Invalid(f"record {number} is not an object")
            if not isinstance(record.get("id"), str) or not record["id"]:
                raise Invalid(f"record {number} needs a non-empty string id")
            if "updated_at" in record and not is_timestamp(record["updated_at"]):
                raise Invalid(f"record {number}: updated_at is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
            if not isinstance(record.get("deleted", False), bool):
                raise Invalid(f"record {number}: deleted must be true or false")
            if "updated_at" not in record:
                batch = batch or self.stamp()
            records.append({"id": record["id"], "updated_at": batch, "deleted": False, **record})
        self.collections.setdefault(name, {})
        for record in records:
            self._saw(record["updated_at"])
            self._store(name, record)
        return len(records)

    def exists(self, name: str) -> bool:
        return name in self.collections

    def keys(self, name: str) -> list[Key]:
        if name not in self.order:
            records = self.collections[name].values()
            self.order[name] = sorted((r["updated_at"], r["id"]) for r in records)
        return self.order[name]

    def dump(self, name: str) -> list[Record]:
        """Every record of a collection, tombstones included, in list order."""
        return [self.collections[name][record_id] for _, record_id in self.keys(name)]

    def page(
        self, name: str, limit: int, cursor: str | None, since: str | None
    ) -> tuple[list[Record], str | None]:
        """One list page and the next page's cursor (None on the last page)."""
        if since is not None and not is_timestamp(since):
            raise Invalid("updated_since must be in the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
        bound = _fingerprint(name, limit, since)
        keys = self.keys(name)
        if cursor is not None:
            start = bisect.bisect_right(keys, _decode(cursor, bound))
        elif since is not None:
            start = bisect.bisect_left(keys, (since, ""))
        else:
            start = 0
        records = self.collections[name]
        data: list[Record] = []
        for _, record_id in keys[start:]:
            record = records[record_id]
            if record["deleted"] and since is None:
                continue
            if len(data) == limit:
                return data, _encode(data[-1], bound)
            data.append(record)
        return data, None

    def get(self, name: str, record_id: str) -> Record | None:
        record = self.collections[name].get(record_id)
        return None if record is None or record["deleted"] else record

    def put(self, name: str, record_id: str, fields: object) -> Record:
        if not isinstance(fields, dict):
            raise Invalid("the body must be a JSON object of the record's fields")
        kept = {key: value for key, value in fields.items() if key not in RESERVED}
        record = {"id": record_id, "updated_at": self.stamp(), "deleted": False, **kept}
        self._store(name, record)
        return record

    def delete(self, name: str, record_id: str) -> bool:
        """Make a tombstone; False when there is no live record to delete."""
        if self.get(name, record_id) is None:
            return False
        old = self.collections[name][record_id]
        self._store(name, {**old, "updated_at": self.stamp(), "deleted": True})
        return True


def _fingerprint(name: str, limit: int, since: str | None) -> str:
    """Binds a cursor to the parameters that shaped its list."""
    raw = json.dumps([name, limit, since]).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:12]


def _encode(last: Record, bound: str) -> str:
    raw = json.dumps([last["updated_at"], last["id"], bound]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(cursor: str, bound: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, record_id, seen = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise Invalid("cursor is not one this server issued") from None
    if seen != bound or not is_timestamp(updated_at) or not isinstance(record_id, str):
        raise Invalid("cursor is not one this server issued for these parameters")
    return (updated_at, record_id)
