"""One retry budget per direction: the feed's long, the sink's (and transform's) short."""

from __future__ import annotations

import pytest
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError

from service.framework.settings import ConfigError
from service.framework.settings import Settings
from service.framework.settings import load_settings
from service.framework.settings import variables
from service.framework.upstream import RETRY_STATUSES
from service.framework.upstream import BudgetRetry
from service.framework.upstream import UpstreamClient
from service.framework.upstream import retry_budget

DEFAULTS = {v.name: v.default for v in variables(Settings)}


def answer(status, retry_after=None):
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return HTTPResponse(body=b"", headers=headers, status=status, preload_content=False)


def policy(budget):
    return BudgetRetry(
        total=10, status_forcelist=RETRY_STATUSES, raise_on_status=False, wait_budget=budget
    )


def test_the_feed_rides_out_outages_and_the_sink_fails_fast_by_default():
    assert float(DEFAULTS["UPSTREAM_FEED_RETRY_BUDGET"]) == 120
    # Sesam retries a sink batch 3 times, then each entity up to 5 times: seconds, not minutes.
    assert float(DEFAULTS["UPSTREAM_SINK_RETRY_BUDGET"]) <= 10


def test_a_retry_budget_block_overrides_the_clients_own():
    with retry_budget(5):
        retry = policy(1000).increment("PUT", "/people/p-1", response=answer(503, 4))
        with pytest.raises(MaxRetryError, match="retry budget"):
            retry.increment("PUT", "/people/p-1", response=answer(503, 4))
    # Outside the block the client's budget applies again.
    retry = policy(1000).increment("GET", "/people", response=answer(503, 4))
    retry.increment("GET", "/people", response=answer(503, 4))


def test_the_client_waits_with_the_feed_budget_unless_told_otherwise():
    settings = load_settings(Settings, {"UPSTREAM_FEED_RETRY_BUDGET": "77"})
    client = UpstreamClient.from_settings(settings, "http://127.0.0.1:9", "token")
    retry = client.session.get_adapter("http://127.0.0.1:9").max_retries
    assert retry.wait_budget == 77


def test_the_old_single_budget_stops_the_start_with_the_names_to_use():
    with pytest.raises(ConfigError, match="UPSTREAM_RETRY_BUDGET.*UPSTREAM_FEED_RETRY_BUDGET"):
        load_settings(Settings, {"UPSTREAM_RETRY_BUDGET": "30"})
