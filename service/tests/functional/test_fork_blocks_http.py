"""What a fork to an OData-style ERP fought, each now a block or a setting, on the wire.

The upstream is the hostile upstream (``service/tools/hostile_upstream``, a Records API
on loopback whose rules answer what a test asks, and whose log shows every request as it
arrived): the framework's client, paging blocks and OAuth2 block talk real HTTP to it.

- ``@odata.nextLink`` as a paging block's ``next_key``;
- changes and deletions in two lists, merged (``MergedPaging``);
- a key path (``key_path``) and a header on one request (``If-Match: *``);
- a 429 on POST or PATCH waited out and sent again, a 502 or a dropped connection not
  (the write may have been done); a 429 or 503 from the OAuth2 token endpoint waited out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.register_assert_rewrite("service.tests.hostile_kit")
pytest_plugins = ["service.tests.hostile_kit"]  # its fixtures: hostile_server, hostile

from service.framework.paging import CursorPaging  # noqa: E402
from service.framework.paging import MergedPaging  # noqa: E402
from service.framework.paging import NextUrlPaging  # noqa: E402
from service.framework.positions import TEXT  # noqa: E402
from service.framework.positions import TIMESTAMP  # noqa: E402
from service.framework.positions import Positions  # noqa: E402
from service.framework.upstream import UpstreamClient  # noqa: E402
from service.framework.upstream import UpstreamError  # noqa: E402
from service.framework.upstream import key_path  # noqa: E402
from service.framework.upstream import parse_json  # noqa: E402
from service.framework.upstream_auth import OAuth2ClientCredentials  # noqa: E402
from service.tests.hostile_kit import HOSTILE_CLIENT_ID  # noqa: E402
from service.tests.hostile_kit import HOSTILE_CLIENT_SECRET  # noqa: E402
from service.tests.hostile_kit import HostileUpstream  # noqa: E402
from service.tests.hostile_kit import header  # noqa: E402
from service.tests.hostile_kit import rule  # noqa: E402


def client(hostile: HostileUpstream, **options: Any) -> UpstreamClient:
    return UpstreamClient(hostile.url, hostile.token, retry_budget=5, **options)


def requests_to(hostile: HostileUpstream, method: str, path: str) -> list[dict[str, Any]]:
    return [e for e in hostile.log() if e["method"] == method and e["path"] == path]


# --- paging: @odata.nextLink ----------------------------------------------------------------


def test_an_odata_next_link_is_followed_across_pages(hostile):
    """``next_key="@odata.nextLink"`` found nothing as a dotted path: every run ended after
    its first page, and a full run handed Sesam that page as the whole truth."""
    first = [{"id": "o-1", "t": 1}, {"id": "o-2", "t": 2}]
    second = [{"id": "o-3", "t": 3}]
    hostile.set_rules(
        rule("json", method="GET", path="/Orders", query="skip=2", json={"value": second}),
        rule(
            "json",
            method="GET",
            path="/Orders",
            json={"value": first, "@odata.nextLink": f"{hostile.url}/Orders?skip=2"},
        ),
    )
    paging = NextUrlPaging(
        position=lambda r: (r["t"], r["id"]), records="value", next_key="@odata.nextLink"
    )
    upstream = client(hostile)
    pages = list(paging.pages(upstream, upstream.url("Orders"), {"$top": 2}))
    assert pages == [first, second]
    assert len(requests_to(hostile, "GET", "/Orders")) == 2


# --- MergedPaging: two lists, one feed ------------------------------------------------------

POSITIONS = Positions((TIMESTAMP, TEXT))


def at(second: int) -> str:
    return f"2026-05-01T10:00:{second:02d}.000000Z"


def merged_orders() -> MergedPaging:
    def since(anchor: Any) -> dict[str, str]:
        return {"updated_since": anchor.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    def position(record: dict[str, Any]) -> tuple[Any, ...]:
        return record["updated_at"], record["id"]

    return MergedPaging(
        changes=CursorPaging(position=position, since_params=since, codec=POSITIONS),
        deletions=CursorPaging(position=position, since_params=since, codec=POSITIONS),
        tombstone=lambda entry: {**entry, "deleted": True},
    )


def test_changes_and_deletions_from_two_lists_arrive_as_one_feed(hostile):
    """Pages of two, a time shared across pages and lists, and a record (o-2) deleted and
    created again in one instant: it arrives once, live."""
    hostile.seed(
        "orders",
        [
            {"id": "o-1", "updated_at": at(1)},
            {"id": "o-2", "updated_at": at(5)},  # created again at 5
            {"id": "o-3", "updated_at": at(5)},
            {"id": "o-4", "updated_at": at(5)},
            {"id": "o-6", "updated_at": at(9)},
        ],
    )
    hostile.seed(
        "orders-deleted",
        [
            {"id": "o-0", "updated_at": at(2)},
            {"id": "o-2", "updated_at": at(5)},  # deleted at 5
            {"id": "o-5", "updated_at": at(5)},
            {"id": "o-9", "updated_at": at(7)},
        ],
    )
    upstream = client(hostile)
    pages = merged_orders().pages(
        upstream,
        upstream.url("orders"),
        upstream.url("orders-deleted"),
        {"limit": 2},
        {"limit": 2},
        since=POSITIONS.decode(at(1)),
    )
    got = [(r["updated_at"], r["id"], r.get("deleted", False)) for page in pages for r in page]
    assert got == [
        (at(1), "o-1", False),
        (at(2), "o-0", True),
        (at(5), "o-2", False),
        (at(5), "o-3", False),
        (at(5), "o-4", False),
        (at(5), "o-5", True),
        (at(7), "o-9", True),
        (at(9), "o-6", False),
    ]
    tokens = [POSITIONS.encode((t, i)) for t, i, _ in got]
    assert tokens == sorted(set(tokens)), "the feed's order: unique, ascending _updated"


def test_a_deletion_list_that_loops_stops_the_merged_run(hostile):
    hostile.seed("orders", [{"id": "o-1", "updated_at": at(1)}])
    hostile.set_rules(
        rule(
            "json",
            method="GET",
            path="/orders-deleted",
            json={"data": [{"id": "o-0", "updated_at": at(2)}], "next_cursor": "again"},
        )
    )
    upstream = client(hostile)
    pages = merged_orders().pages(
        upstream,
        upstream.url("orders"),
        upstream.url("orders-deleted"),
        {"limit": 2},
        {"limit": 2},
        since=POSITIONS.decode(at(1)),
    )
    with pytest.raises(UpstreamError, match="sent the cursor 'again' again"):
        list(pages)
    assert len(requests_to(hostile, "GET", "/orders-deleted")) <= 3  # not a loop


# --- writes: a key path, a header on one request, PATCH and POST ---------------------------


def test_a_patch_goes_to_its_key_path_with_if_match_on_that_request_only(hostile):
    line = key_path("Lines", OrderNo="O'Neil SO/1", LineNo=3)
    path = "/Lines(OrderNo='O''Neil%20SO%2F1',LineNo=3)"
    hostile.set_rules(
        rule("status", method="PATCH", path=path, status=204),
        rule("json", method="GET", path=path, json={"OrderNo": "O'Neil SO/1", "LineNo": 3}),
    )
    upstream = client(hostile)
    upstream.request(
        "PATCH",
        upstream.url(line),
        json_body={"Quantity": 2},
        headers={"If-Match": "*"},
        ok=(200, 204),
    )
    assert upstream.get_json(upstream.url(line)) == {"OrderNo": "O'Neil SO/1", "LineNo": 3}
    (patch,) = requests_to(hostile, "PATCH", path)
    (get,) = requests_to(hostile, "GET", path)
    assert header(patch, "If-Match") == ["*"]
    assert header(get, "If-Match") == [], "a header given to one request went on to the next"
    assert json.loads(patch["body"]) == {"Quantity": 2}
    assert header(patch, "Authorization") == [f"Bearer {hostile.token}"]


def test_a_post_answers_its_json(hostile):
    hostile.set_rules(rule("json", method="POST", path="/Orders", status=201, json={"No": "SO-7"}))
    upstream = client(hostile)
    response = upstream.request("POST", upstream.url("Orders"), json_body={"a": 1}, ok=(201,))
    assert parse_json(response, "POST") == {"No": "SO-7"}


NOT_PROCESSED = {
    "429": {"status": 429},
    "429 with Retry-After": {"status": 429, "headers": {"Retry-After": "0"}},
    "503 with Retry-After": {"status": 503, "headers": {"Retry-After": "0"}},
}


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("refusal", sorted(NOT_PROCESSED))
def test_a_write_refused_before_it_was_processed_is_sent_again(hostile, method, refusal):
    """The fork's PATCH and POST failed on every 429: retries were for GET, PUT, DELETE and
    HEAD only. A 429, or a 503 with Retry-After, says nothing was done: safe to resend."""
    hostile.set_rules(
        rule("status", method=method, path="/Orders", times=1, **NOT_PROCESSED[refusal]),
        rule("json", method=method, path="/Orders", status=201, json={"No": "SO-7"}),
    )
    upstream = client(hostile)
    upstream.request(method, upstream.url("Orders"), json_body={"Qty": 1}, ok=(201,))
    sent = requests_to(hostile, method, "/Orders")
    assert len(sent) == 2
    assert [json.loads(e["body"]) for e in sent] == [{"Qty": 1}, {"Qty": 1}]


@pytest.mark.parametrize(
    ("method", "times_sent"), [("POST", 1), ("PATCH", 1), ("PUT", 2), ("DELETE", 2)]
)
@pytest.mark.parametrize(
    "failure",
    [{"action": "status", "status": 502}, {"action": "status", "status": 503}, {"action": "close"}],
    ids=["502", "503 without Retry-After", "dropped connection"],
)
def test_a_write_that_may_have_been_done_is_sent_again_only_if_idempotent(
    hostile, method, times_sent, failure
):
    """A 502, a bare 503 or a connection dropped after the request was sent: the upstream
    may have written. A second POST could create a second record; PUT and DELETE are the
    same twice. So POST and PATCH fail at once (Sesam retries the batch)."""
    action = failure["action"]
    params = {k: v for k, v in failure.items() if k != "action"}
    hostile.set_rules(
        rule(action, method=method, path="/Orders", times=1, **params),
        rule("json", method=method, path="/Orders", status=200, json={}),
    )
    upstream = client(hostile)
    if times_sent == 1:
        with pytest.raises(UpstreamError):
            upstream.request(method, upstream.url("Orders"), json_body={"Qty": 1})
    else:
        upstream.request(method, upstream.url("Orders"), json_body={"Qty": 1})
    assert len(requests_to(hostile, method, "/Orders")) == times_sent


# --- the OAuth2 token endpoint's 429 and 503 --------------------------------------------------


def oauth_client(hostile: HostileUpstream) -> UpstreamClient:
    auth = OAuth2ClientCredentials(
        f"{hostile.url}/oauth/token", HOSTILE_CLIENT_ID, HOSTILE_CLIENT_SECRET
    )
    return UpstreamClient(hostile.url, auth=auth, retry_budget=5)


@pytest.mark.parametrize(
    "refusal",
    [
        {"status": 429, "headers": {"Retry-After": "0"}},
        {"status": 503, "headers": {"Retry-After": "0"}},
        {"status": 503},
    ],
    ids=["429", "503 with Retry-After", "503"],
)
def test_a_busy_token_endpoint_is_waited_out(hostile, refusal):
    hostile.seed("people", [{"id": "p-1"}])
    hostile.set_rules(rule("status", method="POST", path="/oauth/token", times=1, **refusal))
    upstream = oauth_client(hostile)
    assert [r["id"] for r in upstream.get_json(upstream.url("people"))["data"]] == ["p-1"]
    assert len(requests_to(hostile, "POST", "/oauth/token")) == 2
    (read,) = requests_to(hostile, "GET", "/people")
    assert header(read, "Authorization")[0].startswith("Bearer hostile-")


def test_a_token_endpoint_that_stays_busy_fails_after_its_retries(hostile):
    hostile.set_rules(
        rule("status", method="POST", path="/oauth/token", status=429, headers={"Retry-After": "0"})
    )
    upstream = oauth_client(hostile)
    with pytest.raises(
        UpstreamError, match=r"answered 429 to POST .*/oauth/token \(asked 4 times\)"
    ):
        upstream.get_json(upstream.url("people"))
    assert len(requests_to(hostile, "POST", "/oauth/token")) == 4
    assert requests_to(hostile, "GET", "/people") == []


def test_a_retry_after_beyond_the_token_requests_bound_fails_at_once(hostile):
    hostile.set_rules(
        rule(
            "status",
            method="POST",
            path="/oauth/token",
            status=503,
            headers={"Retry-After": "3600"},
        )
    )
    upstream = oauth_client(hostile)
    with pytest.raises(UpstreamError, match=r"answered 503 .*asking again in 3600s would pass"):
        upstream.get_json(upstream.url("people"))
    assert len(requests_to(hostile, "POST", "/oauth/token")) == 1


def test_a_token_endpoint_that_refuses_the_client_is_not_asked_again(hostile):
    hostile.set_rules(
        rule(
            "json", method="POST", path="/oauth/token", status=401, json={"error": "invalid_client"}
        )
    )
    upstream = oauth_client(hostile)
    with pytest.raises(UpstreamError, match="answered 401 .*: invalid_client"):
        upstream.get_json(upstream.url("people"))
    assert len(requests_to(hostile, "POST", "/oauth/token")) == 1
