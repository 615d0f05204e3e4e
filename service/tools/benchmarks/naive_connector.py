"""A naive feed in the style of Sesam's old Python templates: the benchmark's yardstick.

Why it exists: issue 2's targets compare the connector with the approach it replaces.
This one fetches every upstream page into a list, maps records to entities,
``json.dumps`` the whole list and returns it, so its memory grows with the collection
and Sesam sees no byte until the last page is in. Do not copy it into a fork.

It runs under the connector's own gunicorn settings, so only the approach differs:

    gunicorn -c service/gunicorn.conf.py 'service.tools.benchmarks.naive_connector:create_app()'
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
from flask import Flask
from flask import Response

PAGE_SIZE = 1000


def create_app() -> Flask:
    upstream_url = os.environ["UPSTREAM_URL"].rstrip("/")
    headers = {"Authorization": f"Bearer {os.environ['UPSTREAM_TOKEN']}"}
    app = Flask(__name__)

    @app.get("/health")
    def health() -> Response:
        return Response('{"status": "ok"}', mimetype="application/json")

    @app.get("/<resource>")
    def get_entities(resource: str) -> Response:
        entities: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        while True:
            response = requests.get(
                f"{upstream_url}/{resource}", params=params, headers=headers, timeout=60
            )
            response.raise_for_status()
            page = response.json()
            for record in page["data"]:
                entity = dict(record)
                entity["_id"] = record["id"]
                entity["_updated"] = record["updated_at"]
                entity["_deleted"] = record["deleted"]
                entities.append(entity)
            if not page["next_cursor"]:
                break
            params["cursor"] = page["next_cursor"]
        return Response(json.dumps(entities), mimetype="application/json")

    return app
