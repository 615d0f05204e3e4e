"""The Tickets example's own tests, beside the conformance suite: what its upstream's
shape asks of the adapter (integer ids in order, ids refused before anything is written,
the API key in its header and nowhere else)."""

from __future__ import annotations

import pytest

from service.tests.examples.conftest import API_KEY
from service.tools.examples.tickets import create_app


@pytest.fixture
def tickets(tickets_api, tmp_path):
    tickets_api.admin("POST", "reset", {"seed": False})
    tickets_api.admin("POST", "collections/tickets")

    def client(**settings: str):
        config = {
            "TICKETS_URL": tickets_api.url,
            "TICKETS_API_KEY": API_KEY,
            "TICKETS_PAGE_SIZE": "2",
            "STATE_DIR": str(tmp_path / "state"),
            "UPSTREAM_FEED_RETRY_BUDGET": "2",
            **settings,
        }
        return create_app(config).test_client()

    return client


def test_ticket_9_comes_before_ticket_17_in_one_second(tickets, tickets_api):
    at = "2026-01-02T03:04:05Z"
    tickets_api.admin(
        "POST", "records/tickets", [{"id": n, "modified_at": at} for n in (17, 9, 100)]
    )
    entities = tickets().get("/tickets").json
    assert [e["_id"] for e in entities] == ["9", "17", "100"]
    tokens = [e["_updated"] for e in entities]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


@pytest.mark.parametrize("bad", ["abc", "07", "0", "-1", "1.5", "١٢"])
def test_an_id_that_is_not_a_ticket_id_is_a_400_and_nothing_is_written(tickets, tickets_api, bad):
    before = tickets_api.admin("GET", "stats")
    batch = [{"_id": "5", "subject": "fine"}, {"_id": bad, "_deleted": True}]
    response = tickets().post("/tickets?sequence_id=s&is_full=false&request_id=r", json=batch)
    assert response.status_code == 400
    assert repr(bad) in response.json["detail"]
    after = tickets_api.admin("GET", "stats")
    assert (after["PUT"], after["DELETE"]) == (before["PUT"], before["DELETE"])


def test_the_key_goes_in_its_header_and_a_wrong_one_never_shows(tickets):
    response = tickets(TICKETS_API_KEY="wrong-key-s3cr3t").get("/tickets")
    assert response.status_code == 502
    assert "401" in response.get_data(as_text=True)
    assert "wrong-key-s3cr3t" not in response.get_data(as_text=True)
    assert tickets().get("/tickets").status_code == 200
