"""What the feed does with upstream pages it must not believe (issue 18): a record it cannot
place or map, one too large, pages sent again or without end. Each fails the run as an
upstream failure naming what and where (a 502 before the answer begins, a broken stream
after), never a 500 and never a shorter array."""

from __future__ import annotations

import socket

import pytest

from service.framework import masking
from service.framework.errors import UpstreamContractError
from service.framework.feed import entity_chunks
from service.framework.feed import make_token
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Positions
from service.tools.reference import Records

POSITIONS = Positions((TIMESTAMP, TEXT))
TS = "2026-03-01T12:00:00.000000Z"


def record(record_id, at=TS, **fields):
    return {"id": record_id, "updated_at": at, "deleted": False, **fields}


def chunks(pages, *, since=None, **options):
    """The feed's text for ``pages`` of the reference's records; ``options`` are
    entity_chunks' own (``ordered``, ``max_record_bytes``, ``max_empty_pages``,
    ``position``, ``to_entity``), its defaults where not given."""
    options = {"position": Records.position, "to_entity": Records.to_entity, **options}
    return b"".join(
        entity_chunks(
            iter(pages),
            since=since,
            limit=None,
            stats={"entities": 0},
            positions=POSITIONS,
            **options,
        )
    )


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"updated_at": TS, "deleted": False}, "record 1 of page 2 has no 'id'"),
        ({"id": "p-9", "deleted": False}, "record 1 of page 2 (id 'p-9') has no 'updated_at'"),
        ("p-9", "record 1 of page 2 is a JSON str, not an object"),
        (["p-9", TS], "record 1 of page 2 is a JSON list, not an object"),
        (None, "record 1 of page 2 is a JSON NoneType, not an object"),
    ],
)
def test_a_record_the_adapter_cannot_place_fails_the_run_naming_it(bad, says):
    pages = [[record("a")], [record("b"), bad]]
    with pytest.raises(UpstreamContractError) as failed:
        chunks(pages)
    assert f"the upstream's {says}" in str(failed.value)


@pytest.mark.parametrize(
    "at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "yesterday", 17]
)
def test_a_time_that_is_no_time_in_utc_fails_the_run_naming_it(at):
    with pytest.raises(UpstreamContractError, match="a record's position .* is not"):
        chunks([[record("a", at=at)]])


def test_a_record_nested_too_deeply_to_write_fails_the_run():
    deep: object = "bottom"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(UpstreamContractError, match="nested too deeply"):
        chunks([[record("a", deep=deep)]])


def test_a_page_that_is_not_a_list_fails_the_run():
    with pytest.raises(UpstreamContractError, match="page 2 of the upstream is a dict"):
        chunks([[record("a")], {"data": []}])


def test_a_record_larger_than_the_limit_fails_the_run_naming_it_and_the_setting():
    pages = [[record("a"), record("b", blob="x" * 5000), record("c")]]
    with pytest.raises(UpstreamContractError) as failed:
        chunks(pages, max_record_bytes=4096)
    message = str(failed.value)
    assert "record 'b' (entity 1 of page 1)" in message
    assert "more than UPSTREAM_MAX_RECORD_BYTES (4096)" in message
    assert chunks(pages, max_record_bytes=8192).count(b'"_id"') == 3


def test_a_page_sent_again_is_a_loop_even_when_its_records_were_delivered_before():
    """A since run whose first page is behind since: a repeated cursor sends it for ever,
    and without the order check over skipped records nothing would ever fail."""
    page = [record(f"r{i}") for i in range(5)]
    since = make_token(POSITIONS, (TS, "r9"))
    with pytest.raises(UpstreamContractError, match="a page sent again is a loop"):
        chunks(iter([page, page, page]), since=since)


def test_a_full_runs_only_feed_stops_on_a_page_sent_again():
    page = [record("b"), record("a")]  # no order to check in such a feed
    assert chunks([page, [record("c")]], ordered=False).count(b'"_id"') == 3
    with pytest.raises(UpstreamContractError, match="sent page 3 again"):
        chunks([page, [record("c")], page], ordered=False)


def test_empty_pages_without_end_stop_the_run_after_the_bound():
    def endless():
        yield [record("a")]
        while True:
            yield []

    with pytest.raises(UpstreamContractError, match="5 empty pages in a row"):
        chunks(endless(), max_empty_pages=5)
    assert chunks([[], [], [record("a")], [], []], max_empty_pages=3).count(b'"_id"') == 1


def test_a_contract_error_masks_a_secret_the_upstream_put_in_a_record():
    masking.register("tok-1f2e3d4c")
    with pytest.raises(UpstreamContractError) as failed:
        chunks([[{"id": "Bearer tok-1f2e3d4c", "deleted": False}]])
    assert "tok-1f2e3d4c" not in str(failed.value)


def test_a_full_runs_only_feed_remembers_its_last_64_pages():
    """A page sent again within 64 pages is a loop; one sent again 65 pages later is not
    caught here (the pages between were new, so the run goes on while it brings some)."""
    pages = [[record(f"r{n:03d}")] for n in range(65)]
    with pytest.raises(UpstreamContractError, match="sent page 65 again"):
        chunks([*pages[:64], pages[0]], ordered=False)
    assert chunks([*pages, pages[0]], ordered=False).count(b'"_id"') == 66


def test_by_default_twenty_empty_pages_in_a_row_are_a_loop():
    assert chunks([*[[]] * 19, [record("a")]]).count(b'"_id"') == 1
    with pytest.raises(UpstreamContractError, match="sent 20 empty pages in a row"):
        chunks([*[[]] * 20, [record("a")]])


def test_no_settle_window_when_it_is_zero_or_the_positions_do_not_start_with_a_time():
    from service.framework.feed import settled_until
    from service.framework.positions import INTEGER
    from service.framework.positions import TEXT
    from service.framework.positions import TIMESTAMP
    from service.framework.positions import Positions

    assert settled_until(Positions((TIMESTAMP, TEXT)), 0) is None
    assert settled_until(Positions((INTEGER, TEXT)), 30) is None
    assert settled_until(Positions((TIMESTAMP, TEXT)), 30) is not None


def test_an_adapter_that_recurses_too_deep_into_a_record_fails_the_run_not_the_page():
    """A fork's ``to_entity`` that walks a record's values (a recursive copy) hits
    Python's recursion limit on a record nested thousands deep: the run fails naming the
    record, rather than losing the rest of its page."""

    def copy(value):
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    deep: object = "bottom"
    for _ in range(5000):
        deep = [deep]
    page = [record("a"), record("b", deep=deep), record("c")]
    with pytest.raises(
        UpstreamContractError, match=r"record 1 of page 1 \(id 'b'\) it is nested too deeply"
    ):
        chunks([page], to_entity=lambda r: copy(Records.to_entity(r)))


def test_a_bad_record_is_named_by_its_id_or_its__id_and_never_by_a_value_that_is_no_id():
    with pytest.raises(UpstreamContractError) as failed:
        chunks([[{"_id": "p-7", "deleted": False}]])
    assert str(failed.value) == "the upstream's record 0 of page 1 (id 'p-7') has no 'updated_at'"
    with pytest.raises(UpstreamContractError) as failed:
        chunks([[{"id": {"nested": "id"}, "deleted": False}]])
    assert str(failed.value) == "the upstream's record 0 of page 1 has no 'updated_at'"


def test_a_key_error_without_a_name_says_a_field_is_missing():
    def position(record):
        raise KeyError

    with pytest.raises(UpstreamContractError) as failed:
        chunks([[record("a")]], position=position)
    assert str(failed.value) == (
        "the upstream's record 0 of page 1 (id 'a') lacks a field the adapter reads"
    )


def test_a_record_of_exactly_the_limit_is_delivered_and_one_byte_more_is_not():
    """The page is larger than the limit, so each of its entities is measured."""
    a, b = record("a"), record("b")
    size = len(chunks([[a]]))
    assert chunks([[a, b]], max_record_bytes=size).count(b'"_id"') == 2
    with pytest.raises(
        UpstreamContractError, match=f"more than UPSTREAM_MAX_RECORD_BYTES \\({size - 1}\\)"
    ):
        chunks([[a, b]], max_record_bytes=size - 1)


def test_a_client_whose_socket_is_closed_or_reset_is_gone():
    """Its feed then stops reading the upstream for nobody."""
    from service.framework.feed import client_gone

    ours, theirs = socket.socketpair()
    assert client_gone(ours)() is False  # there, and quiet
    theirs.close()
    assert client_gone(ours)() is True  # it hung up
    ours.close()
    assert client_gone(ours)() is True  # the socket is gone (select refuses it)
