"""An upstream whose paging loops (issue 18, item 3), against the real server: the
reference connector under gunicorn in front of the hostile upstream, with small pages and
deletion detection on.

Before issue 18 a ``next_cursor`` that repeats made a since run read the same page for
ever, about 270 requests a second, and a full sync's deletion listing the same. Now the
walk stops after a few pages: what Sesam gets is a 502 naming the cursor, and the upstream
saw a few requests and no delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service.tests.functional.untrusted_upstream_kit import HealthWatch
from service.tests.functional.untrusted_upstream_kit import HostileConnector
from service.tests.functional.untrusted_upstream_kit import read_feed
from service.tests.functional.untrusted_upstream_kit import requests_to
from service.tests.functional.untrusted_upstream_kit import serving
from service.tests.hostile_kit import HostileUpstream
from service.tests.hostile_kit import rule

pytest_plugins = ["service.tests.hostile_kit"]

PAGE_SIZE = 2
TIME = "2026-01-01T00:00:00.000000Z"
LOOP = "c2FtZS1jdXJzb3I"  # the cursor the upstream sends again and again


@pytest.fixture(scope="module")
def connector(
    hostile_server: HostileUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileConnector]:
    with serving(
        hostile_server,
        tmp_path_factory.mktemp("loops"),
        UPSTREAM_PAGE_SIZE=str(PAGE_SIZE),
        FULL_SYNC_DELETE="true",
    ) as served:
        yield served


def records(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "updated_at": TIME} for i in ids]


def token(record_id: str) -> str:
    """The feed's ``_updated`` of a record at TIME."""
    return f"{TIME}_{record_id.encode().hex()}"


def looping(page: list[dict[str, Any]]) -> dict[str, Any]:
    """After the first page, every page is ``page`` with the same next cursor."""
    return rule(
        "json",
        method="GET",
        prefix="/people",
        query="cursor=",
        json={"data": page, "next_cursor": LOOP},
    )


@pytest.mark.parametrize(
    ("page", "says"),
    [
        ([], [f"the cursor '{LOOP}' again"]),
        (records("r2"), ["page 3", "a page sent again is a loop"]),
    ],
    ids=["empty pages", "the since record again"],
)
def test_a_repeating_cursor_in_a_since_run_is_a_502_naming_it(hostile, connector, page, says):
    """Sesam's incremental run finds nothing new (its since is the last record), and the
    upstream's cursor loops: the walk stops before a byte is sent, so Sesam gets a 502
    that says why, after a few upstream requests."""
    hostile.seed("people", records("r0", "r1", "r2"))
    hostile.set_rules(looping(page))
    with HealthWatch(connector):
        feed = read_feed(connector.url, "people", params={"since": token("r2")}, timeout=30)
    assert feed.status == 502, feed.body[:300]
    detail = feed.json()["detail"]
    for said in says:
        assert said in detail, detail
    assert requests_to(hostile, "GET") <= 4


def test_a_repeating_cursor_in_a_full_syncs_deletion_listing_deletes_nothing(hostile, connector):
    """A full sync sends a0; the upstream also holds b0 and b1, which its deletion
    detection would delete, but the listing of live records loops: a 502 naming the
    cursor, and nothing deleted."""
    hostile.seed("people", records("a0", "b0", "b1"))
    hostile.set_rules(looping([]))
    sync = {
        "is_full": "true",
        "sequence_id": str(uuid.uuid4()),
        "request_id": str(uuid.uuid4()),
        "is_first": "true",
        "is_last": "true",
    }
    with HealthWatch(connector):
        response = connector.post("people", params=sync, json=[{"_id": "a0", "v": 1}])
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert "listing the upstream's live records failed" in detail, detail
    assert f"the cursor '{LOOP}' again" in detail, detail
    assert requests_to(hostile, "DELETE") == 0
    assert requests_to(hostile, "GET") <= 4
    live = {r["id"] for r in hostile.records("people") if not r["deleted"]}
    assert live == {"a0", "b0", "b1"}
