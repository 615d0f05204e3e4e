"""Where the paging blocks find the list, the cursor, the next link and the count.

An OData API answers ``{"value": [...], "@odata.nextLink": "...", "@odata.count": 120}``:
a key with a dot in it. Read as a dotted path, ``"@odata.nextLink"`` finds nothing, which a
walk takes for "no next page": the first page would be the whole run, and on a full run
Sesam would delete every record after it. A key is therefore taken as it is when the answer
holds it, and a list of keys or a function says exactly where to look.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urlsplit

import pytest

from service.framework.paging import CursorPaging
from service.framework.paging import NextUrlPaging
from service.framework.paging import OffsetPaging
from service.framework.paging import PageNumberPaging
from service.framework.paging import dig

BASE = "http://erp.example/odata/Orders"
RECORDS = [{"id": f"o-{n:02d}", "t": n} for n in range(10)]


class Response:
    def __init__(self, url: str) -> None:
        self.url = url
        self.links: dict[str, Any] = {}


class ODataUpstream:
    """Pages of three, OData-shaped: ``value``, ``@odata.nextLink`` (absent on the last
    page), ``@odata.count``; ``$skip``/``$top`` as an offset walk asks for them."""

    def __init__(self) -> None:
        self.asked: list[dict[str, str]] = []

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_json_response(url, params)[0]

    def get_json_response(self, url: str, params: dict[str, Any] | None = None) -> Any:
        query = {**dict(parse_qsl(urlsplit(url).query)), **(params or {})}
        self.asked.append(query)
        skip, top = int(query.get("$skip", 0)), int(query.get("$top", 3))
        body: dict[str, Any] = {
            "@odata.context": "$metadata#Orders",
            "@odata.count": len(RECORDS),
            "value": RECORDS[skip : skip + top],
            "paging": {"pages": -(-len(RECORDS) // top)},
            "meta": {"next.cursor": str(skip + top) if skip + top < len(RECORDS) else None},
        }
        if skip + top < len(RECORDS):
            body["@odata.nextLink"] = f"{BASE}?" + urlencode({"$skip": skip + top, "$top": top})
        return body, Response(url)


def position(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["t"], record["id"]


def walk(paging: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    upstream = ODataUpstream()
    return [record for page in paging.pages(upstream, BASE, params or {}) for record in page]


@pytest.mark.parametrize(
    "next_key",
    [
        "@odata.nextLink",  # as the upstream's documentation spells it
        ["@odata.nextLink"],  # a literal path
        lambda body: body.get("@odata.nextLink"),  # a function of the answer
    ],
    ids=["the key as it is", "a list of keys", "a function"],
)
def test_an_odata_next_link_is_followed_to_the_last_page(next_key):
    """The bug a fork hit: ``next_key="@odata.nextLink"`` found nothing, and every run
    ended after its first page."""
    paging = NextUrlPaging(position=position, records="value", next_key=next_key)
    assert walk(paging) == RECORDS


def test_a_list_path_takes_each_key_literally_at_its_level():
    paging = CursorPaging(
        position=position,
        records=["value"],
        cursor_key=["meta", "next.cursor"],
        cursor_param="$skip",
    )
    assert walk(paging, {"$top": 3}) == RECORDS


@pytest.mark.parametrize("total_key", ["@odata.count", ["@odata.count"]])
def test_an_offset_walk_reads_an_odata_count(total_key):
    paging = OffsetPaging(
        position=position,
        records="value",
        offset_param="$skip",
        limit_param="$top",
        total_key=total_key,
        size=3,
    )
    upstream = ODataUpstream()
    got = [record for page in paging.pages(upstream, BASE) for record in page]
    assert got == RECORDS
    # The count ends the walk: no request for the empty page after the last.
    assert [int(q["$skip"]) for q in upstream.asked if q["$top"] == 3] == [0, 3, 6, 9]


def test_a_page_count_can_be_read_by_a_function():
    paging = PageNumberPaging(
        position=position,
        records="value",
        page_param="page",
        size_param="$top",
        total_pages_key=lambda body: body["paging"]["pages"],
        size=3,
    )

    class ByPage(ODataUpstream):
        def get_json_response(self, url, params=None):
            params = dict(params or {})
            page, top = int(params.pop("page")), int(params["$top"])
            return super().get_json_response(url, {**params, "$skip": (page - 1) * top})

    got = [record for page in paging.pages(ByPage(), BASE) for record in page]
    assert got == RECORDS


def test_dotted_paths_still_work():
    body = {"links": {"next": "/p2"}, "result": {"items": [1]}}
    assert dig(body, "links.next") == "/p2"
    assert dig(body, "result.items") == [1]
    assert dig(body, "links.missing") is None
    assert dig(body, None) is body


def test_a_key_that_holds_its_dots_comes_before_the_path_of_the_same_text():
    body = {"a.b": "literal", "a": {"b": "path"}}
    assert dig(body, "a.b") == "literal"
    assert dig(body, ["a", "b"]) == "path"
    assert dig(body, ["a.b"]) == "literal"


def test_a_list_path_through_a_value_that_is_not_an_object_finds_nothing():
    assert dig({"a": [1, 2]}, ["a", "b"]) is None
    assert dig({"a": "text"}, "a.b") is None


@pytest.mark.parametrize("where", [5, [], ["value", 3], [""], {"value": 1}])
def test_a_where_the_blocks_cannot_follow_is_refused_when_the_block_is_made(where):
    with pytest.raises(TypeError, match="records must be a dotted path"):
        CursorPaging(position=position, records=where)


@pytest.mark.parametrize(
    ("block", "name"),
    [
        (lambda w: CursorPaging(position=position, cursor_key=w), "cursor_key"),
        (lambda w: NextUrlPaging(position=position, next_key=w), "next_key"),
        (lambda w: OffsetPaging(position=position, total_key=w), "total_key"),
        (lambda w: PageNumberPaging(position=position, total_pages_key=w), "total_pages_key"),
    ],
)
def test_every_key_of_every_block_is_checked(block, name):
    with pytest.raises(TypeError, match=f"{name} must be"):
        block(42)
