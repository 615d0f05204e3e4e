"""The settle window without false deletions (issue 19): a record within the window is
delivered at once, with a provisional token, so a full run leaves nothing out (Sesam would
mark it deleted); the next run asks again from the cutoff, so a record written late into
the window is delivered too, once settled; and a run does not spin on the window."""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from service.framework.feed import entity_chunks
from service.framework.feed import parse_since
from service.framework.feed import resume
from service.framework.positions import INTEGER
from service.framework.positions import TEXT
from service.framework.positions import TIMESTAMP
from service.framework.positions import Positions
from service.framework.positions import utc_text

POSITIONS = Positions((TIMESTAMP, TEXT))
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return utc_text(NOW - timedelta(seconds=seconds_ago))


def cutoff(settle: float) -> str:
    """``settled_until`` as it is at ``NOW``: the tests set the clock by hand."""
    return at(settle) + "~"


def record(record_id: str, when: str) -> dict:
    return {"id": record_id, "updated_at": when}


def feed(records, *, since=None, until=None, limit=None, page=100):
    """The entities a request answers: [(id, _updated)], in order, and its stats."""
    pages = [records[i : i + page] for i in range(0, len(records), page)] or [[]]
    stats = {"entities": 0}
    text = b"".join(
        entity_chunks(
            pages,
            since=since,
            limit=limit,
            position=lambda r: (r["updated_at"], r["id"]),
            to_entity=lambda r: {"_id": r["id"]},
            stats=stats,
            positions=POSITIONS,
            until=until,
        )
    )
    entities = json.loads(b"[" + text + b"]")
    return [(e["_id"], e["_updated"]) for e in entities], stats


def token(record_id: str, when: str) -> str:
    return POSITIONS.encode((when, record_id))


def test_a_full_run_delivers_the_records_within_the_window_with_provisional_tokens():
    """Held back, as the window used to, they were missing from a full run: Sesam marked
    them deleted until the next run, and a downstream pipe could pass the deletes on."""
    records = [record("a", at(60)), record("b", at(60)), record("c", at(1)), record("d", at(0))]
    got, stats = feed(records, until=cutoff(5))
    assert [i for i, _ in got] == ["a", "b", "c", "d"]
    assert got[0][1] == token("a", at(60)) and got[1][1] == token("b", at(60))
    assert got[2][1] == f"{cutoff(5)}!{token('c', at(1))}"
    assert got[3][1] == f"{cutoff(5)}!{token('d', at(0))}"
    assert [u for _, u in got] == sorted(u for _, u in got), "not in since order"
    assert stats["provisional"] == 2


def test_a_record_at_the_cutoff_instant_is_settled_and_the_next_microsecond_is_not():
    until = cutoff(5)
    later = utc_text(NOW - timedelta(seconds=5) + timedelta(microseconds=1))
    got, _ = feed([record("a", at(5)), record("b", at(5)), record("c", later)], until=until)
    assert [u.startswith(until) for _, u in got] == [False, False, True]


def test_a_provisional_token_sorts_after_every_settled_one_and_before_every_later_one():
    """So Sesam pages on in order, and its since after a run is never past a record that
    had not settled: a prefix of another token (an id that starts another) included."""
    until = cutoff(5)
    provisional = f"{until}!{token('ab', at(1))}"
    assert token("abc", at(5)) < provisional  # settled, and "ab"'s hex starts "abc"'s
    assert token("a", at(5)) < provisional
    assert provisional < token("a", at(4.5))  # settled at a later request (a later cutoff)
    assert provisional < f"{cutoff(4.5)}!{token('a', at(1))}"


def test_the_next_run_asks_again_from_the_cutoff_and_gets_what_settled_there_late_ones_too():
    """The race of a coarse clock: after the run read ``b`` (then within the window), ``a``
    is written with ``b``'s very time, before it in feed order. Sesam's since is the
    provisional token of ``b``: the next run asks from the cutoff, and delivers ``a``
    and ``b`` again with their settled tokens."""
    run_1, _ = feed([record("old", at(60)), record("b", at(3))], until=cutoff(5))
    since = run_1[-1][1]
    assert parse_since(since, POSITIONS) == (NOW - timedelta(seconds=5),)  # asked from here
    later = NOW + timedelta(seconds=10)  # the next run, the window passed
    until = utc_text(later - timedelta(seconds=5)) + "~"
    upstream = [record("a", at(3)), record("b", at(3)), record("new", at(-9))]
    run_2, stats = feed(upstream, since=since, until=until)
    assert [i for i, _ in run_2] == ["a", "b", "new"]
    assert run_2[0][1] == token("a", at(3)) and run_2[1][1] == token("b", at(3))
    assert run_2[2][1] == f"{until}!{token('new', at(-9))}"  # within the new window
    assert all(u > since for _, u in run_2)
    assert stats["provisional"] == 1


def test_paging_through_the_window_does_not_deliver_it_again_nor_spin():
    """Sesam pages (limit, since): a page that ends inside the window, then the next page
    of the same run, with the same cutoff: it goes on after the last provisional record,
    and the request after the last page is empty, so the run ends."""
    until = cutoff(5)
    records = [record("old", at(60))] + [record(f"w{n}", at(2)) for n in range(5)]
    page_1, _ = feed(records, until=until, limit=3)
    assert [i for i, _ in page_1] == ["old", "w0", "w1"]
    page_2, _ = feed(records, since=page_1[-1][1], until=until, limit=3)
    assert [i for i, _ in page_2] == ["w2", "w3", "w4"]
    page_3, _ = feed(records, since=page_2[-1][1], until=until, limit=3)
    assert page_3 == []


def test_a_page_after_records_settled_delivers_only_those_again():
    """The cutoff moved on between two pages: records that settled meanwhile are sent
    again with their own tokens (once), the rest of the window goes on provisionally."""
    records = [record("w0", at(4)), record("w1", at(2)), record("w2", at(1))]
    page_1, _ = feed(records, until=cutoff(5), limit=2)
    assert [i for i, _ in page_1] == ["w0", "w1"]
    page_2, _ = feed(records, since=page_1[-1][1], until=cutoff(3), limit=10)
    assert [(i, u.startswith(cutoff(3))) for i, u in page_2] == [("w0", False), ("w2", True)]
    page_3, _ = feed(records, since=page_2[-1][1], until=cutoff(3), limit=10)
    assert page_3 == []


def test_a_since_ahead_of_the_cutoff_keeps_every_token_after_it():
    """A clock set back, or a window made longer: the since's instant counts as settled."""
    since = token("a", at(2))
    got, _ = feed(
        [record("a", at(2)), record("b", at(2)), record("c", at(1))], since=since, until=cutoff(5)
    )
    assert [i for i, _ in got] == ["b", "c"]
    assert all(u > since for _, u in got)
    assert [u for _, u in got] == sorted(u for _, u in got)


def test_without_a_window_no_token_is_provisional():
    got, stats = feed([record("a", at(1))], until=None)
    assert got == [("a", token("a", at(1)))] and stats["provisional"] == 0


@pytest.mark.parametrize(
    "since",
    [
        "2026-06-01T11:59:55.000000Z~!zz",  # the record's token is not one of this feed's
        "2026-06-01T11:59:55Z~!2026-06-01T11:59:58.000000Z_61",  # not the canonical cutoff
        "yesterday~!2026-06-01T11:59:58.000000Z_61",
    ],
)
def test_a_malformed_provisional_since_is_refused(since):
    with pytest.raises(ValueError, match="since must be an _updated value from this feed"):
        parse_since(since, POSITIONS)


def test_a_feed_whose_position_has_no_time_hands_out_no_provisional_token():
    with pytest.raises(ValueError, match="hands out no provisional tokens"):
        parse_since("2026-06-01T11:59:55.000000Z~!p50001", Positions((INTEGER,)))


def test_resume_tells_a_provisional_since_from_a_plain_one():
    plain = token("a", at(1))
    assert resume(plain).floor == plain and resume(plain).settled_from is None
    provisional = resume(f"{cutoff(5)}!{plain}")
    assert (provisional.token, provisional.floor) == (plain, cutoff(5))
