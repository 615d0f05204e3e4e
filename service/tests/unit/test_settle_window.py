"""The settle window is the adapter's to declare, ``FEED_SETTLE_SECONDS`` the operator's to
override.

An adapter knows its upstream's clock (whole seconds, a commit lag) better than whoever
writes the compose file, the Sesam system and the test wiring: a fork had to set the
window in all three. ``Adapter.settle_seconds`` declares it once; the variable, when set
(0 included), wins, and a value below the adapter's is logged as a warning.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from service.framework.app import AppFactory
from service.framework.feed import settle_window
from service.framework.settings import load_settings
from service.framework.upstream_errors import UpstreamError
from service.tools.reference import Records
from service.tools.reference import ReferenceSettings

SETTINGS = {"UPSTREAM_URL": "http://records.example", "UPSTREAM_TOKEN": "test-token"}


def text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CoarseClock(Records):
    """An upstream whose clock needs a window of a minute; its list: one record from an
    hour ago, one written now."""

    settle_seconds = 60.0

    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Any]]:
        now = datetime.now(UTC)
        yield [
            {"id": "old", "updated_at": text(now - timedelta(hours=1)), "deleted": False},
            {"id": "new", "updated_at": text(now), "deleted": False},
        ]


def provisional(tmp_path, **environ: str) -> dict[str, bool]:
    """Each entity of a full run, and whether its ``_updated`` is provisional (within the
    settle window: delivered, and read again once settled)."""
    app = AppFactory(CoarseClock, ReferenceSettings)(
        {**SETTINGS, "STATE_DIR": str(tmp_path), **environ}
    )
    response = app.test_client().get("/people")
    assert response.status_code == 200, response.text
    return {entity["_id"]: "~!" in entity["_updated"] for entity in response.get_json()}


def test_the_adapters_window_applies_without_any_setting(tmp_path):
    assert provisional(tmp_path) == {"old": False, "new": True}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", {"old": False, "new": False}), ("7200", {"old": True, "new": True})],
)
def test_feed_settle_seconds_set_overrides_the_adapters_window(tmp_path, value, expected):
    assert provisional(tmp_path, FEED_SETTLE_SECONDS=value) == expected


@pytest.mark.parametrize(
    ("environ", "window"),
    [({}, 60.0), ({"FEED_SETTLE_SECONDS": ""}, 60.0), ({"FEED_SETTLE_SECONDS": "2.5"}, 2.5)],
)
def test_the_window_is_the_variable_when_set_else_the_adapters(environ, window):
    adapter = CoarseClock(load_settings(ReferenceSettings, {**SETTINGS, **environ}))
    assert settle_window(adapter) == window


def test_an_adapter_that_declares_nothing_has_no_window():
    adapter = Records(load_settings(ReferenceSettings, SETTINGS))
    assert Records.settle_seconds == 0
    assert settle_window(adapter) == 0


def test_a_variable_below_the_adapters_window_is_logged_as_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="service.framework.feed"):
        AppFactory(CoarseClock, ReferenceSettings)(
            {**SETTINGS, "STATE_DIR": str(tmp_path), "FEED_SETTLE_SECONDS": "0"}
        )
    assert "FEED_SETTLE_SECONDS=0 is below the 60s settle window CoarseClock declares" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.framework.feed"):
        AppFactory(CoarseClock, ReferenceSettings)(
            {**SETTINGS, "STATE_DIR": str(tmp_path), "FEED_SETTLE_SECONDS": "90"}
        )
    assert "settle window" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="service.framework.feed"):
        AppFactory(CoarseClock, ReferenceSettings)(
            {**SETTINGS, "STATE_DIR": str(tmp_path), "FEED_SETTLE_SECONDS": "60"}
        )
    assert "settle window" not in caplog.text  # the adapter's own window: nothing to say


@pytest.mark.parametrize("value", ["-1", "soon", "86400"])
def test_a_malformed_window_still_stops_the_start(value):
    from service.framework.settings import ConfigError

    with pytest.raises(ConfigError, match="FEED_SETTLE_SECONDS"):
        load_settings(ReferenceSettings, {**SETTINGS, "FEED_SETTLE_SECONDS": value})


def test_a_provisional_since_is_checked_cutoff_first():
    """A provisional token is ``<cutoff>~!<token>``: with both broken, the 400 names what
    is wrong with the cutoff, the part a person resetting a pipe by hand types."""
    from service.framework.feed import parse_since
    from service.framework.positions import TEXT
    from service.framework.positions import TIMESTAMP
    from service.framework.positions import Positions

    positions = Positions((TIMESTAMP, TEXT))
    with pytest.raises(ValueError, match=r"or its first parts: month must be in 1\.\.12$"):
        parse_since("2026-13-01T00:00:00.000000Z~!no-token-at-all", positions)


def test_a_provisional_since_whose_cutoff_is_more_than_a_timestamp_is_refused():
    from service.framework.feed import parse_since
    from service.framework.positions import TEXT
    from service.framework.positions import TIMESTAMP
    from service.framework.positions import Positions

    positions = Positions((TIMESTAMP, TEXT))
    token = positions.encode((datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "r1"))
    with pytest.raises(ValueError, match="a provisional token's cutoff must be a timestamp$"):
        parse_since(f"{token}~!{token}", positions)


class DownAtOnce(Records):
    """An adapter whose pages() fails as it is called, before a page is asked for."""

    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Any]]:
        raise UpstreamError("the upstream is down: GET http://records.example/people")


def test_a_feed_whose_adapter_fails_at_once_answers_502_and_gives_its_place_back(tmp_path):
    """Every failed start gives its thread and memory back: after more failures than
    the worker has threads, a feed still gets its 502, never a 503 for a full budget."""
    app = AppFactory(DownAtOnce, ReferenceSettings)(
        {**SETTINGS, "STATE_DIR": str(tmp_path), "THREADS": "3"}
    )
    client = app.test_client()
    for _ in range(4):
        response = client.get("/people")
        assert response.status_code == 502, response.text
        assert "the upstream is down" in response.get_json()["detail"]
    budget = app.view_functions["sink"].__self__.bodies.budget
    assert (budget.busy, budget.held) == (0, 0)


class Charging(CoarseClock):
    """Its pages count against the request being served, as the upstream client's
    answers do: ``CHARGE`` bytes each."""

    CHARGE = 0

    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Any]]:
        from service.framework import memory

        memory.charge_answer(self.CHARGE)
        yield from super().pages(collection, since)


def feed_app(tmp_path, adapter: type) -> Any:
    return AppFactory(adapter, ReferenceSettings)(
        {
            **SETTINGS,
            "STATE_DIR": str(tmp_path),
            "SINK_MAX_BODY_BYTES": "1000",
            "WORKER_MEMORY_BUDGET": str(1024 * 1024),
        }
    )


def test_the_read_aheads_answers_count_against_the_feed_and_teach_the_next_one(tmp_path):
    """The pages are read in the read-ahead's thread: what they take is the feed's, so
    a feed of pages the budget cannot hold three of fails naming it, and a feed of
    smaller pages makes the next feed reserve what they took."""

    class Small(Charging):
        CHARGE = 100 * 1024

    class Large(Charging):
        CHARGE = 2 * 1024 * 1024

    small = feed_app(tmp_path / "small", Small)
    assert small.test_client().get("/people").status_code == 200
    assert small.view_functions["sink"].__self__.bodies.budget.feed_answer == 100 * 1024
    large = feed_app(tmp_path / "large", Large).test_client().get("/people")
    assert large.status_code == 502
    assert "WORKER_MEMORY_BUDGET=1048576" in large.get_json()["detail"]


def test_the_feeds_log_line_names_the_since_it_was_asked_from(tmp_path, caplog):
    app = AppFactory(CoarseClock, ReferenceSettings)({**SETTINGS, "STATE_DIR": str(tmp_path)})
    since = "2020-01-01T00:00:00.000000Z"
    with caplog.at_level(logging.INFO, logger="service.framework.feed"):
        assert app.test_client().get("/people", query_string={"since": since}).status_code == 200
    assert f"feed people since={since} limit=None entities=2 " in caplog.text


class TwoPages(CoarseClock):
    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Any]]:
        yield [{"id": "a", "updated_at": "2020-01-01T00:00:00.000000Z", "deleted": False}]
        yield [{"id": "b", "updated_at": "2020-01-02T00:00:00.000000Z", "deleted": False}]


def test_a_feed_whose_client_has_hung_up_stops_between_pages(tmp_path, caplog):
    """Sesam closed the connection after the first page: the feed sees it before the
    next, writes nothing more and says so, rather than finish for nobody."""
    app = AppFactory(TwoPages, ReferenceSettings)({**SETTINGS, "STATE_DIR": str(tmp_path)})
    ours, theirs = socket.socketpair()
    theirs.close()  # the client has gone
    try:
        with caplog.at_level(logging.INFO, logger="service.framework.feed"):
            body = app.test_client().get("/people", environ_base={"gunicorn.socket": ours})
            text = body.get_data(as_text=True)
    finally:
        ours.close()
    assert '"a"' in text and '"b"' not in text and not text.endswith("]")
    assert "client gone: the upstream is read no further" in caplog.text
