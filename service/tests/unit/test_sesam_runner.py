"""The local Sesam runner's pure parts: page checks, since, batches, sequences, files."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json

import pytest

from service.tools.sesam_client import Sequence
from service.tools.sesam_client import batch_sizes
from service.tools.sesam_client import batches
from service.tools.sesam_runner import ArrayWriter
from service.tools.sesam_runner import Progress
from service.tools.sesam_runner import RunnerError
from service.tools.sesam_runner import UsageError
from service.tools.sesam_runner import check_page
from service.tools.sesam_runner import iter_json_array
from service.tools.sesam_runner import load_state
from service.tools.sesam_runner import main
from service.tools.sesam_runner import save_since
from service.tools.sesam_runner import shown_url
from service.tools.sesam_runner import stored_since

URL = "http://localhost:5000/people"


def page(*updated, ids=None):
    ids = ids or [f"e-{n}" for n in range(len(updated))]
    return json.dumps([{"_id": i, "_updated": u} for i, u in zip(ids, updated, strict=True)])


# --- pages and since ----------------------------------------------------------------------


def test_a_page_gives_its_entities_and_the_last_updated_as_the_next_since():
    entities, since = check_page(page("a1", "a2", "b0"), since="a0", limit=3)
    assert [e["_id"] for e in entities] == ["e-0", "e-1", "e-2"]
    assert since == "b0"


def test_an_empty_page_keeps_the_since_it_was_asked_with():
    assert check_page("[]", since="a0", limit=10) == ([], "a0")
    assert check_page("[]", since=None, limit=10) == ([], None)


def test_integer_updated_values_become_the_text_sesam_sends_back():
    entities, since = check_page(json.dumps([{"_id": "x", "_updated": 7}]), since=None, limit=1)
    assert since == "7"


@pytest.mark.parametrize(
    "body",
    [
        b'[{"_id": "a", "_updated": "1"}, {"_id": "b", "_upd',  # cut off mid-stream
        b'[{"_id": "a", "_updated": "1"}',  # no closing ]
        b'[{"_id": "a", "_updated": "1", "x": NaN}]',  # NaN is not JSON
        b"",
        b"\xff[]",
    ],
)
def test_a_body_that_does_not_parse_is_a_broken_stream(body):
    with pytest.raises(RunnerError, match="not valid JSON.*broken or truncated"):
        check_page(body, since=None, limit=100)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"_id": "a"}', "dict, not an array"),
        ('[["a"]]', "entity 0 of the page is a JSON list"),
        ('[{"_updated": "1"}]', "entity 0 of the page has no string _id"),
        ('[{"_id": 5, "_updated": "1"}]', "no string _id"),
        ('[{"_id": "a"}]', "_id 'a'\\) has no _updated"),
        ('[{"_id": "a", "_updated": null}]', "_id 'a'\\) has no _updated"),
        ('[{"_id": "a", "_updated": true}]', "must be a string or an integer"),
        ('[{"_id": "a", "_updated": 1.5}]', "must be a string or an integer"),
    ],
)
def test_a_page_that_is_not_entities_names_what_is_wrong(body, words):
    with pytest.raises(RunnerError, match=words):
        check_page(body, since=None, limit=100)


def test_a_page_longer_than_limit_breaks_the_protocol():
    with pytest.raises(RunnerError, match="3 entities, more than limit=2"):
        check_page(page("a", "b", "c"), since=None, limit=2)


@pytest.mark.parametrize("first", ["a5", "a4"])
def test_a_since_that_does_not_advance_is_named(first):
    """A connector that ignores since would have Sesam fetch the same page forever."""
    with pytest.raises(RunnerError, match="since does not advance: asked since='a5'"):
        check_page(page(first, "a9"), since="a5", limit=10)


@pytest.mark.parametrize("updated", [("b", "a"), ("a", "a"), ("9", "10")])
def test_updated_must_strictly_increase_as_a_string_within_a_page(updated):
    with pytest.raises(RunnerError, match="_updated does not increase as a string"):
        check_page(page(*updated), since=None, limit=10)


# --- the state file -----------------------------------------------------------------------


def test_the_state_file_keeps_one_since_per_url(tmp_path):
    path = tmp_path / "state.json"
    assert stored_since(load_state(path), URL) is None  # no file yet: a full run
    moment = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    save_since(path, URL, "t1", now=lambda: moment)
    save_since(path, URL + "/other", "x9", now=lambda: moment)
    save_since(path, URL, "t2", now=lambda: moment)
    state = load_state(path)
    assert stored_since(state, URL) == "t2"
    assert stored_since(state, URL + "/other") == "x9"
    assert state["pulls"][URL]["finished"] == "2026-03-01T12:00:00Z"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left


def test_a_full_run_that_found_nothing_forgets_the_since(tmp_path):
    path = tmp_path / "state.json"
    save_since(path, URL, "t1")
    save_since(path, URL, None)
    assert stored_since(load_state(path), URL) is None


@pytest.mark.parametrize("text", ["not json", "[]", '{"pulls": {}}', '{"version": 1, "pulls": []}'])
def test_a_state_file_that_is_not_ours_is_a_usage_error(tmp_path, text):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(UsageError, match="delete it to start over with a full run"):
        load_state(path)


# --- the output file ----------------------------------------------------------------------


def test_the_output_appears_only_when_the_run_succeeds(tmp_path):
    out = tmp_path / "people.json"
    writer = ArrayWriter(str(out))
    writer.write([{"_id": "a", "name": "Ærø"}])
    writer.write([{"_id": "b"}])
    assert not out.exists()  # still FILE.tmp
    writer.commit()
    assert json.loads(out.read_text(encoding="utf-8")) == [
        {"_id": "a", "name": "Ærø"},
        {"_id": "b"},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["people.json"]


def test_a_failed_run_leaves_an_earlier_output_as_it_was(tmp_path):
    out = tmp_path / "people.json"
    out.write_text('[{"_id": "old"}]')
    writer = ArrayWriter(str(out))
    writer.write([{"_id": "new"}])
    writer.abort()
    assert out.read_text() == '[{"_id": "old"}]'
    assert [p.name for p in tmp_path.iterdir()] == ["people.json"]


def test_a_run_that_raises_inside_the_writer_leaves_no_output(tmp_path):
    out = tmp_path / "people.json"
    out.write_text('[{"_id": "old"}]')
    with pytest.raises(RuntimeError), ArrayWriter(str(out)) as writer:
        writer.write([{"_id": "new"}])
        raise RuntimeError("the connector failed")
    assert out.read_text() == '[{"_id": "old"}]'
    assert [p.name for p in tmp_path.iterdir()] == ["people.json"]


def test_an_empty_run_writes_an_empty_array(tmp_path):
    out = tmp_path / "none.json"
    writer = ArrayWriter(str(out))
    writer.commit()
    assert json.loads(out.read_text()) == []


# --- the push file ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 16])
def test_the_push_file_is_read_element_by_element_at_any_chunk_size(chunk_size):
    entities = [
        {"_id": f"e{n}", "text": "ø" * n, "nested": {"list": [1, 2.5, None]}} for n in range(20)
    ]
    text = json.dumps(entities, ensure_ascii=False, indent=2) + "\n"
    got = list(iter_json_array(io.StringIO(text), chunk_size=chunk_size))
    assert got == entities


@pytest.mark.parametrize("text", ["[]", " [ ] \n", "[\n]"])
def test_an_empty_array_file_has_no_entities(text):
    assert list(iter_json_array(io.StringIO(text), chunk_size=2)) == []


def test_numbers_split_across_chunks_are_read_whole():
    assert list(iter_json_array(io.StringIO("[12345, 678]"), chunk_size=3)) == [12345, 678]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"_id": "a"}', "expected '\\['"),
        ('[{"_id": "a"}', "ends inside the array"),
        ('[{"_id": "a"},', "ends inside the array"),
        ('[{"_id": "a"} {"_id": "b"}]', "expected ',' or '\\]'"),
        ('[{"_id": "a"}] []', "text after the closing"),
        ('[{"_id": "a", "x": NaN}]', "invalid JSON"),
        ('[{"_id": "a", "x": tru}]', "invalid JSON"),
    ],
)
def test_a_push_file_that_is_not_one_json_array_is_refused(text, words):
    with pytest.raises(UsageError, match=words):
        list(iter_json_array(io.StringIO(text), chunk_size=4))


# --- batches and the sequence parameters --------------------------------------------------


@pytest.mark.parametrize(
    ("total", "size", "sizes"),
    [
        (150, 100, [100, 50, 0]),  # Sesam's own example
        (200, 100, [100, 100, 0]),
        (0, 100, [0]),
        (1, 1, [1, 0]),
        (5, 2, [2, 2, 1, 0]),
    ],
)
def test_batches_end_with_one_empty_batch(total, size, sizes):
    entities = [{"_id": str(n)} for n in range(total)]
    got = list(batches(entities, size))
    assert [len(b) for b in got] == sizes == batch_sizes(total, size)
    assert [e for b in got for e in b] == entities


def counter():
    numbers = itertools.count()
    return lambda: f"id{next(numbers)}"


def test_a_full_sync_chains_its_requests_from_is_first_to_is_last():
    sequence = Sequence(full=True, new_id=counter())
    sent = [sequence.params(last=False), sequence.params(last=False), sequence.params(last=True)]
    assert sent == [
        {"sequence_id": "id0", "is_full": "true", "request_id": "id1", "is_first": "true"},
        {
            "sequence_id": "id0",
            "is_full": "true",
            "request_id": "id2",
            "previous_request_id": "id1",
        },
        {
            "sequence_id": "id0",
            "is_full": "true",
            "request_id": "id3",
            "previous_request_id": "id2",
            "is_last": "true",
        },
    ]


def test_a_full_sync_of_nothing_is_one_request_both_first_and_last():
    sequence = Sequence(full=True, new_id=counter())
    assert sequence.params(last=True) == {
        "sequence_id": "id0",
        "is_full": "true",
        "request_id": "id1",
        "is_first": "true",
        "is_last": "true",
    }


def test_an_incremental_sync_has_no_is_first_or_is_last():
    sequence = Sequence(full=False, new_id=counter())
    sent = [sequence.params(last=False), sequence.params(last=True)]
    assert sent == [
        {"sequence_id": "id0", "is_full": "false", "request_id": "id1"},
        {
            "sequence_id": "id0",
            "is_full": "false",
            "request_id": "id2",
            "previous_request_id": "id1",
        },
    ]


def test_every_sync_and_request_gets_a_new_id_by_default():
    first, second = Sequence(full=True), Sequence(full=True)
    assert first.sequence_id != second.sequence_id
    ids = {first.params(last=False)["request_id"] for _ in range(50)}
    assert len(ids) == 50


# --- progress, messages, the command line -------------------------------------------------


def test_progress_shows_entities_rate_and_elapsed_every_few_seconds():
    now = [100.0]
    stream = io.StringIO()
    progress = Progress("pull", 5.0, stream, clock=lambda: now[0])
    now[0] = 102.0
    progress.update(1000)  # too soon
    now[0] = 105.0
    progress.update(2000, ", 2 pages")
    assert stream.getvalue() == "pull: 2000 entities, 2 pages, 400/s, 5.0s elapsed\n"


def test_a_password_in_the_url_is_never_shown():
    assert shown_url("http://sesam:s3cret@localhost:5000/people") == (
        "http://sesam:***@localhost:5000/people"
    )
    assert shown_url(URL) == URL


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["pull"],
        ["pull", URL, "--page-size", "0"],
        ["push", URL],
        ["push", URL, "f.json", "--batch-size", "x"],
        ["push", URL, "f.json", "--retries", "-1"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_a_url_that_is_not_http_exits_2_before_any_request(capsys):
    assert main(["pull", "localhost:5000/people"]) == 2
    assert "is not an http:// or https:// URL" in capsys.readouterr().err


def test_a_push_file_that_is_not_entities_exits_2_before_any_request(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('[{"_id": "a"}, {"name": "no id"}]')
    # Port 9 (discard) is never asked: the file is checked whole before the first batch.
    assert main(["push", "http://127.0.0.1:9/people", str(path)]) == 2
    assert "entity 1 of the file has no string _id" in capsys.readouterr().err


def test_a_missing_push_file_exits_2(tmp_path, capsys):
    assert main(["push", URL, str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
