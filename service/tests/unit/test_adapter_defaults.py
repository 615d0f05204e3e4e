"""What a fork gets from ``Adapter`` when it leaves a default as it is: the names a pipe
may use, how many empty pages in a row the feed takes before it calls the upstream a loop,
and the upstream's key for an ``_id``. The reference adapter spells out its own, so these
tests keep the framework's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from service.framework.adapter import Adapter
from service.framework.app import AppFactory
from service.tools.reference import Records
from service.tools.reference import ReferenceSettings

SETTINGS = {"UPSTREAM_URL": "http://records.example", "UPSTREAM_TOKEN": "test-token"}
RECORD = {"id": "a", "updated_at": "2024-01-01T00:00:00.000000Z", "deleted": False}


class Defaults(Records):
    """The framework's defaults, and an upstream that sends ``empty`` empty pages before
    its one record (without asking anyone)."""

    collection = Adapter.collection
    max_empty_pages = Adapter.max_empty_pages
    key = Adapter.key
    empty = 0
    written: list[tuple[str, Any, Any]] = []

    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Any]]:
        for _ in range(self.empty):
            yield []
        yield [dict(RECORD)]

    def upsert(self, collection: str, key: Any, record: Any) -> None:
        self.written.append((collection, key, record))


def client(tmp_path, adapter_class: type[Records] = Defaults) -> Any:
    app = AppFactory(adapter_class, ReferenceSettings)({**SETTINGS, "STATE_DIR": str(tmp_path)})
    return app.test_client()


def test_a_lowercase_name_is_a_collection_and_other_names_are_404(tmp_path):
    connector = client(tmp_path)
    assert connector.get("/people").status_code == 200
    assert connector.get("/order-lines2").status_code == 200
    for name in ("People", "2people", "-people", "people_x"):
        answer = connector.get(f"/{name}")
        assert answer.status_code == 404, name
        assert "not a collection name" in answer.get_json()["detail"]


def test_nineteen_empty_pages_in_a_row_are_read_past_and_twenty_fail_the_run(tmp_path):
    class Nineteen(Defaults):
        empty = 19

    class Twenty(Defaults):
        empty = 20

    answer = client(tmp_path / "19", Nineteen).get("/people")
    assert answer.status_code == 200
    assert [entity["_id"] for entity in answer.get_json()] == ["a"]

    failed = client(tmp_path / "20", Twenty).get("/people")
    assert failed.status_code == 502
    assert "20 empty pages in a row" in failed.get_json()["detail"]


def test_an_entity_is_written_under_its_id_as_the_upstreams_key(tmp_path):
    Defaults.written.clear()
    answer = client(tmp_path).post("/people", json=[{"_id": "a-1", "name": "Ada"}])
    assert answer.status_code == 200, answer.text
    assert Defaults.written == [("people", "a-1", {"name": "Ada"})]
