"""The feed's query as Sesam and operators send it, over HTTP: empty parameters mean
absent, and a name that cannot be a collection never reaches the upstream."""

from __future__ import annotations


def test_empty_since_and_limit_are_a_full_feed(connector, upstream):
    everything = connector.get("people").json()
    response = connector.get("people", params={"since": "", "limit": ""})
    assert response.status_code == 200, response.text
    assert response.json() == everything


def test_a_name_that_cannot_be_a_collection_never_reaches_the_upstream(connector, upstream):
    for name in ("People", "_admin", "p%C3%A9ople"):
        response = connector.get(name)
        assert response.status_code == 404, name
        assert "collection" in response.json()["detail"]
    assert upstream.stats()["GET"] == 0
