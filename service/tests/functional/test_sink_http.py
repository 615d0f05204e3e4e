"""The sink over HTTP: the connector under gunicorn (2 workers, 4 threads each) writing
into the demo Records API on loopback. Every request goes over a new connection, so
the requests of one full sync land on different workers."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import requests

from service.tests.framework_kit import UPSTREAM_TOKEN
from service.tools.sesam_client import Sequence
from service.tools.sesam_client import batches

HOSTILE_IDS = [
    "a/b",
    "a?b=c",
    "c#d",
    "100%",
    "%2F",
    "with space",
    "Ærøskøbing",
    "日本語",
    "😀",
    ".",
    "..",
    "../people",
    "+plus",
    "semi;colon",
    "trailing/",
    "~tx",
]


def post(connector, resource, body, *, params=None, headers=None, raw=False):
    """One sink request over its own connection, as a fresh Sesam worker would send it."""
    data = body if raw else json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json"} if headers is None else headers
    with requests.Session() as session:
        return session.post(
            f"{connector.url}/{resource}", data=data, params=params, headers=headers, timeout=120
        )


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


class Sync:
    """A full sync as Sesam's json sink drives it: is_first, then previous_request_id.

    The sequence moves on only when a request is answered 200, so a test can send a
    request that should fail, then go on. ``previous`` may be set, to test the sink."""

    def __init__(self, connector, resource):
        self.connector = connector
        self.resource = resource
        self.sequence = Sequence(full=True, new_id=lambda: str(uuid.uuid4()), always_flags=True)
        self.sequence_id = self.sequence.sequence_id
        self.last_params = None

    @property
    def previous(self):
        return self.sequence.previous

    @previous.setter
    def previous(self, request_id):
        self.sequence.previous = request_id

    def params(self, is_last=False, request_id=None):
        return self.sequence.upcoming(last=is_last, request_id=request_id)

    def send(self, entities, is_last=False):
        params = self.params(is_last)
        response = post(self.connector, self.resource, entities, params=params)
        self.last_params = params
        if response.status_code == 200:
            self.sequence.accepted(params)
        return response

    def run(self, entities, batch_size=100):
        """Every batch, then the empty last one; answers the responses."""
        return [self.send(batch, is_last=not batch) for batch in batches(entities, batch_size)]


def people(ids, **fields):
    return [{"_id": i, "name": f"name of {i}", **fields} for i in ids]


def writes(upstream):
    stats = upstream.stats()
    return stats["PUT"] + stats["DELETE"]


# --- incremental batches -------------------------------------------------------------------


def test_a_batch_writes_upserts_and_deletes(connector, upstream):
    batch = [
        {
            "_id": "p-1",
            "_updated": 7,
            "_hash": "x",
            "_ts": 1,
            "_deleted": False,
            "name": "Ada",
            "born": "~t1815-12-10",
            "balance": "~f12.50",
            "home": "~rhttp://x/y",
            "$type": "person",
            "nested": {"_kept": "~:crm:1", "list": ["~f3"]},
        },
        {"_id": "p-2", "_deleted": True},
        {"_id": "new-1", "name": "Nina"},
    ]
    summary = ok(post(connector, "people", batch, params={"is_full": "false"}))
    assert summary["upserts"] == 2 and summary["deletes"] == 1 and summary["entities"] == 3
    live = upstream.live("people")
    ada = {k: v for k, v in live["p-1"].items() if k not in ("updated_at",)}
    assert ada == {
        "id": "p-1",
        "deleted": False,
        "name": "Ada",
        "born": "1815-12-10",
        "balance": 12.5,
        "home": "http://x/y",
        "$type": "person",
        "nested": {"_kept": "crm:1", "list": [3]},
    }
    assert "p-2" not in live
    assert live["new-1"]["name"] == "Nina"


def test_deleting_a_record_that_is_already_gone_is_fine(connector, upstream):
    batch = [{"_id": "p-21", "_deleted": True}, {"_id": "never-was", "_deleted": True}]
    assert ok(post(connector, "people", batch))["deletes"] == 2


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=UTF-8",
        "application/json;charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        None,
    ],
)
def test_the_body_is_read_whatever_the_content_type_says(connector, upstream, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = post(connector, "people", [{"_id": "ct", "v": "ø"}], headers=headers)
    assert ok(response)["upserts"] == 1
    assert upstream.live("people")["ct"]["v"] == "ø"


def test_an_empty_batch_is_fine_and_writes_nothing(connector, upstream):
    assert ok(post(connector, "people", []))["upserts"] == 0
    assert writes(upstream) == 0


def test_hostile_ids_are_written_as_one_path_segment_each(connector, upstream):
    upstream.create("things")
    ok(post(connector, "things", people(HOSTILE_IDS)))
    live = upstream.live("things")
    assert sorted(live) == sorted(HOSTILE_IDS)
    assert all(live[i]["name"] == f"name of {i}" for i in HOSTILE_IDS)
    ok(post(connector, "things", [{"_id": i, "_deleted": True} for i in HOSTILE_IDS]))
    assert upstream.live("things") == {}


def test_the_last_version_of_a_duplicated_id_wins(connector, upstream):
    batch = [
        {"_id": "d", "v": 1},
        {"_id": "e", "v": 1},
        {"_id": "d", "v": 2},
        {"_id": "e", "_deleted": True},
        {"_id": "d", "v": 3},
    ]
    summary = ok(post(connector, "people", batch))
    assert summary["duplicates"] == 3 and summary["upserts"] == 1 and summary["deletes"] == 1
    live = upstream.live("people")
    assert live["d"]["v"] == 3 and "e" not in live
    assert upstream.stats()["PUT"] == 1  # one write per id


def test_a_batch_of_many_entities_is_written_completely(connector, upstream):
    upstream.create("bulk")
    entities = people([f"b-{i:04d}" for i in range(300)], score=1.5)
    assert ok(post(connector, "bulk", entities))["upserts"] == 300
    assert len(upstream.live("bulk")) == 300


# --- bad input: a 4xx, and nothing written -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not JSON"),
        (b"", 400, "empty"),
        (b'{"_id": "p-1"}', 400, "JSON array"),
        (b'[{"_id": "p-1", "name": "x"}, 42]', 400, "entity 1"),
        (b'[{"_id": "p-1", "name": "x"}, {"name": "y"}]', 400, "entity 1 has no _id"),
        (b'[{"_id": "p-1", "name": "x"}, {"_id": 5}]', 400, "entity 1: _id must be a string"),
        (b'[{"_id": "p-1", "name": "x"}, {"_id": ""}]', 400, "entity 1: _id must not be empty"),
        (b'[{"_id": "p-1", "name": "x"}, {"_id": "n", "v": NaN}]', 400, "NaN"),
        (b'[{"_id": "p-1", "name": "x", "s": "\\udc00"}]', 400, "lone surrogate"),
        (b'[{"_id": "p-1", "name": "\xff"}]', 400, "UTF-8"),
    ],
)
def test_a_bad_batch_is_refused_and_nothing_is_written(connector, upstream, body, status, fragment):
    before = upstream.records("people")
    response = post(connector, "people", body, raw=True)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) >= {"error", "detail"} and fragment in error["detail"]
    assert writes(upstream) == 0
    assert upstream.records("people") == before


def test_a_body_over_the_limit_is_413_and_nothing_is_written(connector_factory, upstream):
    connector = connector_factory(SINK_MAX_BODY_BYTES="2000")
    small = ok(post(connector, "people", people(["fits"])))
    assert small["upserts"] == 1
    for size in (100, 50_000):  # a few KB, and a few MB
        response = post(connector, "people", people([f"big-{i}" for i in range(size)]))
        assert response.status_code == 413
        assert "SINK_MAX_BODY_BYTES (2000 bytes)" in response.json()["detail"]
    assert "big-0" not in upstream.live("people")
    assert upstream.stats()["PUT"] == 1


def test_a_collection_name_that_cannot_be_one_is_404(connector, upstream):
    response = post(connector, "People", people(["x"]))
    assert response.status_code == 404 and response.json()["error"] == "Not Found"
    assert writes(upstream) == 0


def test_an_unknown_upstream_collection_is_a_5xx_naming_the_status(connector, upstream):
    response = post(connector, "nosuch", people(["x"]))
    assert response.status_code == 502
    failed = response.json()["failed"]
    assert failed[0]["_id"] == "x" and failed[0]["upstream_status"] == 404


# --- full syncs ----------------------------------------------------------------------------


def test_a_full_sync_over_many_connections_writes_everything(connector, upstream):
    upstream.create("staff")
    entities = people([f"s-{i:03d}" for i in range(250)])
    responses = Sync(connector, "staff").run(entities)
    bodies = [ok(r) for r in responses]
    assert [b["full_sync"]["verdict"] for b in bodies] == [
        "start",
        "continue",
        "continue",
        "continue",
    ]
    assert [b["upserts"] for b in bodies] == [100, 100, 50, 0]
    assert sorted(upstream.live("staff")) == [e["_id"] for e in entities]
    assert bodies[-1]["full_sync"]["deletion"] == "off"


@pytest.mark.parametrize("missing", ["sequence_id", "request_id", "previous_request_id"])
def test_a_full_sync_request_without_its_tokens_is_400(connector, upstream, missing):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    params = sync.params()
    del params[missing]
    response = post(connector, "people", people(["p-2"]), params=params)
    assert response.status_code == 400 and missing in response.json()["detail"]
    assert upstream.stats()["PUT"] == 1


def test_a_malformed_flag_is_400(connector, upstream):
    response = post(connector, "people", people(["p-1"]), params={"is_full": "yes"})
    assert response.status_code == 400 and "is_full" in response.json()["detail"]
    assert writes(upstream) == 0


def conflict(connector, upstream, params, entities=None):
    before = writes(upstream)
    response = post(connector, "people", entities or people(["conflicted"]), params=params)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "Conflict"
    assert writes(upstream) == before
    assert "conflicted" not in upstream.live("people")
    return response.json()["detail"]


def test_is_first_inside_a_started_sequence_is_409(connector, upstream):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    params = {**sync.params(), "is_first": "true"}
    assert "already started" in conflict(connector, upstream, params)
    ok(sync.send(people(["p-2"])))  # the sequence itself goes on


def test_a_wrong_previous_request_id_is_409(connector, upstream):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    ok(sync.send(people(["p-2"])))
    params = {**sync.params(), "previous_request_id": "not-the-previous"}
    assert "does not match the previous request" in conflict(connector, upstream, params)


def test_continuing_a_sequence_that_is_not_active_is_409(connector, upstream):
    old = Sync(connector, "people")
    ok(old.send(people(["p-1"])))
    new = Sync(connector, "people")
    ok(new.send(people(["p-2"])))  # replaces old
    assert "is not the active sequence" in conflict(connector, upstream, old.params())
    stranger = Sync(connector, "people")
    stranger.previous = "made-up"
    assert "is not the active sequence" in conflict(connector, upstream, stranger.params())


def test_continuing_an_ended_sequence_is_409(connector, upstream):
    sync = Sync(connector, "people")
    sync.run(people(["p-1"]))
    assert "already ended" in conflict(connector, upstream, sync.params())


def test_is_full_changing_within_a_sequence_is_409(connector, upstream):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    params = {**sync.params(), "is_full": "false"}
    assert "is_full changed" in conflict(connector, upstream, params)


def test_a_409_or_400_does_not_advance_the_sequence(connector, upstream):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    conflict(connector, upstream, {**sync.params(), "previous_request_id": "wrong"})
    assert post(connector, "people", b"[1]", params=sync.params(), raw=True).status_code == 400
    assert ok(sync.send(people(["p-2"])))["full_sync"]["verdict"] == "continue"


def test_the_last_accepted_request_sent_again_is_accepted_again(connector, upstream):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    ok(sync.send(people(["p-2"], name="first try")))
    again = post(connector, "people", people(["p-2"], name="first try"), params=sync.last_params)
    assert ok(again)["full_sync"]["verdict"] == "retry"
    assert ok(sync.send([], is_last=True))["full_sync"]["verdict"] == "continue"


def test_the_sequence_survives_a_restart(connector_factory, upstream, tmp_path):
    state = str(tmp_path / "shared-state")
    before = connector_factory(STATE_DIR=state)
    sync = Sync(before, "people")
    ok(sync.send(people(["p-1"])))
    after = connector_factory(STATE_DIR=state)  # another gunicorn, as after a restart
    sync.connector = after
    assert ok(sync.send(people(["p-2"])))["full_sync"]["verdict"] == "continue"
    assert "already started" in conflict(after, upstream, {**sync.params(), "is_first": "true"})


# --- the upstream failing mid-batch --------------------------------------------------------


def test_a_failing_write_is_a_502_naming_it_and_sesams_retry_recovers(connector, upstream):
    sync = Sync(connector, "people")
    ok(sync.send(people(["p-1"])))
    upstream.faults(fail_write_ids={"ids": ["p-5", "a/b"], "status": 500})
    batch = people(["p-4", "p-5", "a/b", "p-6"])
    params = sync.params()
    failed = post(connector, "people", batch, params=params)
    assert failed.status_code == 502, failed.text
    error = failed.json()
    failed_ids = {f["_id"] for f in error["failed"]}  # after the first, new writes stop
    assert failed_ids and failed_ids <= {"p-5", "a/b"}
    assert all(f["upstream_status"] == 500 for f in error["failed"])
    assert UPSTREAM_TOKEN not in failed.text
    assert re.search(r"sink people status=502 .*failed: '(p-5|a/b)' put 500", connector.log_text())
    upstream.clear_faults()
    retried = post(connector, "people", batch, params=params)  # the same request again
    assert ok(retried)["full_sync"]["verdict"] == "continue"
    sync.previous = params["request_id"]
    assert ok(sync.send([], is_last=True))["full_sync"]["verdict"] == "continue"
    live = upstream.live("people")
    assert all(live[i]["name"] == f"name of {i}" for i in ["p-4", "p-5", "a/b", "p-6"])


def test_a_burst_of_upstream_errors_in_an_incremental_batch_then_recovery(connector, upstream):
    upstream.faults(fail_writes={"count": 3, "status": 500})
    batch = people([f"x-{i}" for i in range(20)])
    failed = post(connector, "people", batch)
    assert failed.status_code == 502
    assert failed.json()["failed_count"] >= 1
    # Sesam retries the batch (3 times by default); the three faults run out by then.
    retries = [post(connector, "people", batch) for _ in range(3)]
    assert retries[-1].status_code == 200, retries[-1].text
    assert ok(retries[-1])["upserts"] == 20
    assert all(f"x-{i}" in upstream.live("people") for i in range(20))


def test_transient_upstream_errors_are_retried_inside_one_request(connector, upstream):
    upstream.faults(fail_writes={"count": 4, "status": 503})
    assert ok(post(connector, "people", people(["t-1", "t-2"])))["upserts"] == 2


# --- deletion detection --------------------------------------------------------------------


@pytest.fixture
def deleting(connector_factory, upstream):
    return connector_factory(FULL_SYNC_DELETE="true")


def test_a_full_sync_deletes_what_it_did_not_send_only_at_its_end(deleting, upstream):
    kept = [f"p-{i}" for i in range(1, 11)]
    sync = Sync(deleting, "people")
    first = ok(sync.send(people(kept[:5])))
    assert first["full_sync"]["deletion"] == "pending"
    ok(sync.send(people(kept[5:] + ["new-1"])))
    assert len(upstream.live("people")) == 21  # nothing deleted before is_last
    last = ok(sync.send([], is_last=True))
    assert last["full_sync"]["deletion"] == "done"
    assert last["full_sync"]["deleted_missing"] == 10
    assert sorted(upstream.live("people")) == sorted(kept + ["new-1"])
    assert re.search(
        r"sink people status=200 .*deletion=done deleted_missing=10", deleting.log_text()
    )
    again = post(deleting, "people", [], params=sync.last_params)  # a lost answer, resent
    assert ok(again)["full_sync"]["deletion"] == "already_done"


def test_an_empty_full_sync_deletes_nothing_and_says_so(deleting, upstream):
    before = upstream.live("people")
    last = ok(Sync(deleting, "people").send([], is_last=True))
    assert last["full_sync"]["deletion"] == "skipped_empty"
    assert last["full_sync"]["deleted_missing"] == 0
    assert upstream.live("people") == before
    assert "sent no entities: deleting nothing" in deleting.log_text()


def test_a_full_sync_of_only_deletions_counts_as_empty(deleting, upstream):
    sync = Sync(deleting, "people")
    ok(sync.send([{"_id": "p-1", "_deleted": True}]))
    assert ok(sync.send([], is_last=True))["full_sync"]["deletion"] == "skipped_empty"
    assert len(upstream.live("people")) == 19


def test_an_empty_full_sync_deletes_everything_when_allowed(connector_factory, upstream):
    connector = connector_factory(FULL_SYNC_DELETE="true", FULL_SYNC_ALLOW_EMPTY_DELETE="true")
    last = ok(Sync(connector, "people").run([])[-1])
    assert last["full_sync"]["deleted_missing"] == 20
    assert upstream.live("people") == {}


def test_an_abandoned_sequence_deletes_nothing(deleting, upstream):
    abandoned = Sync(deleting, "people")
    ok(abandoned.send(people(["p-1"])))
    replacing = Sync(deleting, "people")
    ok(replacing.send(people([f"p-{i}" for i in range(1, 21)])))
    before = upstream.live("people")
    conflict(deleting, upstream, abandoned.params(is_last=True), entities=[])
    assert upstream.live("people") == before  # the abandoned sequence's end deleted nothing
    last = ok(replacing.send(people(["p-99"]), is_last=True))
    assert last["full_sync"]["deleted_missing"] == 0
    assert len(upstream.live("people")) == 21


def test_deletion_detection_sees_ids_sent_across_workers_and_hostile_ids(deleting, upstream):
    upstream.insert("things", [{"id": i, "v": 0} for i in HOSTILE_IDS + ["doomed/1", "doomed 2"]])
    sync = Sync(deleting, "things")
    for start in range(0, len(HOSTILE_IDS), 3):
        ok(sync.send(people(HOSTILE_IDS[start : start + 3])))
    last = ok(sync.send([], is_last=True))
    assert last["full_sync"]["deleted_missing"] == 2
    assert sorted(upstream.live("things")) == sorted(HOSTILE_IDS)


def test_a_deletion_that_fails_is_a_502_and_the_retry_finishes_it(deleting, upstream):
    sync = Sync(deleting, "people")
    ok(sync.send(people([f"p-{i}" for i in range(1, 19)])))
    upstream.faults(fail_write_ids={"ids": ["p-20"], "status": 500})
    params = sync.params(is_last=True)
    failed = post(deleting, "people", [], params=params)
    assert failed.status_code == 502
    assert [f["_id"] for f in failed.json()["failed"]] == ["p-20"]
    upstream.clear_faults()
    retried = ok(post(deleting, "people", [], params=params))
    assert retried["full_sync"]["deletion"] == "done"
    assert sorted(upstream.live("people")) == sorted(f"p-{i}" for i in range(1, 19))


# --- the log ------------------------------------------------------------------------------


def test_one_log_line_per_request_without_payloads_or_the_token(connector, upstream):
    marker = f"payload-{uuid.uuid4()}"
    ok(post(connector, "people", [{"_id": "log-1", "secret_field": marker}]))
    post(connector, "people", b"[1]", raw=True)
    text = connector.log_text()
    assert marker not in text and UPSTREAM_TOKEN not in text
    assert re.search(
        r"INFO service\.framework\.sink: sink people status=200 entities=1 duplicates=0 "
        r"upserts=1 deletes=0 is_full=false seconds=\d+\.\d+ ok",
        text,
    )
    assert re.search(r"sink people status=400 .*rejected: entity 0 is a JSON number", text)
