"""``MergedPaging``: changes and deletions kept in two lists, read as one in feed order.

The fake upstream has two lists, as OData APIs do (``/Orders`` and ``/DeletedOrders``):
the live records, and one entry per deletion, each paged with a keyset cursor and an
inclusive ``updated_since``. The merged walk must be in position order, each position once,
lose nothing when records change mid-run or share a time across page boundaries, stop
when a list loops, and follow the stated rule for a record deleted and created again at
one instant: the live record wins.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.framework.paging import CursorPaging
from service.framework.paging import MergedPaging
from service.framework.upstream import UpstreamError

CHANGES = "http://erp.example/Orders"
DELETIONS = "http://erp.example/DeletedOrders"


class TwoLists:
    """The live records (``t``, ``id``, ``name``) and the deletion log (``at``, ``id``).
    ``before`` maps a request number (1-based) to a callback run before it is served."""

    def __init__(self, page: int = 2) -> None:
        self.page = page
        self.clock = 100
        self.live: dict[str, dict[str, Any]] = {}
        self.deletions: list[dict[str, Any]] = []
        self.before: dict[int, Any] = {}
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def create(self, record_id: str, t: int | None = None) -> None:
        self.clock = max(self.clock, t or 0) if t is not None else self.clock + 1
        self.live[record_id] = {"id": record_id, "t": self.clock if t is None else t}

    def change(self, record_id: str) -> None:
        self.clock += 1
        self.live[record_id] = {**self.live[record_id], "t": self.clock, "name": "changed"}

    def delete(self, record_id: str, at: int | None = None) -> None:
        if at is None:
            self.clock += 1
        self.live.pop(record_id, None)
        self.deletions.append({"id": record_id, "at": self.clock if at is None else at})

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        query = dict(params or {})
        self.asked.append((url, query))
        hook = self.before.pop(len(self.asked), None)
        if hook is not None:
            hook()
        if url == CHANGES:
            rows = sorted(((r["t"], r["id"]), r) for r in self.live.values())
        else:
            rows = sorted(((d["at"], d["id"]), d) for d in self.deletions)
        since = query.get("updated_since")
        rows = [(key, row) for key, row in rows if since is None or key[0] >= since]
        if "cursor" in query:
            t, _, key = query["cursor"].partition(":")
            rows = [(k, row) for k, row in rows if k > (int(t), key)]
        page = rows[: self.page]
        cursor = f"{page[-1][0][0]}:{page[-1][0][1]}" if len(rows) > self.page else None
        return {"data": [dict(row) for _, row in page], "next_cursor": cursor}


def since_params(anchor: int) -> dict[str, Any]:
    return {"updated_since": anchor}


def merged(**options: Any) -> MergedPaging:
    return MergedPaging(
        changes=CursorPaging(position=lambda r: (r["t"], r["id"]), since_params=since_params),
        deletions=CursorPaging(position=lambda d: (d["at"], d["id"]), since_params=since_params),
        tombstone=lambda d: {"id": d["id"], "t": d["at"], "deleted": True},
        **options,
    )


def feed(upstream: TwoLists, since: Any) -> list[tuple[int, str, bool]]:
    """What the adapter's ``pages`` hands the feed, as (time, id, deleted), checked to be
    in strictly ascending position order (the feed's own rule)."""
    pages = list(merged().pages(upstream, CHANGES, DELETIONS, {"limit": 2}, since=since))
    assert all(pages), "an empty page"
    got = [(r["t"], r["id"], r.get("deleted", False)) for page in pages for r in page]
    positions = [(t, i) for t, i, _ in got]
    assert positions == sorted(set(positions)), f"out of order or twice: {got}"
    return got


def test_a_full_run_reads_the_live_records_only():
    upstream = TwoLists()
    for name in "abcde":
        upstream.create(name)
    upstream.delete("c")
    assert feed(upstream, None) == [(101, "a", False), (102, "b", False), (104, "d", False),
                                    (105, "e", False)]  # fmt: skip
    assert {url for url, _ in upstream.asked} == {CHANGES}


def test_changes_and_deletions_come_in_one_position_order():
    upstream = TwoLists()
    for name in "abcdef":
        upstream.create(name)  # 101..106
    upstream.delete("b")  # 107
    upstream.change("a")  # 108
    upstream.delete("e")  # 109
    upstream.create("g")  # 110
    assert feed(upstream, (105,)) == [
        (106, "f", False),
        (107, "b", True),
        (108, "a", False),
        (109, "e", True),
        (110, "g", False),
    ]


def test_since_a_position_resumes_after_it_in_both_lists():
    upstream = TwoLists()
    for name in "abcd":
        upstream.create(name, t=200)
    for name in "wxyz":
        upstream.delete(name, at=200)
    everything = feed(upstream, (200,))
    assert [i for _, i, _ in everything] == list("abcdwxyz")  # one time: by id, both lists
    for cut, (t, record_id, _) in enumerate(everything):
        assert feed(upstream, (t, record_id)) == everything[cut + 1 :]


def test_a_record_deleted_and_created_again_at_one_instant_is_delivered_live():
    """One position in both lists. The rule: the changes list's record wins, since that
    list shows the record as it is; a deletion after it would have a later time."""
    upstream = TwoLists()
    upstream.create("a", t=300)
    upstream.create("b", t=300)
    upstream.delete("b", at=300)
    upstream.create("b", t=300)  # re-created in the same instant
    upstream.delete("c", at=300)
    assert feed(upstream, (300,)) == [(300, "a", False), (300, "b", False), (300, "c", True)]


def test_deleted_then_created_again_later_ends_live_and_created_then_deleted_ends_deleted():
    upstream = TwoLists()
    upstream.create("a")  # 101
    upstream.create("b")  # 102
    upstream.delete("a")  # 103
    upstream.create("a")  # 104: again, later
    upstream.delete("b")  # 105
    got = feed(upstream, (101,))
    assert got == [(103, "a", True), (104, "a", False), (105, "b", True)]
    final = {record_id: deleted for _, record_id, deleted in got}  # the last one wins
    assert final == {"a": False, "b": True}


def test_a_tie_wider_than_a_page_in_both_lists_loses_nothing():
    upstream = TwoLists(page=2)
    for n in range(7):
        upstream.create(f"live-{n}", t=400)
    for n in range(5):
        upstream.delete(f"gone-{n}", at=400)
    got = feed(upstream, (400,))
    assert [i for _, i, _ in got] == sorted(
        [f"live-{n}" for n in range(7)] + [f"gone-{n}" for n in range(5)]
    )


def final(got: list[tuple[int, str, bool]]) -> dict[str, bool]:
    """Sesam's view after the run: the last entity of each id wins."""
    return {record_id: deleted for _, record_id, deleted in got}


def test_records_changed_and_deleted_mid_run_are_not_lost():
    upstream = TwoLists(page=2)
    for name in "abcdefgh":
        upstream.create(name)  # 101..108
    upstream.before[2] = lambda: upstream.change("a")  # after the first page of changes
    upstream.before[4] = lambda: upstream.delete("c")
    assert final(feed(upstream, (101,))) == {**{name: False for name in "abdefgh"}, "c": True}


def test_a_deletion_made_after_its_list_ended_is_read_before_a_later_change_is_handed_on():
    """The deletion list ends (nothing deleted); then c is deleted (109) and a changed
    (110); the changes list brings a at 110. Handed on without reading the deletion list
    again, a at 110 would move Sesam's ``since`` past c's deletion at 109: lost for good."""
    upstream = TwoLists(page=2)
    for name in "abcd":
        upstream.create(name)  # 101..104

    def meanwhile() -> None:
        upstream.delete("c")  # 105
        upstream.change("a")  # 106

    upstream.before[3] = meanwhile  # after the first page of each list
    got = feed(upstream, (101,))
    assert (105, "c", True) in got and (106, "a", False) in got
    assert final(got) == {"a": False, "b": False, "c": True, "d": False}


def test_a_record_created_after_the_changes_list_ended_is_read_before_a_later_deletion():
    upstream = TwoLists(page=2)
    upstream.create("a")  # 101
    for name in "wxyz":
        upstream.delete(name)  # 102..105

    def meanwhile() -> None:
        upstream.create("b")  # 106
        upstream.delete("a")  # 107

    upstream.before[3] = meanwhile
    got = feed(upstream, (101,))
    assert (106, "b", False) in got and (107, "a", True) in got
    assert final(got) == {"a": True, "b": False, **dict.fromkeys("wxyz", True)}


def test_once_a_list_has_ended_each_page_of_the_other_costs_one_request_more():
    upstream = TwoLists(page=2)
    for n in range(8):
        upstream.create(f"r{n}")  # 4 pages of changes
    feed(upstream, (100,))
    change_reads = [query for url, query in upstream.asked if url == CHANGES]
    deletion_reads = [query for url, query in upstream.asked if url == DELETIONS]
    # The first, then one after each later page of changes that brought records: never
    # more, and not one when nothing new came.
    assert 2 <= len(deletion_reads) <= len(change_reads)
    assert [q["updated_since"] for q in deletion_reads] == sorted(
        q["updated_since"] for q in deletion_reads
    )


def test_a_deletion_list_that_loops_stops_the_run():
    upstream = TwoLists()
    upstream.create("a")

    class Looping(TwoLists):
        def get_json(self, url, params=None):
            if url == DELETIONS:
                return {"data": [{"id": "x", "at": 150}], "next_cursor": "same"}
            return upstream.get_json(url, params)

    with pytest.raises(UpstreamError, match="sent the cursor 'same' again"):
        list(merged().pages(Looping(), CHANGES, DELETIONS, {"limit": 2}, since=(100,)))


def test_pages_are_handed_on_as_they_are_read_not_gathered():
    """Memory: the merge holds a page of each list, not the run."""
    upstream = TwoLists(page=2)
    for n in range(20):
        upstream.create(f"r{n:02d}")
    walk = merged().pages(upstream, CHANGES, DELETIONS, {"limit": 2}, since=(100,))
    first = next(walk)
    assert len(first) <= 4
    assert len(upstream.asked) <= 3  # a page of changes, of deletions, and one ahead at most
    walk.close()


def test_without_a_tombstone_the_deletion_entries_pass_as_they_are():
    upstream = TwoLists()
    upstream.delete("x", at=150)
    paging = MergedPaging(
        changes=CursorPaging(position=lambda r: (r["t"], r["id"]), since_params=since_params),
        deletions=CursorPaging(position=lambda d: (d["at"], d["id"]), since_params=since_params),
    )
    assert list(paging.pages(upstream, CHANGES, DELETIONS, since=(100,))) == [
        [{"id": "x", "at": 150}]
    ]


def test_a_list_read_again_after_the_other_brings_a_page_is_read_before_that_page_is_used():
    """The changes list has ended; the deletion list's next page holds y at 110, and
    meanwhile b appeared in the changes, dated 105 (a late commit). The changes are read
    again from the last position handed on, before y is: b, then y. Handing y on first
    would take Sesam's ``since`` past b, which would then come out of order."""
    upstream = TwoLists(page=2)
    upstream.create("a", t=101)
    for name, at in (("w", 102), ("x", 103), ("y", 110)):
        upstream.delete(name, at=at)
    upstream.before[3] = lambda: upstream.create("b", t=105)  # the deletions' 2nd page
    got = feed(upstream, (101,))
    assert [(t, i) for t, i, _ in got] == [
        (101, "a"),
        (102, "w"),
        (103, "x"),
        (105, "b"),
        (110, "y"),
    ]
