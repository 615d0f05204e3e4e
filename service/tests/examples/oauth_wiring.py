"""A conformance wiring for a connector behind OAuth2: the hostile upstream (a correct
Records API by default, with an OAuth2 client-credentials endpoint whose tokens it can
revoke) and a connector of ``oauth_records.py`` in front of it.

Shaped like the fork's own wiring (``service/tests/conftest.py``): one ``conformance_target``
fixture. ``oauth_app`` names the app; a test overrides it (as
``test_conformance_catches_stale_tokens.py`` does, in a directory of its own). The
driver does what the credentials check and the feed's and sink's basic checks need; the
loss checks' hooks it cannot do raise ``NotSupported``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from service.framework.upstream import segment
from service.tests.conformance.conftest import conformance_connector  # noqa: F401
from service.tests.conformance.conftest import conformance_skips  # noqa: F401
from service.tests.conformance.conftest import conformance_upstream  # noqa: F401
from service.tests.conformance.kit import ConformanceTarget
from service.tests.conformance.kit import NotSupported
from service.tests.framework_kit import Connector
from service.tests.framework_kit import running_connector
from service.tests.hostile_kit import HOSTILE_CLIENT_ID
from service.tests.hostile_kit import HOSTILE_CLIENT_SECRET
from service.tests.hostile_kit import HostileUpstream
from service.tests.hostile_kit import rule
from service.tests.hostile_kit import running_hostile_upstream

PAGE_SIZE = 10
# A new collection for each check: the tool's reset would also forget the tokens it issued.
COLLECTIONS = (f"conformance-{n}" for n in itertools.count(1))
NO_FAKE = "the hostile upstream has no hook to change a record between pages or freeze its clock"


@pytest.fixture(scope="session")
def oauth_app() -> str:
    return "service.tests.examples.oauth_records:create_app()"


@pytest.fixture(scope="session")
def oauth_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    yield from running_hostile_upstream(tmp_path_factory.mktemp("oauth-upstream"))


@pytest.fixture(scope="session")
def oauth_connector(
    oauth_upstream: HostileUpstream, oauth_app: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connector]:
    yield from running_connector(
        oauth_upstream.url,
        tmp_path_factory.mktemp("oauth-connector"),
        app=oauth_app,
        UPSTREAM_TOKEN="not-sent-oauth-instead",
        UPSTREAM_PAGE_SIZE=str(PAGE_SIZE),
        RECORDS_TOKEN_URL=f"{oauth_upstream.url}/oauth/token",
        RECORDS_CLIENT_ID=HOSTILE_CLIENT_ID,
        RECORDS_CLIENT_SECRET=HOSTILE_CLIENT_SECRET,
    )


@pytest.fixture
def conformance_target(
    oauth_connector: Connector, oauth_upstream: HostileUpstream
) -> ConformanceTarget:
    oauth_upstream.clear_rules()
    collection = next(COLLECTIONS)
    return ConformanceTarget(
        url=oauth_connector.url,
        collection=collection,
        upstream=OAuthConformanceUpstream(oauth_upstream, collection),
        transform=f"{collection}-record",
    )


class OAuthConformanceUpstream:
    """The hostile upstream as the conformance suite seeds, breaks and inspects it; its
    tokens expire on demand (``expire_tokens``: every token issued so far is revoked)."""

    page_size = PAGE_SIZE

    def __init__(self, hostile: HostileUpstream, collection: str) -> None:
        self.hostile = hostile
        self.collection = collection
        hostile.seed(collection, [])  # a new, empty collection

    def seed(self, count: int, tie: int) -> None:
        before = (count - tie) // 2
        times = (
            [f"2025-12-31T23:59:59.{n:06d}Z" for n in range(before)]
            + ["2026-01-01T00:00:00.000000Z"] * tie
            + [f"2026-01-01T00:00:01.{n:06d}Z" for n in range(count - tie - before)]
        )
        records = [
            {"id": f"rec-{(n * 7919) % count:05d}", "updated_at": at, "n": n}
            for n, at in enumerate(times)
        ]
        self.hostile.seed(self.collection, records)

    def delete(self, entity_id: str) -> None:
        response = self.hostile.api("DELETE", f"{self.collection}/{segment(entity_id)}")
        assert response.status_code == 204, response.text

    def break_before_first_page(self) -> None:
        self.hostile.set_rules(rule("status", prefix=f"/{self.collection}", status=500))

    def break_after_first_page(self) -> None:
        self.hostile.set_rules(
            rule("status", prefix=f"/{self.collection}", query="cursor=", status=500)
        )

    def heal(self) -> None:
        self.hostile.clear_rules()

    def change(self, entity_id: str) -> None:
        raise NotSupported(NO_FAKE)

    def change_after_pages(self, entity_id: str, pages: int) -> None:
        raise NotSupported(NO_FAKE)

    def coarse_clock(self) -> None:
        raise NotSupported(NO_FAKE)

    def expire_tokens(self) -> None:
        self.hostile.revoke_tokens()

    def entity(self, number: int) -> dict[str, Any]:
        return {"_id": f"conformance-{number}", "name": f"Entity {number}", "n": number}

    def written(self) -> dict[str, dict[str, Any]]:
        return {
            record["id"]: {k: v for k, v in record.items() if k != "updated_at"}
            for record in self.hostile.records(self.collection)
            if not record.get("deleted")
        }

    def writes(self) -> int:
        requests = self.hostile.stats()["requests"]
        return sum(
            methods.get("PUT", 0) + methods.get("DELETE", 0) for methods in requests.values()
        )


__all__ = [
    "conformance_connector",
    "conformance_skips",
    "conformance_target",
    "conformance_upstream",
    "oauth_app",
    "oauth_connector",
    "oauth_upstream",
]
