"""Sesam protocol conformance: every fork keeps this module unchanged and runs it.

It checks a running connector against the rules Sesam's pipes depend on (the JSON pull
protocol of a ``json`` source, the JSON push protocol of a ``json`` sink). A fork points it
at its connector and upstream in one place: the ``conformance_target`` fixture in
``service/tests/conftest.py``, which answers a ``ConformanceTarget`` (``kit.py`` beside
this file: the connector's ``url``, the ``collection``, an ``upstream`` driver that
implements ``ConformanceUpstream``, and ``skips``, ``{"test_name": "why this fork skips
it"}``; a skip without a reason is an error). ``conftest.py`` beside this file makes the
fixtures the checks use from it: ``conformance_connector``, ``conformance_upstream``,
``conformance_skips``. The target's ``transform`` names an HTTP transform
(``POST /transform/<name>``) that takes the collection's feed entities, one entity out for
each in (a fork without one skips the transform checks, saying so).

The loss checks end with Sesam's dataset (what a pipe holds after its paged runs) equal to
the upstream's live records: a record changed between two pages of a run, one written in
the instant the feed has read, a tie across page boundaries, a delete between runs. They
drive the upstream through the optional hooks ``change``, ``change_after_pages`` and
``coarse_clock``; a driver without one says why (``NotSupported``), and the check is
skipped with that reason. So does the credentials check: ``expire_tokens`` invalidates
every access token the upstream has issued, and the connector must get a new one.

A fork adds its own checks in another module; run them all with
``python -m service.tools.dev test service/tests/conformance``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from service.tests.conformance.kit import NotSupported
from service.tools.sesam_client import Paging
from service.tools.sesam_client import Sequence
from service.tools.sesam_client import SesamClient

TIMEOUT = 120
SELF_CHECK = "test_every_skip_names_a_check_of_this_suite_and_says_why"


@pytest.fixture(autouse=True)
def skipped_only_with_a_reason(request: pytest.FixtureRequest) -> None:
    """A fork skips a check by naming it in ``conformance_skips`` and saying why."""
    try:
        skips = request.getfixturevalue("conformance_skips")
    except pytest.FixtureLookupError:
        return
    name = request.node.originalname
    if name in skips and name != SELF_CHECK:
        reason = skips[name]
        if not isinstance(reason, str) or not reason.strip():
            pytest.fail(
                f"conformance_skips[{name!r}] has no reason: say why this fork skips it",
                pytrace=False,
            )
        pytest.skip(f"skipped by this fork: {reason}")


class Client:
    """Sesam's side of the conversation: GETs like a json source, POSTs like a json sink."""

    def __init__(self, connector: Any) -> None:
        self.url = f"{connector.url.rstrip('/')}/{connector.collection}"
        self.sesam = SesamClient(self.url, auth=getattr(connector, "auth", None), timeout=TIMEOUT)
        self.http = self.sesam.http

    def get(self, **params: Any) -> requests.Response:
        return self.sesam.get(params)

    def pull(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get(**params)
        assert response.status_code == 200, (params, response.status_code, response.text[:500])
        assert response.headers.get("Content-Type", "").startswith("application/json")
        entities = response.json()
        assert isinstance(entities, list), f"the feed answered a JSON {type(entities).__name__}"
        return entities

    def raw(self) -> tuple[int, bytes]:
        """Status and body as Sesam would read them, cut off or not."""
        body = b""
        with self.sesam.get(stream=True) as response:
            try:
                for chunk in response.iter_content(chunk_size=None):
                    body += chunk
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                pass
            return response.status_code, body

    def post(self, body: Any, raw: bytes | None = None, **params: Any) -> requests.Response:
        return self.sesam.post(body, params, raw=raw)


@pytest.fixture
def sesam(conformance_connector: Any) -> Iterator[Client]:
    client = Client(conformance_connector)
    yield client
    client.http.close()


def paged(sesam: Client, page_size: int) -> tuple[list[dict[str, Any]], int]:
    """Sesam's paging: limit=page_size and since=<last _updated> until an empty page."""

    def page(params: dict[str, str]) -> list[dict[str, Any]]:
        got = sesam.pull(**params)
        assert len(got) <= page_size
        return got

    paging = Paging(page_size, max_requests=100_000)
    got = [entity for entities in paging.pages(page) for entity in entities]
    return got, paging.requests


def ids(entities: list[dict[str, Any]]) -> list[str]:
    return [e["_id"] for e in entities]


# --- the feed: Sesam's JSON pull protocol ------------------------------------------------


def test_the_feed_is_a_json_array_of_objects_with_unique_string_ids(sesam, conformance_upstream):
    conformance_upstream.seed(60, 20)
    entities = sesam.pull()
    assert all(isinstance(e, dict) for e in entities)
    assert all(isinstance(e.get("_id"), str) and e["_id"] for e in entities)
    assert len(set(ids(entities))) == len(entities) == 60


def test_updated_is_unique_and_strictly_increasing_as_a_string(sesam, conformance_upstream):
    conformance_upstream.seed(60, 40)
    entities = sesam.pull()
    tokens = [e.get("_updated") for e in entities]
    assert all(isinstance(t, str) for t in tokens), "_updated must be a string to sort as one"
    assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False)), (
        "the feed must be in strictly ascending _updated order (is_since_comparable)"
    )


def test_since_from_any_entity_resumes_exactly(sesam, conformance_upstream):
    conformance_upstream.seed(40, 30)
    full = sesam.pull()
    for cut, entity in enumerate(full):
        rest = sesam.pull(since=entity["_updated"])
        assert ids(rest) == ids(full[cut + 1 :]), f"since the entity at {cut}"


@pytest.mark.parametrize("page_size", [1, 7, 100, 1000])
def test_sesam_paging_reproduces_a_full_pull(sesam, conformance_upstream, page_size):
    conformance_upstream.seed(150, 120)
    full = sesam.pull()
    got, made = paged(sesam, page_size)
    assert ids(got) == ids(full)
    assert got == full
    assert made == -(-len(full) // page_size) + 1  # the pages, then the empty one


def test_limit_is_honoured(sesam, conformance_upstream):
    conformance_upstream.seed(30, 20)
    full = sesam.pull()
    for limit in (1, 5, 29, 30, 500):
        assert ids(sesam.pull(limit=limit)) == ids(full[:limit]), f"limit={limit}"
    since = full[2]["_updated"]
    assert ids(sesam.pull(since=since, limit=3)) == ids(full[3:6])


def test_a_deleted_record_arrives_as_a_tombstone(
    sesam, conformance_upstream, conformance_connector
):
    conformance_upstream.seed(10, 4)
    full = sesam.pull()
    since = full[-1]["_updated"]  # what a pipe keeps after its run
    victim = full[4]["_id"]
    conformance_upstream.delete(victim)
    # A settle window holds the tombstone back for a while: wait for it, with a deadline.
    changes = eventually(
        lambda: sesam.pull(since=since), bool, settle_deadline(conformance_connector)
    )
    assert [(e["_id"], e.get("_deleted")) for e in changes] == [(victim, True)]
    assert changes[0]["_updated"] > since
    live = [e["_id"] for e in sesam.pull() if e.get("_deleted") is not True]
    assert victim not in live and len(live) == 9


def test_an_upstream_failure_before_the_first_byte_is_a_non_2xx(sesam, conformance_upstream):
    conformance_upstream.seed(10, 4)
    conformance_upstream.break_before_first_page()
    try:
        response = sesam.get()
    finally:
        conformance_upstream.heal()
    assert not 200 <= response.status_code < 300, "Sesam would take this answer as the truth"
    assert isinstance(response.json(), dict), "the error body should be a JSON object"


def test_an_upstream_failure_after_the_first_byte_gives_a_body_that_does_not_parse(
    sesam, conformance_upstream
):
    size = 3 * conformance_upstream.page_size
    conformance_upstream.seed(size, size // 3)
    conformance_upstream.break_after_first_page()
    try:
        status, body = sesam.raw()
    finally:
        conformance_upstream.heal()
    if 200 <= status < 300:
        with pytest.raises(ValueError):
            json.loads(body)  # a valid array here would be a truncated feed Sesam believes


def test_the_connector_reads_upstream_pages_no_larger_than_the_drivers_page_size(
    sesam, conformance_upstream
):
    """The loss checks seed a few pages' worth of records and change one while the
    connector is between two upstream pages. Were its pages larger than the driver's
    ``page_size`` says, every seed would fit in one page and those checks would test
    nothing. One record more than a page, the upstream broken after its first page: the
    pull must not come out whole."""
    size = conformance_upstream.page_size
    conformance_upstream.seed(size + 1, 0)
    conformance_upstream.break_after_first_page()
    try:
        status, body = sesam.raw()
    finally:
        conformance_upstream.heal()
    whole = False
    if 200 <= status < 300:
        try:
            whole = len(json.loads(body)) == size + 1
        except ValueError:
            whole = False
    assert not whole, (
        f"{size + 1} records came through in one upstream page: the connector's upstream "
        f"page size is larger than the driver's page_size ({size}); make them equal, or the "
        "loss checks cannot put a change between two pages"
    )


# --- loss: Sesam's dataset ends equal to the upstream --------------------------------------


class Dataset:
    """What a Sesam pipe holds after its runs of a paged ``json`` source: entities by
    ``_id``, the last one wins, ``_deleted`` removes. A run without ``since`` is a full
    run: what it did not deliver is gone. Later runs go on from the last ``_updated``."""

    def __init__(self, sesam: Client, page_size: int) -> None:
        self.sesam = sesam
        self.page_size = page_size
        self.since: str | None = None
        self.entities: dict[str, dict[str, Any]] = {}

    def run(self) -> list[dict[str, Any]]:
        """One run, paged as Sesam pages; what it delivered, in order."""
        paging = Paging(self.page_size, self.since, max_requests=100_000)
        got = [e for page in paging.pages(lambda params: self.sesam.pull(**params)) for e in page]
        if self.since is None:
            self.entities = {}
        for entity in got:
            if entity.get("_deleted") is True:
                self.entities.pop(entity["_id"], None)
            else:
                self.entities[entity["_id"]] = entity
        self.since = paging.since
        return got


def differences(dataset: Dataset, upstream: Any) -> list[str]:
    """How Sesam's dataset differs from the upstream's live records (none: equal)."""
    live = upstream.written()
    held = dataset.entities
    problems = [f"{i!r}: live upstream, not in Sesam (lost)" for i in sorted(set(live) - set(held))]
    problems += [f"{i!r}: in Sesam, not live upstream" for i in sorted(set(held) - set(live))]
    for record_id in sorted(set(live) & set(held)):
        entity = held[record_id]
        stale = sorted(k for k, v in live[record_id].items() if k not in entity or entity[k] != v)
        if stale:
            problems.append(f"{record_id!r}: Sesam holds an older version (fields {stale})")
    return problems


def settle_deadline(target: Any) -> float:
    """Seconds to wait for what a settle window reads again, comfortably above it."""
    return 2 * float(getattr(target, "settle_seconds", 0) or 0) + 10


def eventually(fetch: Callable[[], Any], done: Callable[[Any], bool], seconds: float) -> Any:
    """``fetch()`` until ``done`` says its answer is the one, or the deadline passes (then
    the last answer, for the check's assertion to show)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = fetch()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.25)


def converges(dataset: Dataset, upstream: Any, target: Any) -> None:
    """Sesam's runs, again and again, until its dataset equals the upstream's live
    records; a record still missing or stale after the deadline was lost."""
    problems = eventually(
        lambda: (dataset.run(), differences(dataset, upstream))[1],
        lambda found: not found,
        settle_deadline(target),
    )
    assert problems == [], (
        f"after Sesam's runs its dataset differs from the upstream ({len(problems)}): "
        + "; ".join(problems[:10])
    )


def hook(upstream: Any, name: str) -> Callable[..., Any]:
    """An optional hook of the driver; the check is skipped, with the reason, without it."""
    method = getattr(upstream, name, None)
    if method is None:
        pytest.skip(f"the upstream driver has no {name}(), which this check needs")

    def call(*args: Any) -> Any:
        try:
            return method(*args)
        except NotSupported as reason:
            pytest.skip(f"the upstream driver cannot {name}(): {reason}")

    return call


def test_a_record_changed_between_two_pages_of_a_run_is_not_lost(
    sesam, conformance_upstream, conformance_connector
):
    """A change moves a record to the end of the order; a walk by page number or offset
    then skips the record that moved up across the page boundary it has passed."""
    size = conformance_upstream.page_size
    conformance_upstream.seed(3 * size, 0)
    order = ids(sesam.pull())
    moved = order[size // 2]  # on the first upstream page
    before = conformance_upstream.written()[moved]
    hook(conformance_upstream, "change_after_pages")(moved, 1)
    converges(Dataset(sesam, 4 * size), conformance_upstream, conformance_connector)
    assert conformance_upstream.written()[moved] != before, "the upstream changed nothing"


def test_a_tie_of_many_records_across_page_boundaries_is_delivered_whole(
    sesam, conformance_upstream, conformance_connector
):
    """Two pages' worth of records share one time, and one of them changes while the run
    is inside the tie; then Sesam pages through the tie with pages smaller than it."""
    size = conformance_upstream.page_size
    conformance_upstream.seed(3 * size, 2 * size)
    order = ids(sesam.pull())
    moved = order[size - 1]  # the first upstream page's last, inside the tie
    before = conformance_upstream.written()[moved]
    hook(conformance_upstream, "change_after_pages")(moved, 1)
    converges(Dataset(sesam, 4 * size), conformance_upstream, conformance_connector)
    assert conformance_upstream.written()[moved] != before, "the upstream changed nothing"
    converges(Dataset(sesam, max(1, size // 3)), conformance_upstream, conformance_connector)


def test_a_change_inside_a_tie_between_two_pages_of_one_query_loses_nothing(
    sesam, conformance_upstream, conformance_connector
):
    """Four pages' worth of records share one time (a bulk import); the first of them
    changes once the upstream has served two list pages. A walk is then inside the tie,
    between two pages of one query: one that re-anchors on the time has asked again after
    its first page (the filter cannot move past the tie), one that does not is on its third
    page. The change moves the record to the end, and every record after it up by one: a
    cursor or next link that is an offset in disguise (``$skip``, a page number handed on
    as a cursor) then skips the record that crossed the boundary, lost for good, while a
    change after the first page (the checks above) does not show it."""
    size = conformance_upstream.page_size
    conformance_upstream.seed(4 * size, 4 * size)
    moved = ids(sesam.pull())[0]
    before = conformance_upstream.written()[moved]
    hook(conformance_upstream, "change_after_pages")(moved, 2)
    converges(Dataset(sesam, 8 * size), conformance_upstream, conformance_connector)
    assert conformance_upstream.written()[moved] != before, "the upstream changed nothing"


def test_a_record_written_in_the_instant_already_read_is_delivered(
    sesam, conformance_upstream, conformance_connector
):
    """The race of a coarse clock: the feed reads a record, then one with a smaller id is
    written with the same time. Sesam's ``since`` is already past it, unless the feed
    reads the instant that was not over again once it is (the settle window: the records
    of that instant came with provisional tokens)."""
    conformance_upstream.seed(10, 0)
    dataset = Dataset(sesam, 1000)
    dataset.run()
    first, second = list(dataset.entities)[:2]
    coarse_clock = hook(conformance_upstream, "coarse_clock")
    change = hook(conformance_upstream, "change")
    try:
        coarse_clock()  # every write from here on has one time
        change(first)
        change(second)
        read = [e["_id"] for e in dataset.run() if e["_id"] in (first, second)]
        late = read[0] if read else first  # of the two, the one first in feed order
        change(late)  # written in the instant the feed has read, behind the other
        converges(dataset, conformance_upstream, conformance_connector)
    finally:
        conformance_upstream.heal()


def test_a_record_deleted_between_runs_is_deleted_in_sesam(
    sesam, conformance_upstream, conformance_connector
):
    conformance_upstream.seed(20, 8)
    dataset = Dataset(sesam, 7)
    dataset.run()
    assert differences(dataset, conformance_upstream) == []
    order = list(dataset.entities)
    for victim in (order[0], order[10], order[-1]):  # the first, one in the tie, the last
        conformance_upstream.delete(victim)
    converges(dataset, conformance_upstream, conformance_connector)
    assert len(dataset.entities) == 17


# --- upstream credentials -------------------------------------------------------------------


def test_an_upstream_token_that_expires_is_replaced(sesam, conformance_upstream):
    """Access tokens expire (OAuth2's, minutes to an hour), and an upstream may revoke them
    sooner. A fork that fetched its token once and never again passed every other check
    against a fake whose tokens lived an hour, and failed in production when its first
    token did. The driver's ``expire_tokens`` makes every token the upstream has issued
    invalid; the feed and the sink must go on, with a new one. A connector whose
    credentials never expire (a static key or token) skips this, saying so."""
    expire = hook(conformance_upstream, "expire_tokens")
    conformance_upstream.seed(10, 4)
    before = ids(sesam.pull())  # the connector holds a token now
    expire()  # skipped here, with the driver's reason, if its upstream's tokens never expire
    response = sesam.get()
    assert response.status_code == 200, (
        f"after the upstream's tokens expired the feed answered {response.status_code}: "
        f"{response.text[:300]}"
    )
    assert ids(response.json()) == before
    expire()
    batch = [conformance_upstream.entity(n) for n in range(3)]
    written = incremental(sesam, batch)
    assert 200 <= written.status_code < 300, (
        f"after the upstream's tokens expired the sink answered {written.status_code}: "
        f"{written.text[:300]}"
    )
    assert set(ids(batch)) <= set(conformance_upstream.written())


# --- the sink: Sesam's JSON push protocol ------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


class FullSync:
    """A whole full sync as Sesam sends it, the final empty batch included."""

    def __init__(self, sesam: Client, batches: list[list[dict[str, Any]]]) -> None:
        sequence = Sequence(full=True, new_id=new_id)
        self.sequence_id = sequence.sequence_id
        self.answers: list[requests.Response] = []
        batches = [*batches, []]
        for number, batch in enumerate(batches):
            params = sequence.params(last=number == len(batches) - 1)
            self.answers.append(sesam.post(batch, **params))
        self.last_request_id = sequence.previous

    def statuses(self) -> list[int]:
        return [answer.status_code for answer in self.answers]


def incremental(sesam: Client, batch: Any, raw: bytes | None = None) -> requests.Response:
    return sesam.post(batch, raw, **Sequence(full=False, new_id=new_id).params(last=False))


def test_the_sink_writes_every_entity_of_a_batch(sesam, conformance_upstream):
    batch = [conformance_upstream.entity(n) for n in range(5)]
    response = incremental(sesam, batch)
    assert 200 <= response.status_code < 300, response.text[:500]
    assert set(ids(batch)) <= set(conformance_upstream.written())


def test_the_sink_deletes_on_deleted_true(sesam, conformance_upstream):
    batch = [conformance_upstream.entity(n) for n in range(3)]
    assert incremental(sesam, batch).ok
    gone = {"_id": batch[1]["_id"], "_deleted": True}
    response = incremental(sesam, [gone])
    assert 200 <= response.status_code < 300, response.text[:500]
    written = conformance_upstream.written()
    assert batch[1]["_id"] not in written and batch[0]["_id"] in written


BAD_BATCHES = {
    "an entity without _id": lambda good: [*good, {"name": "no id"}],
    "an _id that is not a string": lambda good: [*good, {"_id": 42}],
    "an entity that is not an object": lambda good: [*good, ["not", "an", "object"]],
    "a body that is one entity, not an array": lambda good: good[0],
}


@pytest.mark.parametrize("bad", sorted(BAD_BATCHES))
def test_the_sink_validates_the_whole_batch_before_writing(sesam, conformance_upstream, bad):
    good = [conformance_upstream.entity(n) for n in range(4)]
    before = conformance_upstream.writes()
    response = incremental(sesam, BAD_BATCHES[bad](good))
    assert 400 <= response.status_code < 500, (bad, response.status_code)
    assert "error" in response.json()
    assert conformance_upstream.writes() == before, f"{bad}: something was written"
    assert not set(ids(good)) & set(conformance_upstream.written())


def test_the_sink_refuses_a_body_that_is_not_json_and_writes_nothing(sesam, conformance_upstream):
    before = conformance_upstream.writes()
    good = json.dumps([conformance_upstream.entity(0)]).encode()
    response = incremental(sesam, None, raw=good[:-5])
    assert 400 <= response.status_code < 500
    assert conformance_upstream.writes() == before


def test_the_sink_is_idempotent_when_a_batch_is_sent_twice(sesam, conformance_upstream):
    batch = [conformance_upstream.entity(n) for n in range(5)]
    batch.append({"_id": batch[2]["_id"], "_deleted": True})
    params = Sequence(full=False, new_id=new_id).params(last=False)
    first = sesam.post(batch, **params)
    assert 200 <= first.status_code < 300, first.text[:500]
    once = conformance_upstream.written()
    again = sesam.post(batch, **params)  # Sesam retries a batch it thinks failed
    assert 200 <= again.status_code < 300, again.text[:500]
    assert conformance_upstream.written() == once
    assert batch[2]["_id"] not in once


def test_a_full_sync_retried_request_is_accepted_and_changes_nothing(sesam, conformance_upstream):
    sync = Sequence(full=True, new_id=new_id)
    batch = [conformance_upstream.entity(n) for n in range(3)]
    params = sync.params(last=False)
    assert sesam.post(batch, **params).ok
    once = conformance_upstream.written()
    retry = sesam.post(batch, **params)
    assert 200 <= retry.status_code < 300, retry.text[:500]
    assert conformance_upstream.written() == once
    last = sesam.post([], **sync.params(last=True))
    assert 200 <= last.status_code < 300, last.text[:500]


def test_a_full_sync_in_batches_ending_with_an_empty_one_is_accepted(sesam, conformance_upstream):
    entities = [conformance_upstream.entity(n) for n in range(7)]
    sync = FullSync(sesam, [entities[:3], entities[3:6], entities[6:]])
    assert [s // 100 for s in sync.statuses()] == [2, 2, 2, 2], sync.statuses()
    assert set(ids(entities)) <= set(conformance_upstream.written())


def started(sesam: Client, conformance_upstream: Any) -> tuple[str, str]:
    """A full sync with its first batch accepted: (sequence_id, request_id)."""
    params = Sequence(full=True, new_id=new_id).params(last=False)
    response = sesam.post([conformance_upstream.entity(0)], **params)
    assert 200 <= response.status_code < 300, response.text[:500]
    return params["sequence_id"], params["request_id"]


def conflict(sesam: Client, conformance_upstream: Any, **params: str) -> None:
    """The request is answered 409 and writes nothing."""
    before = conformance_upstream.writes()
    response = sesam.post([conformance_upstream.entity(1)], **params)
    assert response.status_code == 409, (params, response.status_code, response.text[:500])
    assert conformance_upstream.writes() == before
    assert conformance_upstream.entity(1)["_id"] not in conformance_upstream.written()


def test_a_full_sync_with_the_wrong_previous_request_id_is_a_409(sesam, conformance_upstream):
    sequence, _ = started(sesam, conformance_upstream)
    conflict(
        sesam,
        conformance_upstream,
        sequence_id=sequence,
        is_full="true",
        request_id=str(uuid.uuid4()),
        previous_request_id=str(uuid.uuid4()),
    )


def test_is_first_inside_an_active_sequence_is_a_409(sesam, conformance_upstream):
    sequence, _ = started(sesam, conformance_upstream)
    conflict(
        sesam,
        conformance_upstream,
        sequence_id=sequence,
        is_full="true",
        request_id=str(uuid.uuid4()),
        is_first="true",
    )


def test_continuing_a_sequence_that_is_not_active_is_a_409(sesam, conformance_upstream):
    _, request_id = started(sesam, conformance_upstream)
    conflict(
        sesam,
        conformance_upstream,
        sequence_id=str(uuid.uuid4()),
        is_full="true",
        request_id=str(uuid.uuid4()),
        previous_request_id=request_id,
    )


def test_continuing_a_sequence_that_has_ended_is_a_409(sesam, conformance_upstream):
    sync = FullSync(sesam, [[conformance_upstream.entity(0)]])
    assert [s // 100 for s in sync.statuses()] == [2, 2], sync.statuses()
    conflict(
        sesam,
        conformance_upstream,
        sequence_id=sync.sequence_id,
        is_full="true",
        request_id=str(uuid.uuid4()),
        previous_request_id=sync.last_request_id,
    )


def test_is_full_changing_within_a_sequence_is_a_409(sesam, conformance_upstream):
    sequence, request_id = started(sesam, conformance_upstream)
    conflict(
        sesam,
        conformance_upstream,
        sequence_id=sequence,
        is_full="false",
        request_id=str(uuid.uuid4()),
        previous_request_id=request_id,
    )


# --- the HTTP transform: a pipe's {"type": "http"} transform -----------------------------


def transformed(sesam: Client, conformance_connector: Any, body: Any) -> requests.Response:
    name = getattr(conformance_connector, "transform", None)
    if not name:
        pytest.fail(
            "conformance_connector.transform names no transform: name one, or skip the "
            "transform checks in conformance_skips saying why",
            pytrace=False,
        )
    base = conformance_connector.url.rstrip("/")
    return sesam.http.post(
        f"{base}/transform/{name}",
        data=json.dumps(body).encode("utf-8"),
        timeout=TIMEOUT,
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )


def test_the_transform_answers_a_batch_in_order_keeping_reserved_fields(
    sesam, conformance_upstream, conformance_connector
):
    conformance_upstream.seed(100, 20)
    batch = sesam.pull()  # Sesam's default batch_size: 100
    for number, entity in enumerate(batch):
        entity["_ts"] = 1_700_000_000_000_000 + number  # what Sesam's pipes add
        entity["_hash"] = f"hash-{number}"
    response = transformed(sesam, conformance_connector, batch)
    assert response.status_code == 200, response.text[:500]
    assert response.headers.get("Content-Type", "").startswith("application/json")
    out = response.json()
    assert isinstance(out, list) and ids(out) == ids(batch), "the batch's order is Sesam's"
    for sent, got in zip(batch, out, strict=True):
        reserved = {k: v for k, v in sent.items() if k.startswith("_")}
        assert {k: got.get(k) for k in reserved} == reserved, sent["_id"]


def test_the_transform_answers_an_empty_batch_with_an_empty_array(sesam, conformance_connector):
    response = transformed(sesam, conformance_connector, [])
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize("bad", sorted(BAD_BATCHES))
def test_the_transform_refuses_a_bad_batch_with_a_json_4xx(
    sesam, conformance_upstream, conformance_connector, bad
):
    good = [conformance_upstream.entity(n) for n in range(3)]
    before = conformance_upstream.writes()
    response = transformed(sesam, conformance_connector, BAD_BATCHES[bad](good))
    assert 400 <= response.status_code < 500, (bad, response.status_code)
    assert "error" in response.json()
    assert conformance_upstream.writes() == before


def test_an_upstream_failure_in_the_transform_is_a_non_2xx(
    sesam, conformance_upstream, conformance_connector
):
    conformance_upstream.seed(10, 4)
    batch = sesam.pull()
    conformance_upstream.break_before_first_page()
    try:
        response = transformed(sesam, conformance_connector, batch)
    finally:
        conformance_upstream.heal()
    assert not 200 <= response.status_code < 300, "Sesam would take this answer as the truth"
    assert isinstance(response.json(), dict), "the error body should be a JSON object"


# --- the suite itself ---------------------------------------------------------------------


def test_every_skip_names_a_check_of_this_suite_and_says_why(request):
    try:
        skips = request.getfixturevalue("conformance_skips")
    except pytest.FixtureLookupError:
        skips = {}
    checks = {name for name in globals() if name.startswith("test_")}
    unknown = sorted(set(skips) - checks)
    assert unknown == [], f"conformance_skips names checks this suite does not have: {unknown}"
    assert SELF_CHECK not in skips, "this check cannot be skipped"
    silent = sorted(
        name for name, reason in skips.items() if not isinstance(reason, str) or not reason.strip()
    )
    assert silent == [], f"conformance_skips without a reason: {silent}"
