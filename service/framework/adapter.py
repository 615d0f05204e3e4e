"""The seam between the framework and a fork: one adapter object per upstream.

The framework's feed and sink call an ``Adapter`` and never take it apart. A fork writes
one subclass in its connector module (``service/<name>.py``): how to page through the
upstream, where a record sits in feed order, record to entity and back, and the writes.
The framework owns everything Sesam sees: since tokens, streaming, the failure contract,
batches, sequences, 409s, retries of the batch, errors.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

from service.framework.errors import NotFound
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Part
from service.framework.positions import Positions
from service.framework.settings import Settings

Record = dict[str, Any]  # one upstream record, as the upstream's JSON has it
Entity = dict[str, Any]  # one Sesam entity
#: One named HTTP transform: an entity in; out the entity transformed, or a list of zero or
#: more entities (filtered out, split, new). Raise ValueError to refuse the entity (a 400
#: naming it); an UpstreamError is a 502/504 naming it.
Transform = Callable[[Entity], Entity | list[Entity]]


class Adapter(abc.ABC):
    """What the framework needs of an upstream. ``create_app`` builds one per process."""

    #: The names a pipe may put in its url (``GET /<collection>``, ``POST /<collection>``):
    #: anything else is a 404 before the upstream is asked.
    collection: re.Pattern[str] = re.compile(r"[a-z][a-z0-9-]*")

    #: What ``position(record)`` returns, part by part (``service.framework.positions``):
    #: the framework makes ``_updated`` from it and hands ``since`` back decoded.
    position_parts: tuple[Part, ...] = (TIMESTAMP, TEXT)

    #: False for an upstream that cannot list its records in position order (no sort, no
    #: "changed since"): the feed then does full runs only (a ``since`` is a 400), does not
    #: check the order, and Sesam finds deletions by its full-run rule. Register the pipe
    #: with ``"supports_since": false``. An upstream that can sort but not filter keeps
    #: True: its ``pages`` ignores ``since``, and the feed skips what Sesam has.
    supports_since: bool = True

    #: The settle window this upstream's clock needs (docs/feed.md, "The settle window"):
    #: records whose time is within this many seconds of now are delivered with provisional
    #: tokens, and the next run asks again from the window's start, so that a record
    #: written late into an instant the feed has read is not skipped. Its times' precision plus its commit lag (3 for whole seconds); 0 for an
    #: upstream that stamps each write with a fine, unique time as it stores it (the
    #: Records API). ``FEED_SETTLE_SECONDS``, when set, overrides it.
    settle_seconds: float = 0.0

    #: Empty pages in a row that ``pages`` may yield before the feed takes the upstream
    #: for looping and fails the run (the paging blocks end their own loops sooner).
    max_empty_pages: int = 20

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.positions = Positions(self.position_parts)

    @abc.abstractmethod
    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Record]]:
        """The collection's records, a page at a time, in feed order (the order of
        ``position``). With ``since`` (a position's typed values, or its first parts):
        every change from its first part on (inclusive: the feed skips what it delivered),
        deletions included; without it, the live records.

        The feed asks for the first page before it answers Sesam, and reads one page ahead.
        """

    @abc.abstractmethod
    def position(self, record: Record) -> tuple[Any, ...]:
        """A record's place in feed order, one value per part of ``position_parts``, for
        example (modification time, id). Unique per record; the feed breaks if the
        upstream's order is not this order."""

    @abc.abstractmethod
    def to_entity(self, record: Record) -> Entity:
        """One upstream record as a Sesam entity with ``_id`` and ``_deleted`` (the feed
        adds ``_updated``). The record is the feed's own, parsed from the upstream's answer
        (``position`` reads it first), so it may be changed and returned as the entity:
        that saves a copy per entity. Add keys, but leave the values ``position`` reads as
        they are: the paging blocks (``service.framework.paging``) may read a page's last
        record's position again after the feed has taken the page."""

    @abc.abstractmethod
    def to_record(self, entity: Entity) -> Record:
        """One Sesam entity as the body of an upstream write. Raise ValueError to refuse
        it: the sink answers 400 naming the entity, and writes nothing."""

    def key(self, entity_id: str) -> Any:
        """The upstream's key for an entity's ``_id``, deleted or not: the inverse of the
        ``_id`` that ``to_entity`` makes. A string key as it is (the default); parse an
        integer key, split a compound one. Raise ValueError to refuse the ``_id``: the
        sink answers 400 naming the entity, and writes nothing."""
        return entity_id

    @abc.abstractmethod
    def upsert(self, collection: str, key: Any, record: Record) -> None:
        """Create or replace the record with this key (``key``). Idempotent: Sesam
        retries batches."""

    @abc.abstractmethod
    def delete(self, collection: str, key: Any) -> None:
        """Delete the record with this key; one that is already gone counts as done."""

    @abc.abstractmethod
    def live_ids(self, collection: str) -> Iterator[str]:
        """The entity ``_id`` of every live record, for a full sync's deletion detection."""

    def transform(self, name: str) -> Transform | None:
        """The HTTP transform a pipe names (``POST /transform/<name>``), or None (a 404).

        Optional: an adapter without transforms leaves this as it is. The framework asks
        for the transform on each request, calls it once per entity (several at once, like
        the sink's writes) and keeps the batch's order; reserved fields (``_id``,
        ``_updated``, ...) of an entity the transform returns pass through unless it sets
        them (``service/framework/transform.py``).
        """
        return None


def require_collection(adapter: Adapter, name: str) -> None:
    """A 404 for a name the adapter does not serve, before the upstream is asked."""
    if not adapter.collection.fullmatch(name):
        raise NotFound(f"{name!r} is not a collection name")
