"""The Records API connector for Sesam: an entity feed, a sink and an HTTP transform.

This is the file a fork edits: one adapter class and the settings it reads. Every place
that knows the upstream is marked ``FORK:`` (``grep -n "FORK:" service/connector.py``).
The Sesam protocols, the HTTP client, settings, logging and errors live in
``service/framework/`` and stay as they are.

Gunicorn serves its ``create_app()`` as ``fork.toml`` names it:
``gunicorn -c service/gunicorn.conf.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from typing import Any

from service.framework.adapter import Adapter
from service.framework.adapter import Entity
from service.framework.adapter import Record
from service.framework.adapter import Transform
from service.framework.app import AppFactory
from service.framework.paging import LoopGuard
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import utc_text
from service.framework.settings import Settings
from service.framework.settings import int_between
from service.framework.settings import setting
from service.framework.settings import text
from service.framework.settings import url
from service.framework.transit import plain
from service.framework.upstream import UpstreamClient
from service.framework.upstream import UpstreamError

# The keys the transform ``<collection>-record`` adds, namespaced as Sesam's are.
RECORD = "records:record"
RECORD_FOUND = "records:found"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorSettings(Settings):
    """FORK: the upstream's own settings, each declared once; the framework's are inherited."""

    upstream_url: str = setting("UPSTREAM_URL", url, meaning="Base URL of the Records API.")
    upstream_token: str = setting(
        "UPSTREAM_TOKEN", text, secret=True, meaning="Bearer token for the Records API."
    )
    upstream_page_size: int = setting(
        "UPSTREAM_PAGE_SIZE",
        int_between(1, 1000),
        default="1000",
        meaning="Records asked for per upstream list request.",
    )


class Records(Adapter):
    """The upstream-specific half of the connector: reading and writing records."""

    # FORK: the names a pipe may put in its url, one per upstream collection.
    collection = re.compile(r"[a-z][a-z0-9-]*")
    # FORK: what position() returns: a modification time (ISO 8601) and a string id.
    position_parts = (TIMESTAMP, TEXT)

    def __init__(self, settings: ConnectorSettings) -> None:
        super().__init__(settings)
        # FORK: how to reach the upstream (its URL and credentials).
        self.client = UpstreamClient.from_settings(
            settings, settings.upstream_url, settings.upstream_token
        )
        self.page_size = settings.upstream_page_size

    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Record]]:
        """FORK: how to page through the upstream, in (updated_at, id) order.

        With ``since`` (inclusive), every change including deletions; without it, the
        live records. The Records API's cursor is a keyset (a position), so this loop
        loses nothing; for another upstream's paging (offsets, page numbers, next links,
        other cursors) take a block from ``service.framework.paging``
        (docs/building-blocks.md): a plain loop over those can skip records.
        """
        params: dict[str, Any] = {"limit": self.page_size}
        if since is not None:
            params["updated_since"] = utc_text(since[0])
        url = self.client.url(collection)
        guard = LoopGuard(url)  # an upstream whose cursor loops fails the run
        while True:
            body = self.client.get_json(url, params)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise UpstreamError(f"upstream list answer has no data list: GET {url}", url=url)
            records = body["data"]
            guard.page(self.position(records[-1]) if records else None)
            yield records
            cursor = body.get("next_cursor")
            if not cursor:
                return
            guard.step(cursor)
            params["cursor"] = cursor

    def position(self, record: Record) -> tuple[Any, ...]:
        """FORK: a record's place in feed order: (modification time, id)."""
        return record["updated_at"], record["id"]

    def to_entity(self, record: Record) -> Entity:
        """FORK: one upstream record as a Sesam entity (the feed adds ``_updated``).

        In place, without a copy: the record was parsed for the feed alone (see
        ``Adapter.to_entity``); the new keys come after its own, as in a copy.
        """
        record["_id"] = record["id"]
        record["_deleted"] = record.get("deleted") is True
        return record

    def to_record(self, entity: Entity) -> Record:
        """FORK: one Sesam entity as the body of an upstream write.

        Sesam's reserved fields (top-level keys starting with ``_``) are dropped and its
        typed strings become plain JSON (``service.framework.transit``). Raise ValueError
        to refuse an entity: the sink answers 400 naming it, and writes nothing.
        """
        return {key: plain(value) for key, value in entity.items() if not key.startswith("_")}

    def key(self, entity_id: str) -> str:
        """FORK: the upstream's key for an entity's _id, deleted or not (here the same
        string; raise ValueError to refuse an _id the upstream cannot have)."""
        return entity_id

    def upsert(self, collection: str, key: str, record: Record) -> None:
        """FORK: create or replace one record (idempotent: Sesam retries batches)."""
        self.client.request(
            "PUT", self.client.url(collection, key), json_body=record, ok=(200, 201, 204)
        )

    def delete(self, collection: str, key: str) -> None:
        """FORK: delete one record; one that is already gone (404) counts as done."""
        self.client.request("DELETE", self.client.url(collection, key), ok=(200, 204, 404))

    def live_ids(self, collection: str) -> Iterator[str]:
        """FORK: the ids of every live record, for a full sync's deletion detection."""
        for page in self.pages(collection, None):
            for record in page:
                if record.get("deleted") is not True:
                    yield record["id"]

    def transform(self, name: str) -> Transform | None:
        """FORK: the HTTP transforms a pipe may name (``POST /transform/<name>``); None is a
        404. Here one per collection, ``<collection>-record`` (see ``add_record``)."""
        collection, _, kind = name.rpartition("-")
        if kind == "record" and self.collection.fullmatch(collection):
            return functools.partial(self.add_record, collection)
        return None

    def add_record(self, collection: str, entity: Entity) -> Entity:
        """FORK: the transform ``<collection>-record``: the upstream's record with the
        entity's ``_id`` under ``records:record``, and ``records:found`` saying whether the
        upstream has it (a record it does not have, or has deleted, is ``false`` and
        ``null``). One GET per entity; the framework runs several at once."""
        url = self.client.url(collection, self.key(entity["_id"]))
        response = self.client.request("GET", url, ok=(200, 404))
        if response.status_code == 404:
            return {**entity, RECORD_FOUND: False, RECORD: None}
        try:
            record = response.json()
        except ValueError:
            raise UpstreamError(
                f"upstream sent invalid JSON to GET {url}", status=200, url=url
            ) from None
        return {**entity, RECORD_FOUND: True, RECORD: record}


# The application factory: create_app(config=None) -> Flask; ``config`` overrides the
# environment (tests use it).
create_app = AppFactory(Records, ConnectorSettings)
