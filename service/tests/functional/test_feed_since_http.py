"""A ``since`` that is not one of this feed's ``_updated`` values, over HTTP: Sesam (or an
operator who typed it) gets a JSON 400 that names the feed's position parts, and the
upstream is never asked. A since the feed would take in another spelling is still not
its own: the feed's tokens are compared as text, so only their canonical form pages
right."""

from __future__ import annotations

import pytest

from service.tests.framework_kit import Connector
from service.tests.framework_kit import Upstream

TIME = "2026-01-02T03:04:05.000000Z"
ID = b"p-1".hex()


@pytest.mark.parametrize(
    "since",
    [
        "2026-01-02T03:04:05,000000Z",  # a comma before the fraction: ISO 8601, not ours
        "2026-01-02 03:04:05.000000Z",
        "2026-01-02T03:04:05.000000+00:00",
        "2026-01-02T03:04:05.00000Z",
        f"{TIME}-{ID}",  # a wrong separator between the parts
        f"{TIME}{ID}",
        f"{TIME}_{ID}_{ID}",  # a part too many
        f"{TIME}_",
    ],
)
def test_a_since_not_in_the_feeds_own_form_is_a_400_naming_its_parts(
    connector: Connector, upstream: Upstream, since: str
) -> None:
    before = upstream.stats()["GET"]
    response = connector.get("people", params={"since": since})
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert detail.startswith(
        "since must be an _updated value from this feed (timestamp, text), or its first parts: "
    ), detail
    assert upstream.stats()["GET"] == before


def test_a_since_in_the_feeds_own_form_is_taken(connector: Connector, upstream: Upstream) -> None:
    for since in (TIME, f"{TIME}_{ID}"):
        response = connector.get("people", params={"since": since})
        assert response.status_code == 200, (since, response.text)
