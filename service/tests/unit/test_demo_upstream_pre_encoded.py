"""The demo upstream's pre-encoded mode: the same pages, served from memory."""

from __future__ import annotations

import json

from service.tools.demo_upstream import create_app
from service.tools.demo_upstream.pre_encoded import PreEncodedPages

AUTH = {"Authorization": "Bearer t"}


def walk(client, limit=7):
    """Every page of the synthetic collection, as bytes, following the cursors."""
    params = {"limit": limit}
    pages = []
    while True:
        response = client.get("/bench", query_string=params, headers=AUTH)
        assert response.status_code == 200
        pages.append(response.get_data())
        cursor = json.loads(pages[-1])["next_cursor"]
        if cursor is None:
            return pages
        params["cursor"] = cursor


def pre_encoded(count=30, limit=7):
    app = create_app(token="t", seed=False, synthetic={"bench": count})
    computed = walk(app.test_client(), limit)
    middleware = PreEncodedPages(app, limit)
    app.wsgi_app = middleware
    return app, middleware, computed


def test_the_pre_encoded_pages_are_the_computed_pages_byte_for_byte_and_count_as_traffic():
    app, middleware, computed = pre_encoded()
    assert app.extensions["demo_upstream"].stats["list_pages"] == 0  # building is not traffic
    assert walk(app.test_client()) == computed
    assert len(middleware.pages) == len(computed) == 5
    assert app.extensions["demo_upstream"].stats["list_pages"] == 5


def test_what_was_not_pre_encoded_still_reaches_the_app_with_its_checks():
    app, _, _ = pre_encoded()
    client = app.test_client()
    assert client.get("/bench", query_string={"limit": 7}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/bench", query_string={"limit": 7}, headers=wrong).status_code == 401
    other_size = client.get("/bench", query_string={"limit": 3}, headers=AUTH)
    assert len(other_size.get_json()["data"]) == 3
    since = {"limit": 7, "updated_since": "2025-01-01T00:00:00.000000Z"}
    assert len(client.get("/bench", query_string=since, headers=AUTH).get_json()["data"]) == 7
    bad_cursor = client.get("/bench", query_string={"limit": 7, "cursor": "x"}, headers=AUTH)
    assert bad_cursor.status_code == 400


def test_a_fault_set_on_the_admin_api_applies_to_pre_encoded_pages_too():
    app, _, _ = pre_encoded()
    client = app.test_client()
    fault = {"fail_after_pages": {"pages": 0, "status": 503}}
    assert client.put("/_admin/faults", json=fault).status_code == 200
    assert client.get("/bench", query_string={"limit": 7}, headers=AUTH).status_code == 503


def test_an_armed_change_after_pages_sees_every_list_page():
    """The fault counts list pages in the app: pre-encoded pages go there while it is set."""
    app, _, computed = pre_encoded()
    client = app.test_client()
    state = app.extensions["demo_upstream"]
    state.faults["change_after_pages"] = {"pages": 1, "id": "x", "served": 0}
    assert walk(client) == computed  # a synthetic collection is never changed
    assert state.faults["change_after_pages"] is None  # spent: the app saw the pages
