"""The upstream retry policy: which answers are retried, how long it waits, when it stops."""

from __future__ import annotations

import pytest
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError

from service.framework.upstream import RETRY_STATUSES
from service.framework.upstream import BudgetRetry
from service.framework.upstream import UpstreamClient
from service.framework.upstream import segment


def policy(**kwargs):
    settings = dict(
        total=10,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=0.5,
        backoff_jitter=0.5,
        backoff_max=30,
        raise_on_status=False,
        wait_budget=60,
    )
    settings.update(kwargs)
    return BudgetRetry(**settings)


def answer(status, retry_after=None):
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return HTTPResponse(body=b"", headers=headers, status=status, preload_content=False)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_statuses_are_retried(status):
    assert policy().is_retry("GET", status)
    assert policy().is_retry("PUT", status)
    assert policy().is_retry("DELETE", status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
def test_other_statuses_are_not_retried(status):
    assert not policy().is_retry("GET", status)


def clients_policy() -> BudgetRetry:
    """The retry policy the upstream client itself mounts."""
    client = UpstreamClient("http://records.example", "test-token")
    retry = client.session.get_adapter("http://records.example").max_retries
    assert isinstance(retry, BudgetRetry)
    return retry


@pytest.mark.parametrize("method", ["POST", "PATCH", "GET", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize(("status", "retry_after"), [(429, False), (429, True), (503, True)])
def test_an_answer_that_says_the_request_was_not_processed_is_retried_for_every_method(
    method, status, retry_after
):
    """A 429, or a 503 with Retry-After: the upstream refused the request before doing
    anything, so sending it again cannot write twice. A fork's PATCH and POST writes were
    failed by every 429 while the retries were fixed to GET, PUT, DELETE and HEAD."""
    assert clients_policy().is_retry(method, status, has_retry_after=retry_after)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(("status", "retry_after"), [(502, False), (504, True), (503, False)])
def test_a_failure_that_may_come_after_the_work_is_not_retried_for_post_or_patch(
    method, status, retry_after
):
    """A 502, a 504, a bare 503: the upstream may have written before it failed; a second
    POST would create a second record. Sesam retries the batch instead."""
    assert not clients_policy().is_retry(method, status, has_retry_after=retry_after)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
@pytest.mark.parametrize("status", [502, 503, 504])
def test_idempotent_methods_are_retried_on_every_transient_status(method, status):
    assert clients_policy().is_retry(method, status)


@pytest.mark.parametrize(("method", "retried"), [("PUT", True), ("POST", False), ("PATCH", False)])
def test_a_connection_dropped_after_sending_is_retried_only_for_idempotent_methods(method, retried):
    from urllib3.exceptions import ProtocolError

    dropped = ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    retry = clients_policy()
    if retried:
        assert retry.increment(method, "/people/p-1", error=dropped).total == retry.total - 1
    else:
        with pytest.raises(ProtocolError):
            retry.increment(method, "/people/p-1", error=dropped)


def test_retry_after_is_honoured():
    retry = policy().increment("GET", "/people", response=answer(429, retry_after=3))
    assert retry.planned_sleep == 3


@pytest.mark.parametrize(("header", "slept"), [("0.25", 0.25), ("2", 2.0)])
def test_fractional_retry_after_is_honoured_too(header, slept):
    retry = policy().increment("GET", "/people", response=answer(429, retry_after=header))
    assert retry.planned_sleep == slept


def test_a_garbled_retry_after_falls_back_to_backoff():
    retry = policy().increment("GET", "/people", response=answer(503))
    retry = retry.increment("GET", "/people", response=answer(429, retry_after="soon"))
    assert 1.0 <= retry.planned_sleep <= 1.5  # the second retry: 0.5 * 2, plus jitter


def test_backoff_grows_exponentially_with_bounded_jitter():
    retry = policy()
    sleeps = []
    for _ in range(6):
        retry = retry.increment("GET", "/people", response=answer(503))
        sleeps.append(retry.planned_sleep)
    assert sleeps[0] == 0  # urllib3 retries the first failure at once
    for attempt, slept in enumerate(sleeps[1:], start=2):
        base = 0.5 * 2 ** (attempt - 1)
        assert base <= slept <= base + 0.5


def test_backoff_is_capped():
    retry = policy(total=30, wait_budget=10_000)
    for _ in range(15):
        retry = retry.increment("GET", "/people", response=answer(503))
    assert retry.planned_sleep <= 30


def test_a_retry_after_beyond_the_budget_gives_up_at_once():
    with pytest.raises(MaxRetryError, match="retry budget"):
        policy(wait_budget=5).increment("GET", "/people", response=answer(429, 3600))


def test_total_waiting_is_bounded_by_the_budget():
    retry = policy(wait_budget=10)
    retry = retry.increment("GET", "/people", response=answer(429, retry_after=4))
    retry = retry.increment("GET", "/people", response=answer(429, retry_after=4))
    assert retry.waited == 8
    with pytest.raises(MaxRetryError, match="retry budget"):
        retry.increment("GET", "/people", response=answer(429, retry_after=4))


def test_the_count_of_retries_is_bounded():
    retry = policy(total=2, wait_budget=1000)
    retry = retry.increment("GET", "/people", response=answer(503))
    retry = retry.increment("GET", "/people", response=answer(503))
    with pytest.raises(MaxRetryError):
        retry.increment("GET", "/people", response=answer(503))


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("p-1", "p-1"),
        ("a/b", "a%2Fb"),
        ("a?b#c", "a%3Fb%23c"),
        ("100%", "100%25"),
        ("a b", "a%20b"),
        ("Åse", "%C3%85se"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("...", "..."),
    ],
)
def test_ids_are_encoded_as_one_path_segment(raw, encoded):
    assert segment(raw) == encoded


def test_a_client_made_in_code_has_the_default_settings_of_one_made_from_them():
    """A fork's own ``UpstreamClient(url, token)`` times out, retries, pools and bounds
    its answers as the documented defaults of the UPSTREAM_* settings say."""
    from service.framework.settings import Settings
    from service.framework.settings import load_settings

    mine = UpstreamClient("http://records.example", "test-token-4b5c")
    configured = UpstreamClient.from_settings(
        load_settings(Settings, {}), "http://records.example", "test-token-4b5c"
    )
    for client in (mine, configured):
        adapter = client.session.get_adapter("http://records.example/people")
        retry = adapter.max_retries
        assert (client.timeout, client.deadline, client.max_answer_bytes) == (
            (10, 60),
            180,
            8 * 1024 * 1024,
        )
        assert (retry.total, retry.wait_budget, retry.backoff_factor) == (10, 120, 0.5)
        assert adapter._pool_maxsize == 32


def test_a_base_url_given_with_a_trailing_slash_makes_no_double_slash():
    client = UpstreamClient("http://records.example/api/", "test-token-4b5c")
    assert client.url("people", "p 1") == "http://records.example/api/people/p%201"


def test_the_clients_backoff_doubles_from_one_second_up_to_30_s():
    """The first failure is asked again at once; then 1 s, doubling (plus up to 0.5 s of
    jitter), and never more than 30 s between two tries (docs/feed.md)."""
    retry = clients_policy()
    waits = []
    for _ in range(8):  # a ninth would pass the retry budget (120 s of waiting)
        retry = retry.increment("GET", "/people", response=answer(503))
        waits.append(retry.get_backoff_time())
    assert waits[0] == 0
    for n, wait in enumerate(waits[1:6]):  # 1, 2, 4, 8, 16 s
        assert 2**n <= wait <= 2**n + 0.5
    assert waits[6:] == [30, 30]  # 32 s and 64 s, cut
