"""Example: a connector for the demo Tickets API, built from the framework's blocks.

The Tickets API (``python -m service.tools.demo_tickets``) is shaped unlike the Records
API: page numbers (``page``, ``per_page``, ``total_pages``), an ``X-Api-Key`` header,
integer ids, second-precision times (``2026-01-02T03:04:05Z``) and a ``modified_since``
filter (inclusive) that is also the only way to see deletions (``"deleted": true``). A
fork to an API of this shape copies this module over ``service/connector.py`` and edits
the ``FORK:`` places; nothing outside it, its settings and its test wiring.

- Positions are (``TIMESTAMP``, ``INTEGER``): the framework encodes them so that ticket
  9 sorts before ticket 17, and decodes a ``since`` back to a datetime and an int.
- ``PageNumberPaging`` pages without losing a ticket that changes mid-run: it re-anchors
  on ``modified_since`` after each page, and checks page steps inside a run of equal
  times for a shift.
- ``ApiKey`` sends the key in its header, and never logs it.
- Times have whole seconds, so tickets written in the second the feed has just read can
  land behind a ``since`` Sesam already holds. The adapter declares the settle window its
  upstream's clock needs (``settle_seconds = 3``): what is younger than that is delivered
  with a provisional token, and read again once its second is over. ``FEED_SETTLE_SECONDS`` overrides it, when set
  (the framework logs a warning if it is set lower).

Run it with ``gunicorn -c service/gunicorn.conf.py 'service.tools.examples.tickets:create_app()'``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from service.framework.adapter import Adapter
from service.framework.adapter import Entity
from service.framework.adapter import Record
from service.framework.app import AppFactory
from service.framework.paging import PageNumberPaging
from service.framework.positions import INTEGER
from service.framework.positions import TIMESTAMP
from service.framework.settings import Settings
from service.framework.settings import int_between
from service.framework.settings import setting
from service.framework.settings import text
from service.framework.settings import url
from service.framework.transit import plain
from service.framework.upstream import UpstreamClient
from service.framework.upstream_auth import ApiKey


@dataclasses.dataclass(frozen=True, kw_only=True)
class TicketsSettings(Settings):
    """FORK: the Tickets API's settings, each declared once; the framework's are inherited."""

    tickets_url: str = setting("TICKETS_URL", url, meaning="Base URL of the Tickets API.")
    tickets_api_key: str = setting(
        "TICKETS_API_KEY", text, secret=True, meaning="API key for the Tickets API (X-Api-Key)."
    )
    tickets_page_size: int = setting(
        "TICKETS_PAGE_SIZE",
        int_between(1, 100),
        default="100",
        meaning="Tickets asked for per list page (per_page).",
    )


def modified_since(moment: datetime) -> dict[str, str]:
    """FORK: the upstream's filter from a position's time. Whole seconds, rounded down, so
    the filter stays inclusive of the anchor's own second."""
    return {"modified_since": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


class Tickets(Adapter):
    """The Tickets API: reading and writing tickets."""

    # FORK: the names a pipe may put in its url.
    collection = re.compile(r"[a-z][a-z0-9-]*")
    # FORK: what position() returns: a modification time and an integer id.
    position_parts = (TIMESTAMP, INTEGER)
    # FORK: the settle window the upstream's clock needs: whole seconds, and a little lag.
    settle_seconds = 3.0

    def __init__(self, settings: TicketsSettings) -> None:
        super().__init__(settings)
        # FORK: how to reach the upstream: its URL and its API key header.
        self.client = UpstreamClient.from_settings(
            settings,
            settings.tickets_url,
            auth=ApiKey(settings.tickets_api_key, header="X-Api-Key"),
        )
        # FORK: how the upstream pages (page numbers), where the list is, and its filter.
        self.paging = PageNumberPaging(
            position=self.position,
            codec=self.positions,
            since_params=modified_since,
            records="items",
            size=settings.tickets_page_size,
        )

    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Record]]:
        """FORK: every ticket after ``since`` (deletions included), or the live ones."""
        return self.paging.pages(self.client, self.client.url(collection), since=since)

    def position(self, record: Record) -> tuple[Any, ...]:
        """FORK: a ticket's place in feed order: (modified_at, id)."""
        return record["modified_at"], record["id"]

    def to_entity(self, record: Record) -> Entity:
        """FORK: one ticket as a Sesam entity; ``_id`` is the id as text."""
        entity = dict(record)
        entity["_id"] = str(record["id"])
        entity["_deleted"] = record.get("deleted") is True
        return entity

    def to_record(self, entity: Entity) -> Record:
        """FORK: one entity as the body of a write: no ``_`` fields, plain JSON values."""
        return {key: plain(value) for key, value in entity.items() if not key.startswith("_")}

    def key(self, entity_id: str) -> int:
        """FORK: a ticket id is a positive integer, written as the feed writes it ("17");
        anything else is refused (a 400 naming the entity), deletes included."""
        if not (entity_id.isascii() and entity_id.isdigit()) or entity_id.startswith("0"):
            raise ValueError(f"a ticket _id is a positive integer, not {entity_id!r}")
        return int(entity_id)

    def upsert(self, collection: str, key: int, record: Record) -> None:
        """FORK: create or replace one ticket (idempotent)."""
        self.client.request(
            "PUT", self.client.url(collection, str(key)), json_body=record, ok=(200, 201, 204)
        )

    def delete(self, collection: str, key: int) -> None:
        """FORK: delete one ticket; one already gone (404) counts as done."""
        self.client.request("DELETE", self.client.url(collection, str(key)), ok=(200, 204, 404))

    def live_ids(self, collection: str) -> Iterator[str]:
        """FORK: the _id of every live ticket, for a full sync's deletion detection."""
        for page in self.pages(collection, None):
            for record in page:
                if record.get("deleted") is not True:
                    yield str(record["id"])


create_app = AppFactory(Tickets, TicketsSettings)
