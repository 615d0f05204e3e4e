"""The Tickets example's test wiring: the conformance suite against the example Tickets
adapter (``service/tools/examples/tickets.py``) in front of the demo Tickets API.

It has the shape of the fork's own wiring in ``service/tests/conftest.py``: one
``conformance_target`` fixture (the running connector, the collection, a driver of the
upstream, the skips, the settle window). ``test_tickets_conformance.py`` beside it runs the
suite's checks against it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
import requests

from service.tests.conformance.conftest import conformance_connector  # noqa: F401
from service.tests.conformance.conftest import conformance_skips  # noqa: F401
from service.tests.conformance.conftest import conformance_upstream  # noqa: F401
from service.tests.conformance.kit import ConformanceTarget
from service.tests.conformance.kit import NotSupported
from service.tests.framework_kit import Connector
from service.tests.framework_kit import start_connector
from service.tools.apps import factory
from service.tools.servers import free_port
from service.tools.servers import start
from service.tools.servers import stop
from service.tools.servers import wait_until_up

API_KEY = "tickets-key-s3cr3t"
COLLECTION = "conformance"


@pytest.fixture(scope="session")
def tickets_wiring() -> dict[str, str]:
    """The app under test and its settings besides the URL and the key. Times have whole
    seconds: the adapter declares the settle window they need (``settle_seconds``), so the
    wiring sets no ``FEED_SETTLE_SECONDS``."""
    return {
        "app": "service.tools.examples.tickets:create_app()",
        "TICKETS_PAGE_SIZE": "25",
    }


def settle_seconds(wiring: dict[str, str]) -> float:
    """The connector's settle window: ``FEED_SETTLE_SECONDS`` when the wiring sets it, else
    what its adapter declares."""
    if wiring.get("FEED_SETTLE_SECONDS"):
        return float(wiring["FEED_SETTLE_SECONDS"])
    return float(factory(wiring["app"]).adapter_class.settle_seconds)


class TicketsApi:
    """The demo Tickets API on loopback: its admin switches, and calls as a client makes them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.url}/_admin/{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json() if response.content else None

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Api-Key": API_KEY}
        return self.http.request(
            method, f"{self.url}/{path}", headers=headers, timeout=60, **kwargs
        )

    def live(self, collection: str) -> dict[str, dict[str, Any]]:
        tickets = self.admin("GET", f"records/{collection}")
        return {str(t["id"]): t for t in tickets if not t["deleted"]}


@pytest.fixture(scope="session")
def tickets_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TicketsApi]:
    port = free_port()
    log = tmp_path_factory.mktemp("tickets-api") / "tickets-api.log"
    command = [sys.executable, "-m", "service.tools.demo_tickets", "--port", str(port)]
    process = start([*command, "--api-key", API_KEY, "--no-seed"], log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_admin/stats", process, log, seconds=20)
        yield TicketsApi(url)
    finally:
        stop(process, seconds=15)


@pytest.fixture(scope="session")
def tickets_connector(
    tickets_api: TicketsApi,
    tickets_wiring: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Connector]:
    """The Tickets connector under gunicorn, with the contract's command."""
    settings = {k: v for k, v in tickets_wiring.items() if k != "app"}
    process, connector = start_connector(
        tickets_api.url,
        tmp_path_factory.mktemp("tickets-connector"),
        app=tickets_wiring["app"],
        TICKETS_URL=tickets_api.url,
        TICKETS_API_KEY=API_KEY,
        **settings,
    )
    try:
        yield connector
    finally:
        stop(process, seconds=15)


NO_TRANSFORM = "the Tickets example defines no HTTP transform (Adapter.transform)"
TRANSFORM_CHECKS = (
    "test_the_transform_answers_a_batch_in_order_keeping_reserved_fields",
    "test_the_transform_answers_an_empty_batch_with_an_empty_array",
    "test_the_transform_refuses_a_bad_batch_with_a_json_4xx",
    "test_an_upstream_failure_in_the_transform_is_a_non_2xx",
)


@pytest.fixture
def conformance_target(
    tickets_connector: Connector, tickets_api: TicketsApi, tickets_wiring: dict[str, str]
) -> ConformanceTarget:
    tickets_api.admin("POST", "reset", {"seed": False})
    return ConformanceTarget(
        url=tickets_connector.url,
        collection=COLLECTION,
        upstream=TicketsConformanceUpstream(
            tickets_api, COLLECTION, int(tickets_wiring["TICKETS_PAGE_SIZE"])
        ),
        skips={name: NO_TRANSFORM for name in TRANSFORM_CHECKS},
        settle_seconds=settle_seconds(tickets_wiring),
    )


def _second(text: str, plus: int = 0) -> str:
    moment = datetime.fromisoformat(text) + timedelta(seconds=plus)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TicketsConformanceUpstream:
    """The demo Tickets API as the conformance suite seeds, breaks, changes and inspects it
    (``ConformanceUpstream`` says what each method must do)."""

    def __init__(self, api: TicketsApi, collection: str, page_size: int) -> None:
        self.api = api
        self.collection = collection
        self.page_size = page_size
        api.admin("POST", f"collections/{collection}")

    def seed(self, count: int, tie: int) -> None:
        before = (count - tie) // 2
        times = (
            [_second("2025-12-31T00:00:00Z", n) for n in range(before)]
            + ["2026-01-01T00:00:00Z"] * tie
            + [_second("2026-01-01T00:00:01Z", n) for n in range(count - tie - before)]
        )
        # ids out of time order, so the feed's order is (time, id), not insertion order
        tickets = [
            {"id": (n * 7919) % count + 1, "modified_at": at, "subject": f"Ticket {n}", "n": n}
            for n, at in enumerate(times)
        ]
        self.api.admin("POST", f"records/{self.collection}", tickets)

    def delete(self, entity_id: str) -> None:
        response = self.api.api("DELETE", f"{self.collection}/{entity_id}")
        assert response.status_code == 204, response.text

    def change(self, entity_id: str) -> None:
        ticket = self.api.live(self.collection)[entity_id]
        body = {k: v for k, v in ticket.items() if k not in ("id", "modified_at", "deleted")}
        body["changed"] = body.get("changed", 0) + 1
        response = self.api.api("PUT", f"{self.collection}/{entity_id}", json=body)
        assert response.status_code == 200, response.text

    def change_after_pages(self, entity_id: str, pages: int) -> None:
        change = {"pages": pages, "id": int(entity_id)}
        self.api.admin("PUT", "faults", {"change_after_pages": change})

    def coarse_clock(self) -> None:
        self.api.admin("PUT", "clock", {"freeze": True})  # one second, as long as needed

    def expire_tokens(self) -> None:
        raise NotSupported("the Tickets API's key is static: it never expires")

    def break_before_first_page(self) -> None:
        storm = {"status": 500, "count": 1_000_000, "retry_after": None}
        self.api.admin("PUT", "faults", {"storm": storm})

    def break_after_first_page(self) -> None:
        self.api.admin("PUT", "faults", {"fail_after_pages": {"pages": 1, "status": 500}})

    def heal(self) -> None:
        self.api.admin("DELETE", "faults")
        self.api.admin("DELETE", "clock")

    def entity(self, number: int) -> dict[str, Any]:
        return {
            "_id": str(1000 + number),
            "subject": f"Ticket {number}",
            "n": number,
            "tags": ["a", "b"],
            "requester": {"name": "Ada"},
        }

    def written(self) -> dict[str, dict[str, Any]]:
        return {
            ticket_id: {k: v for k, v in ticket.items() if k != "modified_at"}
            for ticket_id, ticket in self.api.live(self.collection).items()
        }

    def writes(self) -> int:
        stats = self.api.admin("GET", "stats")
        return stats.get("PUT", 0) + stats.get("DELETE", 0)


__all__ = [
    "conformance_connector",
    "conformance_skips",
    "conformance_target",
    "conformance_upstream",
    "tickets_api",
    "tickets_connector",
    "tickets_wiring",
]
