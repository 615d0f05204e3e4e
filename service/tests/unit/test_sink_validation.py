"""The sink's batch validation, last-wins dedupe and bounded concurrent writes."""

from __future__ import annotations

import threading

import pytest
import requests

from service.framework.sink import BatchError
from service.framework.sink import Write
from service.framework.sink import parse_body
from service.framework.sink import prepare_batch
from service.framework.sink import run_bounded
from service.framework.sink import run_writes
from service.framework.upstream import UpstreamClient
from service.framework.upstream import UpstreamError
from service.framework.upstream import UpstreamTimeout
from service.tests.framework_kit import reference_app
from service.tools.reference import Records


def batch(text: str | bytes):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return prepare_batch(parse_body(data), Records.to_record)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b'[{"_id": "a"}', "not JSON"),
        (b'{"_id": "a"}', "must be a JSON array of entities, not a JSON object"),
        (b'"[]"', "not a JSON string"),
        (b'[{"_id": "a", "n": NaN}]', "NaN, which is not JSON"),
        (b'[{"_id": "a", "n": Infinity}]', "Infinity, which is not JSON"),
        (b"[\xff]", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_a_body_that_is_not_a_json_array_is_refused(body, message):
    with pytest.raises(BatchError, match=message):
        batch(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[{"_id": "a"}, 3]', "entity 1 is a JSON number, not an object"),
        ('[{"_id": "a"}, {"_id": "b"}, null]', "entity 2 is a JSON null"),
        ('[{"_id": "a"}, ["_id", "b"]]', "entity 1 is a JSON array"),
        ('[{"name": "x"}]', "entity 0 has no _id"),
        ('[{"_id": "a"}, {"_id": 7}]', "entity 1: _id must be a string, not a JSON number"),
        ('[{"_id": null}]', "entity 0: _id must be a string, not a JSON null"),
        ('[{"_id": ""}]', "entity 0: _id must not be empty"),
        ('[{"_id": "a", "s": "\\ud800"}]', "entity 0 \\('a'\\) holds a string that is not valid"),
    ],
)
def test_a_bad_entity_is_named_by_its_index(body, message):
    with pytest.raises(BatchError, match=message):
        batch(body)


def test_an_empty_array_is_a_valid_batch():
    assert batch("[]") == ([], 0)


def test_charset_and_encodings_json_allows_are_read():
    assert batch('[{"_id": "ø"}]'.encode("utf-16"))[0] == [Write("ø", {}, "ø")]
    assert batch(b'\xef\xbb\xbf[{"_id": "a"}]')[0] == [Write("a", {}, "a")]


def test_the_last_version_of_an_id_wins_and_duplicates_are_counted():
    writes, duplicates = batch(
        '[{"_id": "a", "v": 1}, {"_id": "b", "v": 1}, {"_id": "a", "v": 2},'
        ' {"_id": "b", "_deleted": true}, {"_id": "c", "_deleted": false, "v": 3}]'
    )
    assert writes == [Write("a", {"v": 2}, "a"), Write("b", None, "b"), Write("c", {"v": 3}, "c")]
    assert duplicates == 2


def test_only_deleted_true_deletes():
    writes, _ = batch('[{"_id": "a", "_deleted": "true"}, {"_id": "b", "_deleted": 1}]')
    assert [w.record is None for w in writes] == [False, False]


def test_a_mapping_that_refuses_an_entity_names_it():
    def refuse(entity):
        raise ValueError("name is required")

    with pytest.raises(BatchError, match="entity 1 \\('b'\\): name is required"):
        prepare_batch([{"_id": "a", "_deleted": True}, {"_id": "b"}], refuse)


def test_typed_strings_are_plain_in_the_written_record():
    writes, _ = batch('[{"_id": "a", "_updated": 3, "when": "~t2020-01-01", "n": "~f2.5"}]')
    assert writes == [Write("a", {"when": "2020-01-01", "n": 2.5}, "a")]


def test_every_id_deleted_or_not_goes_through_the_adapters_key_and_a_refusal_is_a_400():
    def ticket(entity_id):
        if not entity_id.isdigit():
            raise ValueError("_id must be a ticket number")
        return int(entity_id)

    body = b'[{"_id": "17", "v": 1}, {"_id": "9", "_deleted": true}]'
    writes, _ = prepare_batch(parse_body(body), Records.to_record, ticket)
    assert writes == [Write("17", {"v": 1}, 17), Write("9", None, 9)]
    with pytest.raises(BatchError, match=r"entity 1 \('x'\): _id must be a ticket number"):
        prepare_batch(parse_body(b'[{"_id": "1"}, {"_id": "x", "_deleted": true}]'), dict, ticket)


# --- writes ------------------------------------------------------------------------------


def in_groups_of(size):
    """A perform that returns only when ``size`` calls are in flight together (a barrier:
    fewer at once and it breaks after 30 s, failing the test), and counts the most."""
    barrier = threading.Barrier(size, timeout=30)
    lock = threading.Lock()
    state = {"in_flight": 0, "most": 0}

    def perform(_):
        with lock:
            state["in_flight"] += 1
            state["most"] = max(state["most"], state["in_flight"])
        barrier.wait()
        with lock:
            state["in_flight"] -= 1
        return "done"

    return perform, state


def test_writes_run_concurrently_but_never_more_than_the_bound():
    perform, state = in_groups_of(4)
    writes = [Write(f"id-{i}", {}) for i in range(40)]
    outcome = run_writes(writes, perform, concurrency=4)
    assert outcome.upserts == 40 and not outcome.failures
    assert state["most"] == 4


@pytest.mark.parametrize("count", [2, 8])
def test_bounded_items_run_concurrently_but_never_more_than_the_bound(count):
    """The transform's lookups: two at once with a bound of two, even for two items."""
    perform, state = in_groups_of(2)
    done = run_bounded(list(range(count)), perform, 2, "test")
    assert done.results == ["done"] * count and not done.failures
    assert state["most"] == 2


def test_after_a_failure_no_new_bounded_item_starts():
    asked = []

    def lookup(item):
        asked.append(item)
        if item == 1:
            raise UpstreamError("upstream answered 503 to GET .../1", status=503)
        return item * 10

    done = run_bounded(list(range(6)), lookup, 1, "test")
    assert asked == [0, 1]
    assert done.results[:2] == [0, None]
    assert [(index, error.status) for index, error in done.failures] == [(1, 503)]
    assert done.not_attempted == 4


def test_failures_are_listed_in_the_items_order_whichever_failed_first():
    both_started = threading.Barrier(2, timeout=30)
    second_failed = threading.Event()

    def lookup(item):
        both_started.wait()
        if item == 0:
            assert second_failed.wait(30)
        else:
            second_failed.set()
        raise UpstreamError(f"upstream answered 503 to GET .../{item}", status=503)

    done = run_bounded([0, 1], lookup, 2, "test")
    assert [index for index, _ in done.failures] == [0, 1]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_bug_in_a_bounded_item_or_a_write_is_raised_not_counted(concurrency):
    """Only an UpstreamError is a failure to report; anything else is a bug (a 500)."""

    def broken(_):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_bounded([1, 2, 3], broken, concurrency, "test")
    with pytest.raises(KeyError):
        run_writes([Write(f"id-{i}", {}) for i in range(3)], broken, concurrency)


def test_nothing_to_run_is_nothing_done():
    assert run_bounded([], lambda item: 1 / 0, 8, "test") == run_bounded([], None, 1, "test")
    assert run_bounded([], lambda item: 1 / 0, 8, "test").results == []


def test_after_a_failure_no_new_write_starts_and_the_failure_names_the_id():
    def fail():
        raise UpstreamError("upstream answered 500 to PUT .../b", status=500)

    writes = [Write("a", {}), Write("b", {})]
    writes += [Write(f"later-{i}", None) for i in range(10)]
    outcome = run_writes(writes, lambda w: fail() if w.entity_id == "b" else None, concurrency=1)
    assert outcome.upserts == 1 and outcome.deletes == 0
    assert outcome.not_attempted == 10
    assert [(f.entity_id, f.operation, f.status) for f in outcome.failures] == [("b", "put", 500)]


def test_a_timeout_is_marked_as_one():
    def slow():
        raise UpstreamTimeout("upstream timed out: PUT .../a")

    outcome = run_writes([Write("a", {})], lambda _: slow(), concurrency=8)
    assert outcome.failures[0].timeout and outcome.failures[0].status is None


# --- the upstream client, as the sink's writes use it ----------------------------------------


def test_a_netrc_entry_for_the_upstream_does_not_replace_the_bearer_token(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine records.example login someone password other\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = UpstreamClient("http://records.example", "the-token")
    prepared = client.session.prepare_request(
        requests.Request("PUT", client.url("people", "p-1"), json={})
    )
    assert prepared.headers["Authorization"] == "Bearer the-token"


def test_proxy_variables_are_read_once_when_the_client_is_made(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    client = UpstreamClient("http://records.example", "the-token")
    monkeypatch.delenv("HTTP_PROXY")
    assert client.session.proxies["http"] == "http://proxy.example:3128"


def test_a_large_batch_of_distinct_ids_is_checked_for_duplicates_in_little_memory():
    """Duplicates are found exactly, but only ids whose hash shares a slot of a bit table
    are kept to check: 200,000 distinct ids must not be held as strings (the dict takes
    some 40 MB, where the table takes under 3; four such batches at once in 128 MB would
    not fit)."""
    import tracemalloc

    from service.framework.sink import Batch
    from service.framework.sink import body_text

    count = 200_000
    data = ("[" + ",".join(f'{{"_id":"e-{i:07d}"}}' for i in range(count)) + "]").encode()
    text = body_text(data)
    tracemalloc.start()
    try:
        checked = Batch(None, text, Records.to_record)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (checked.entities, checked.duplicates, checked.live) == (count, 0, count)
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MB to check {count} ids"


def test_a_batch_waiting_for_room_goes_on_as_soon_as_room_is_freed(monkeypatch):
    """Not when its admission wait runs out: the batch in flight wakes it when it ends."""
    from service.framework import memory

    monkeypatch.setattr(memory, "ADMISSION_WAIT_SECONDS", 120.0)
    budget = memory.MemoryBudget(1000, slots=4)
    waiting = threading.Event()
    admitted = threading.Event()

    def second_batch():
        waiting.set()
        with budget.admit("the second batch", base=600):
            admitted.set()

    first = budget.enter("the first batch", base=600)
    thread = threading.Thread(target=second_batch)
    thread.start()
    assert waiting.wait(30)
    assert not admitted.wait(0.2)  # no room while the first batch is held
    first.close()
    # woken when the room is freed: its own wait (120 s) would run out only after this one
    assert admitted.wait(60), "the waiting batch was not woken when room was freed"
    thread.join(30)
    assert (budget.held, budget.busy) == (0, 0)


def test_the_sink_writes_and_deletes_under_the_adapters_key_not_the_id(upstream, tmp_path):
    """An adapter whose upstream key differs from the entity's _id (an integer id, a
    prefix): the write goes to the key, never to the _id."""

    class Prefixed(Records):
        def key(self, entity_id: str) -> str:
            return f"crm-{entity_id}"

    app = reference_app(upstream, tmp_path / "state", Prefixed)
    client = app.test_client()
    assert client.post("/people", json=[{"_id": "k-1", "name": "one"}]).status_code == 200
    live = upstream.live("people")
    assert live["crm-k-1"]["name"] == "one" and "k-1" not in live
    assert client.post("/people", json=[{"_id": "k-1", "_deleted": True}]).status_code == 200
    assert "crm-k-1" not in upstream.live("people")
