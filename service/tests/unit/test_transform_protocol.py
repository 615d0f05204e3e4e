"""The HTTP transform's protocol, in process, with transforms that need no upstream.

The framework's rules, whatever a fork's transforms do: the route never clashes with the
sink's, order is kept, reserved fields pass through unless set, bad input is a 400 before
any transform runs, a refused entity a 400 naming it, a broken transform a 500 naming it,
and the transforms run at most SINK_CONCURRENCY at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from service.framework.app import build_app
from service.framework.upstream import UpstreamError
from service.tools.reference import Records
from service.tools.reference import ReferenceSettings

CALLS: list[str] = []


class Fakes(Records):
    """The reference adapter, with transforms that answer without asking the upstream."""

    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def transform(self, name):
        return {
            "upper": self.upper,
            "split": self.split,
            "drop": lambda entity: [],
            "rename": lambda entity: {**entity, "_id": "new-" + entity["_id"]},
            "forget": lambda entity: {"name": entity.get("name")},
            "refuse": self.refuse,
            "number": lambda entity: 42,
            "no-id": lambda entity: [{"name": "x"}],
            "nan": lambda entity: {**entity, "x": float("nan")},
            "number-for-b": lambda entity: 42 if entity["_id"] == "b" else entity,
            "counted": self.counted,
            "crash": lambda entity: {}["missing"],
            "only": lambda entity: {"x": 1},
            "inflate": lambda entity: {**entity, "x": "x" * 300_000},
            "inflate-800k": lambda entity: {**entity, "x": "x" * 800_000},
            "too-deep-to-write": self.too_deep_to_write,
            "recurses": self.recurses,
            "down-from-1000": self.down_from_1000,
            "slow": self.slow,
            "down": self.down,
        }.get(name) or super().transform(name)

    @staticmethod
    def upper(entity):
        CALLS.append(entity["_id"])
        return {**entity, "name": entity["name"].upper()}

    @staticmethod
    def counted(entity):
        """Refuses the entity ``bad``; counts the others, as an upstream would see them."""
        if entity["_id"] == "bad":
            raise ValueError("has no name")
        CALLS.append(entity["_id"])
        return entity

    @staticmethod
    def too_deep_to_write(entity):
        nested: dict = {}
        for _ in range(100_000):
            nested = {"a": nested}
        return {**entity, "nested": nested}

    @classmethod
    def recurses(cls, entity, depth=0):
        """A transform that walks an entity recursively, without end."""
        return cls.recurses(entity, depth + 1)

    @classmethod
    def down_from_1000(cls, entity):
        return entity if int(entity["_id"][1:]) < 1000 else cls.down(entity)

    @staticmethod
    def split(entity):
        return [{"_id": f"{entity['_id']}-a"}, {"_id": f"{entity['_id']}-b"}]

    @staticmethod
    def refuse(entity):
        if entity["_id"] == "bad":
            raise ValueError("has no name")
        return entity

    @classmethod
    def slow(cls, entity):
        with cls.lock:
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        time.sleep(0.02)
        with cls.lock:
            cls.in_flight -= 1
        return entity

    @staticmethod
    def down(entity):
        raise UpstreamError(f"upstream answered 503 to GET /x/{entity['_id']}", status=503)


def make_client(tmp_path, max_body_bytes: int = 4000, **settings: str):
    app = build_app(
        Fakes,
        ReferenceSettings,
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",
            "UPSTREAM_TOKEN": "test-token",
            "STATE_DIR": str(tmp_path),
            "SINK_CONCURRENCY": "4",
            "SINK_MAX_BODY_BYTES": str(max_body_bytes),
            **settings,
        },
    )
    app.config["TESTING"] = True
    CALLS.clear()
    return app.test_client()


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


@pytest.fixture
def big_client(tmp_path):
    """Room for batches of a few thousand entities."""
    return make_client(tmp_path, 1_000_000)


def transform(client, name, body, raw=None):
    data = raw if raw is not None else json.dumps(body)
    return client.post(f"/transform/{name}", data=data, content_type="application/json")


def test_the_transform_route_never_takes_the_sinks_and_the_other_way_round(client):
    urls = client.application.url_map.bind("localhost")
    assert urls.match("/transform/people-record", method="POST") == (
        "transform",
        {"name": "people-record"},
    )
    assert urls.match("/people", method="POST") == ("sink", {"collection": "people"})
    # A collection named "transform" is still the sink's and the feed's.
    assert urls.match("/transform", method="POST") == ("sink", {"collection": "transform"})
    assert urls.match("/transform", method="GET")[0] != "transform"


def test_a_get_on_a_transform_is_a_json_405(client):
    response = client.get("/transform/upper")
    assert response.status_code == 405
    assert response.is_json and "POST" in response.headers["Allow"]


def test_order_and_reserved_fields_are_kept(client):
    batch = [
        {"_id": f"e-{n}", "_updated": n, "_ts": 1700 + n, "_deleted": False, "name": f"n{n}"}
        for n in range(30)
    ]
    response = transform(client, "upper", batch)
    assert response.status_code == 200, response.json
    assert response.json == [{**entity, "name": entity["name"].upper()} for entity in batch]


def test_reserved_fields_pass_through_unless_the_transform_sets_them(client):
    batch = [{"_id": "a", "_updated": "u1", "_hash": "h", "name": "Ada"}]
    assert transform(client, "forget", batch).json == [
        {"_id": "a", "_updated": "u1", "_hash": "h", "name": "Ada"}
    ]
    assert transform(client, "rename", batch).json[0]["_id"] == "new-a"


def test_a_list_is_taken_as_it_is_split_or_filtered(client):
    batch = [{"_id": "a"}, {"_id": "b"}]
    assert [e["_id"] for e in transform(client, "split", batch).json] == [
        "a-a",
        "a-b",
        "b-a",
        "b-b",
    ]
    assert transform(client, "drop", batch).json == []


def test_an_empty_batch_is_an_empty_answer(client):
    response = transform(client, "upper", [])
    assert (response.status_code, response.json) == (200, [])


def test_an_unknown_transform_is_a_json_404(client):
    response = transform(client, "nosuch", [{"_id": "a", "name": "x"}])
    assert response.status_code == 404
    assert "nosuch" in response.json["detail"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"", 400),
        (b'[{"_id": "a", "name": "x"}', 400),
        (b'{"_id": "a", "name": "x"}', 400),
        (b'[{"_id": "a", "name": "x"}, {"name": "no id"}]', 400),
        (b'[{"_id": "a", "name": "x"}, {"_id": 7}]', 400),
        (b'[{"_id": "a", "name": "x"}, [1]]', 400),
        (b'[{"_id": "a", "name": NaN}]', 400),
        (b"[" + b'{"_id": "a", "name": "x"},' * 200 + b'{"_id": "z", "name": "x"}]', 413),
    ],
)
def test_bad_input_is_refused_before_any_entity_is_transformed(client, raw, status):
    response = transform(client, "upper", None, raw=raw)
    assert response.status_code == status, response.json
    assert response.is_json and response.json["error"]
    assert CALLS == []


def test_an_entity_the_transform_refuses_is_a_400_naming_it(client):
    response = transform(client, "refuse", [{"_id": "good"}, {"_id": "bad"}])
    assert response.status_code == 400
    assert response.json["detail"] == "entity 1 ('bad'): has no name"


@pytest.mark.parametrize("name", ["number", "no-id", "nan"])
def test_a_transform_that_breaks_its_contract_is_a_500_naming_it(client, name):
    response = transform(client, name, [{"_id": "a"}])
    assert response.status_code == 500
    assert repr(name) in response.json["detail"]


def test_an_upstream_failure_is_a_502_naming_the_entities_never_a_200_with_holes(client):
    response = transform(client, "down", [{"_id": "x1"}, {"_id": "x2"}])
    assert response.status_code == 502
    failed = response.json["failed"]
    assert failed and {f["_id"] for f in failed} <= {"x1", "x2"}
    assert failed[0]["upstream_status"] == 503
    assert failed[0]["reason"] == f"upstream answered 503 to GET /x/{failed[0]['_id']}"


def test_transforms_run_at_most_sink_concurrency_at_once(client):
    Fakes.most_in_flight = 0
    batch = [{"_id": f"e-{n}"} for n in range(20)]
    response = transform(client, "slow", batch)
    assert response.status_code == 200
    assert [e["_id"] for e in response.json] == [e["_id"] for e in batch]
    assert 1 < Fakes.most_in_flight <= 4


def test_a_broken_result_is_a_500_naming_the_entitys_index_and_id(client):
    response = transform(client, "number-for-b", [{"_id": "a"}, {"_id": "b"}, {"_id": "c"}])
    assert response.status_code == 500
    assert "returned a int for entity 1 ('b')" in response.json["detail"]


def test_a_502_counts_every_failure_and_every_entity_not_attempted(client):
    """What Sesam's operator reads in the pipe's error: how many failed, of how many, and
    how many never started; the count matches the entities listed."""
    batch = [{"_id": f"x{n}"} for n in range(30)]
    response = transform(client, "down", batch)
    assert response.status_code == 502
    body = response.json
    assert body["failed_count"] == len(body["failed"]) >= 1
    assert body["failed_count"] + body["not_attempted"] == 30
    assert body["detail"].startswith(
        f"transform 'down': {body['failed_count']} of 30 entities failed upstream (statuses 503); "
        f"{body['not_attempted']} not attempted after the first failure."
    )


def test_entities_past_the_first_window_of_a_failed_batch_are_counted_not_attempted(big_client):
    batch = [{"_id": f"x{n}"} for n in range(2500)]
    body = transform(big_client, "down", batch).json
    assert body["failed_count"] + body["not_attempted"] == 2500
    assert body["not_attempted"] >= 1500  # the windows never started


def test_a_refused_entity_stops_the_batch_after_the_first_thousand(big_client):
    """The documented window (docs/transform.md): a batch is transformed 1000 entities at
    a time, and one refused entity ends it after its window, so the upstream sees the
    first thousand lookups and none after."""
    batch = [{"_id": "bad" if n == 10 else f"x{n}"} for n in range(2500)]
    response = transform(big_client, "counted", batch)
    assert response.status_code == 400
    assert response.json["detail"] == "entity 10 ('bad'): has no name"
    assert len(CALLS) == 999
    assert set(CALLS) == {f"x{n}" for n in range(1000) if n != 10}


def test_a_batch_of_several_windows_is_answered_whole_in_order(big_client):
    batch = [{"_id": f"x{n}", "name": "n"} for n in range(2500)]
    response = transform(big_client, "upper", batch)
    assert response.status_code == 200
    assert [e["_id"] for e in response.json] == [e["_id"] for e in batch]
    assert {e["name"] for e in response.json} == {"N"}


def test_the_log_line_counts_the_entities_in_and_out(client, caplog):
    caplog.set_level(logging.INFO, logger="service.framework.transform")
    assert transform(client, "split", [{"_id": "a"}, {"_id": "b"}]).status_code == 200
    assert transform(client, "refuse", [{"_id": "a"}, {"_id": "bad"}]).status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "service.framework.transform"]
    assert len(lines) == 2
    assert lines[0].startswith("transform split status=200 entities=2 out=4 seconds=")
    assert lines[0].endswith(" ok")
    assert lines[1].startswith("transform refuse status=400 entities=2 out=0 seconds=")
    assert lines[1].endswith("rejected: entity 1 ('bad'): has no name")


def test_a_transform_that_crashes_is_a_500_and_its_log_line_says_so(client, caplog):
    caplog.set_level(logging.INFO, logger="service.framework.transform")
    response = transform(client, "crash", [{"_id": "a"}])
    assert response.status_code == 500
    assert response.json["detail"] == "the connector failed; see its log"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "service.framework.transform"]
    assert line.startswith("transform crash status=500 entities=1 out=0 seconds=")
    assert line.endswith(" failed: unexpected error (logged below)")


def test_a_result_keeps_the_inputs_reserved_fields_only_not_its_others(client):
    entity = {"_id": "a", "_deleted": False, "_updated": 7, "name": "n", "city": "c"}
    response = transform(client, "only", [entity])
    assert response.json == [{"_id": "a", "_deleted": False, "_updated": 7, "x": 1}]


def test_a_failure_in_a_later_window_counts_that_window_and_the_rest(big_client):
    """The first 1000 entities were transformed and answered nothing (a 502 answers no
    entity): the failures and the entities not attempted are the 1500 after them."""
    batch = [{"_id": f"x{n}"} for n in range(2500)]
    body = transform(big_client, "down-from-1000", batch).json
    assert body["failed_count"] >= 1
    assert body["failed_count"] + body["not_attempted"] == 1500
    assert {f["_id"] for f in body["failed"]} <= {f"x{n}" for n in range(1000, 2000)}


def test_a_batch_refused_before_any_transform_logs_no_entities(client, caplog):
    caplog.set_level(logging.INFO, logger="service.framework.transform")
    assert transform(client, "upper", None, raw=b"[{").status_code == 400
    (line,) = [r.getMessage() for r in caplog.records if r.name == "service.framework.transform"]
    assert line.startswith("transform upper status=400 entities=0 out=0 seconds=")


def test_an_answer_larger_than_the_memory_budget_is_a_502_naming_the_budget(tmp_path):
    """The answer's text counts against the worker's budget as it grows: a transform that
    makes more than the whole budget can hold is refused, not answered past it."""
    client = make_client(tmp_path, WORKER_MEMORY_BUDGET=str(2_000_000))
    response = transform(client, "inflate", [{"_id": f"x{n}"} for n in range(4)])
    assert response.status_code == 502
    assert (
        "more than this worker's whole memory budget (WORKER_MEMORY_BUDGET=2000000)"
        in (response.json["detail"])
    )
    small = transform(client, "inflate", [{"_id": "x0"}])
    assert small.status_code == 200 and len(small.json[0]["x"]) == 300_000


def test_the_answer_is_held_twice_at_most_so_one_of_40_percent_of_the_budget_is_answered(
    tmp_path,
):
    """The answer's text is held, then joined into the body sent: twice its size, which
    the budget must hold beside the batch's body."""
    client = make_client(tmp_path, WORKER_MEMORY_BUDGET=str(2_000_000))
    response = transform(client, "inflate-800k", [{"_id": "x0"}])
    assert response.status_code == 200, response.json
    assert len(response.json[0]["x"]) == 800_000


def test_entities_too_deeply_nested_to_write_are_a_500_naming_the_transform(client):
    response = transform(client, "too-deep-to-write", [{"_id": "a"}])
    assert response.status_code == 500
    assert response.json["detail"] == (
        "transform 'too-deep-to-write' made entities nested too deeply to write as JSON"
    )


def test_a_transform_that_recurses_too_deeply_on_an_entity_refuses_it(client):
    response = transform(client, "recurses", [{"_id": "a"}])
    assert response.status_code == 400
    assert response.json["detail"] == "entity 0 ('a'): it is nested too deeply"
