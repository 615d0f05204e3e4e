"""The feed's query as Sesam and operators send it, over HTTP: empty parameters mean
absent, and a name that cannot be a collection never reaches the upstream."""

from __future__ import annotations

import logging
import re
import threading
import time

from service.tests.framework_kit import UPSTREAM_TOKEN
from service.tests.framework_kit import reference_app
from service.tools.reference import create_app


def test_empty_since_and_limit_are_a_full_feed(connector, upstream):
    everything = connector.get("people").json()
    response = connector.get("people", params={"since": "", "limit": ""})
    assert response.status_code == 200, response.text
    assert response.json() == everything


def test_a_name_that_cannot_be_a_collection_never_reaches_the_upstream(connector, upstream):
    for name in ("People", "_admin", "p%C3%A9ople"):
        response = connector.get(name)
        assert response.status_code == 404, name
        assert response.json()["detail"].endswith("is not a collection name"), name
    assert upstream.stats()["GET"] == 0


def test_an_empty_collection_is_an_empty_array_and_logged_as_ok(connector, upstream):
    upstream.create("empty")
    before = len(connector.log_text())
    for params in ({}, {"limit": "5"}, {"since": "2026-01-01T00:00:00.000000Z"}):
        response = connector.get("empty", params=params)
        assert response.status_code == 200
        assert response.content == b"[]"
    log = connector.log_text()[before:]
    assert (
        len(
            re.findall(
                r"feed empty since=\S+ limit=\S+ entities=0 provisional=0 seconds=\S+ ok", log
            )
        )
        == 3
    )


def test_the_read_ahead_thread_ends_with_each_answer(upstream, tmp_path):
    """In process, so the connector's threads can be counted: a feed that stopped its
    read-ahead thread at neither the limit nor the end would leak one per request."""
    upstream.insert("bulk", [{"id": f"r-{i:04d}"} for i in range(1000)])
    app = reference_app(upstream, tmp_path / "state", UPSTREAM_PAGE_SIZE="100")
    client = app.test_client()
    before = threading.active_count()
    for params in ({"limit": "5"}, {"limit": "150"}, {}):
        response = client.get("/bulk", query_string=params)
        assert response.status_code == 200 and response.json
        response.close()
        deadline = time.monotonic() + 30
        while threading.active_count() > before:
            assert time.monotonic() < deadline, f"a read-ahead thread outlived {params}"
            time.sleep(0.02)


def test_the_read_ahead_thread_ends_when_the_first_page_breaks_the_contract(tmp_path):
    """The first page holds a record the feed refuses (502): the read-ahead, already
    fetching the next pages, must stop too."""
    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",  # never called: the pages are replaced
            "UPSTREAM_TOKEN": UPSTREAM_TOKEN,
            "STATE_DIR": str(tmp_path / "state"),
        }
    )
    adapter = app.view_functions["feed"].args[0]

    def pages(collection, since):
        yield [{"id": "bad", "updated_at": "yesterday"}]
        for i in range(1000):
            yield [{"id": f"r-{i:04d}", "updated_at": "2026-01-01T00:00:00.000000Z"}]

    adapter.pages = pages
    before = threading.active_count()
    response = app.test_client().get("/bulk")
    assert response.status_code == 502
    # typed positions: the 502 names the record's position and its bad value
    assert "position ('yesterday', 'bad')" in response.json["detail"]
    deadline = time.monotonic() + 30
    while threading.active_count() > before:
        assert time.monotonic() < deadline, "the read-ahead thread outlived the 502"
        time.sleep(0.02)


def test_an_adapter_that_yields_no_page_at_all_is_an_empty_array(tmp_path, caplog):
    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",  # never called: the pages are replaced
            "UPSTREAM_TOKEN": UPSTREAM_TOKEN,
            "STATE_DIR": str(tmp_path / "state"),
            "LOG_LEVEL": "INFO",
        }
    )
    adapter = app.view_functions["feed"].args[0]
    adapter.pages = lambda collection, since: iter(())
    with caplog.at_level(logging.INFO, logger="service.framework.feed"):
        response = app.test_client().get("/bulk")
        assert response.status_code == 200
        assert response.get_data() == b"[]"
    assert re.search(
        r"feed bulk since=None limit=None entities=0 provisional=0 seconds=\S+ ok$",
        caplog.text,
        re.M,
    )
