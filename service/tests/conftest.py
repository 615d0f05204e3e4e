"""The fork's test wiring: the one file of service/tests/ a fork edits (``FORK:``).

The framework's own fixtures (the demo upstream, the reference connector) come from
``service/tests/framework_kit.py``, loaded by ``pytest_configure`` below; the tests of the
protocols use them, unchanged in every fork. Here: the app of this connector for its own
tests (``test_<name>.py``), and the conformance suite's target
(``service/tests/conformance/``): this connector, running, and a driver of its upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("service.tests.framework_kit")

from service.connector import create_app  # noqa: E402
from service.tests.conformance.kit import ConformanceTarget  # noqa: E402
from service.tests.conformance.kit import NotSupported  # noqa: E402
from service.tests.framework_kit import UPSTREAM_TOKEN  # noqa: E402
from service.tests.framework_kit import Connector  # noqa: E402
from service.tests.framework_kit import Upstream  # noqa: E402
from service.tests.framework_kit import running_connector  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """The framework kit's fixtures, for every test here."""
    config.pluginmanager.import_plugin("service.tests.framework_kit")


# FORK: how this connector is started, its upstream's settings (beside UPSTREAM_URL), and
# the collection the conformance suite uses.
APP = "service.connector:create_app()"
PAGE_SIZE = 100  # small, so that the conformance suite's seeds span many pages
SETTINGS = {"UPSTREAM_TOKEN": UPSTREAM_TOKEN, "UPSTREAM_PAGE_SIZE": str(PAGE_SIZE)}
CONFORMANCE_COLLECTION = "conformance"
# The loss checks make the upstream's clock coarse: the feed must read the instant that is
# not over again, once it is (the settle window). The Records API's own times are microseconds; a fork to an upstream
# with coarse times runs with its window on, as here.
SETTLE_SECONDS = "2"


@pytest.fixture
def app(upstream_server: Upstream, tmp_path: Path) -> Any:
    """FORK: this connector's app, in process, for pytest-flask's ``client``."""
    app = create_app(
        {
            "UPSTREAM_URL": upstream_server.url,
            "UPSTREAM_TOKEN": UPSTREAM_TOKEN,
            "UPSTREAM_FEED_RETRY_BUDGET": "4",
            "STATE_DIR": str(tmp_path / "state"),
        }
    )
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="session")
def connector_under_test(
    upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connector]:
    """FORK: this connector under gunicorn, in front of its upstream."""
    yield from running_connector(
        upstream_server.url,
        tmp_path_factory.mktemp("connector-under-test"),
        app=APP,
        **SETTINGS,
        FEED_SETTLE_SECONDS=SETTLE_SECONDS,
    )


@pytest.fixture
def conformance_target(connector_under_test: Connector, upstream: Upstream) -> ConformanceTarget:
    """FORK: the conformance suite's one fixture: this connector, the collection, a driver
    of the upstream, and any check this fork skips (with the reason)."""
    return ConformanceTarget(
        url=connector_under_test.url,
        collection=CONFORMANCE_COLLECTION,
        upstream=RecordsConformanceUpstream(upstream, CONFORMANCE_COLLECTION),
        transform=f"{CONFORMANCE_COLLECTION}-record",
        skips={},
        settle_seconds=float(SETTLE_SECONDS),
    )


class RecordsConformanceUpstream:
    """FORK: the upstream as the conformance suite seeds, breaks and inspects it (here the
    demo Records API; see ``ConformanceUpstream`` for what each method must do)."""

    page_size = PAGE_SIZE  # what the connector under test asks for (SETTINGS)

    def __init__(self, upstream: Upstream, collection: str) -> None:
        self.upstream = upstream
        self.collection = collection
        upstream.create(collection)

    def seed(self, count: int, tie: int) -> None:
        before = (count - tie) // 2
        times = (
            [f"2025-12-31T23:59:59.{n:06d}Z" for n in range(before)]
            + ["2026-01-01T00:00:00.000000Z"] * tie
            + [f"2026-01-01T00:00:01.{n:06d}Z" for n in range(count - tie - before)]
        )
        # ids out of time order, so the feed's order is (time, id) and not insertion order
        self.upstream.insert(
            self.collection,
            [
                {"id": f"rec-{(n * 7919) % count:05d}", "updated_at": at, "n": n}
                for n, at in enumerate(times)
            ],
        )

    def delete(self, entity_id: str) -> None:
        from service.framework.upstream import segment

        response = self.upstream.api("DELETE", f"{self.collection}/{segment(entity_id)}")
        assert response.status_code == 204, response.text

    def break_before_first_page(self) -> None:
        self.upstream.faults(storm={"status": 500, "count": 1_000_000, "retry_after": None})

    def break_after_first_page(self) -> None:
        self.upstream.faults(fail_after_pages={"pages": 1, "status": 500, "mode": "status"})

    def heal(self) -> None:
        self.upstream.clear_faults()
        self.upstream.thaw_clock()

    def change(self, entity_id: str) -> None:
        from service.framework.upstream import segment

        record = self.upstream.live(self.collection)[entity_id]
        body = {k: v for k, v in record.items() if k not in ("id", "updated_at", "deleted")}
        body["changed"] = body.get("changed", 0) + 1
        response = self.upstream.api("PUT", f"{self.collection}/{segment(entity_id)}", json=body)
        assert response.status_code == 200, response.text

    def change_after_pages(self, entity_id: str, pages: int) -> None:
        self.upstream.faults(change_after_pages={"pages": pages, "id": entity_id})

    def coarse_clock(self) -> None:
        self.upstream.clock(freeze=True)  # one tick of a coarse clock, as long as needed

    def expire_tokens(self) -> None:
        raise NotSupported("the Records API's bearer token is static: it never expires")

    def entity(self, number: int) -> dict[str, Any]:
        return {
            "_id": f"conformance-{number}",
            "name": f"Entity {number}",
            "n": number,
            "tags": ["a", "b"],
            "address": {"city": "Oslo"},
        }

    def written(self) -> dict[str, dict[str, Any]]:
        return {
            record_id: {k: v for k, v in record.items() if k != "updated_at"}
            for record_id, record in self.upstream.live(self.collection).items()
        }

    def writes(self) -> int:
        stats = self.upstream.stats()
        return stats.get("PUT", 0) + stats.get("DELETE", 0)
