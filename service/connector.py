"""The Records API connector for Sesam: an entity feed and a sink.

This is the file a fork edits. Every place that knows the upstream is marked ``FORK:``
(``grep -n "FORK:" service/connector.py``). The Sesam protocols, the HTTP client,
settings, logging and errors live in the other modules of ``service/`` and stay as
they are.

Run it with ``gunicorn -c service/gunicorn.conf.py 'service.connector:create_app()'``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask import jsonify

from service.framework.auth import register_basic_auth
from service.framework.errors import register_error_handlers
from service.framework.feed import register_feed
from service.framework.settings import configure_logging
from service.framework.settings import load_settings
from service.framework.sink import register_sink
from service.framework.transit import plain
from service.framework.upstream import UpstreamClient
from service.framework.upstream import UpstreamError

# FORK: the names a pipe may put in its url, one per upstream collection.
COLLECTION = re.compile(r"[a-z][a-z0-9-]*")


class Records:
    """The upstream-specific half of the connector: reading and writing records."""

    def __init__(self, client: UpstreamClient, page_size: int = 1000) -> None:
        self.client = client
        self.page_size = page_size

    def pages(
        self, resource: str, updated_since: str | None, page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """FORK: how to page through the upstream, in (updated_at, id) order.

        With ``updated_since`` (inclusive), every change including deletions; without
        it, the live records. The feed asks for the first page before it answers Sesam.
        """
        params: dict[str, Any] = {"limit": page_size}
        if updated_since is not None:
            params["updated_since"] = updated_since
        url = self.client.url(resource)
        while True:
            body = self.client.get_json(url, params)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise UpstreamError(f"upstream list answer has no data list: GET {url}", url=url)
            yield body["data"]
            cursor = body.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    @staticmethod
    def position(record: dict[str, Any]) -> tuple[str, str]:
        """FORK: a record's place in feed order: (modification time, id)."""
        return record["updated_at"], record["id"]

    @staticmethod
    def to_entity(record: dict[str, Any]) -> dict[str, Any]:
        """FORK: one upstream record as a Sesam entity (the feed adds ``_updated``)."""
        entity = dict(record)
        entity["_id"] = record["id"]
        entity["_deleted"] = record.get("deleted") is True
        return entity

    @staticmethod
    def to_record(entity: dict[str, Any]) -> dict[str, Any]:
        """FORK: one Sesam entity as the body of an upstream write.

        Sesam's reserved fields (top-level keys starting with ``_``) are dropped and its
        typed strings become plain JSON (``service.framework.transit``). Raise ValueError to
        refuse an entity: the sink answers 400 naming it, and writes nothing.
        """
        return {key: plain(value) for key, value in entity.items() if not key.startswith("_")}

    def upsert(self, resource: str, record_id: str, record: dict[str, Any]) -> None:
        """FORK: create or replace one record (idempotent: Sesam retries batches)."""
        self.client.request(
            "PUT", self.client.url(resource, record_id), json_body=record, ok=(200, 201, 204)
        )

    def delete(self, resource: str, record_id: str) -> None:
        """FORK: delete one record; one that is already gone (404) counts as done."""
        self.client.request("DELETE", self.client.url(resource, record_id), ok=(200, 204, 404))

    def live_ids(self, resource: str) -> Iterator[str]:
        """FORK: the ids of every live record, for a full sync's deletion detection."""
        for page in self.pages(resource, None, self.page_size):
            for record in page:
                if record.get("deleted") is not True:
                    yield record["id"]


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """The application factory. ``config`` overrides the environment (tests use it)."""
    settings = load_settings({**os.environ, **(config or {})})
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    records = Records(UpstreamClient.from_settings(settings), page_size=settings.upstream_page_size)
    register_error_handlers(app)
    register_basic_auth(app, settings)
    register_health(app)
    register_feed(
        app,
        settings,
        collection=COLLECTION,
        pages=records.pages,
        position=records.position,
        to_entity=records.to_entity,
    )
    register_sink(
        app,
        settings,
        collection=COLLECTION,
        to_record=records.to_record,
        upsert=records.upsert,
        delete=records.delete,
        live_ids=records.live_ids,
    )
    return app


def register_health(app: Flask) -> None:
    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})
