"""The rate-limit pacer, on a fake clock: it slows down before the quota runs out."""

from __future__ import annotations

import threading

import pytest
import requests
from requests.adapters import BaseAdapter

from service.framework.rate_limit import RateLimitPacer
from service.framework.upstream import UpstreamClient


class FakeClock:
    """A clock whose sleep moves it on: waits take no time, and are counted."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(clock: FakeClock, **kwargs) -> RateLimitPacer:
    return RateLimitPacer(
        clock=clock, wall_clock=lambda: 1_700_000_000.0, sleep=clock.sleep, **kwargs
    )


def test_no_headers_no_wait():
    clock = FakeClock()
    limiter = pacer(clock)
    limiter.observe({"Content-Type": "application/json"})
    assert [limiter.wait() for _ in range(5)] == [0, 0, 0, 0, 0]


def test_plenty_left_no_wait():
    clock = FakeClock()
    limiter = pacer(clock)
    limiter.observe({"X-RateLimit-Remaining": "500", "X-RateLimit-Reset": "60"})
    assert [limiter.wait() for _ in range(5)] == [0, 0, 0, 0, 0]


def test_none_left_waits_for_the_reset():
    clock = FakeClock()
    limiter = pacer(clock)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"})
    assert limiter.wait() == 30
    assert limiter.wait() == 0  # a new window: nothing known about it


def test_the_last_few_are_spaced_until_the_reset_not_spent_at_once():
    clock = FakeClock()
    limiter = pacer(clock, reserve=10)
    limiter.observe({"RateLimit-Remaining": "4", "RateLimit-Reset": "20"})
    starts = []
    for _ in range(5):
        limiter.wait()
        starts.append(clock.now)
    assert starts[0] == 0  # the first of the four goes at once
    assert starts == sorted(starts) and len(set(starts)) == 5  # then one at a time
    assert all(start < 20 for start in starts[:4])
    assert starts[4] == 20  # the fifth: the quota is spent, it waits for the reset


def test_every_wait_is_bounded():
    clock = FakeClock()
    limiter = pacer(clock, max_wait=5)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3600"})
    assert limiter.wait() == 5


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "12"}, (7, 12)),
        # GitHub's: epoch seconds; some send epoch milliseconds
        ({"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "1700000030"}, (7, 30)),
        ({"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "1700000030000"}, (7, 30)),
        ({"RateLimit-Remaining": "3", "RateLimit-Reset": "9"}, (3, 9)),
        ({"RateLimit": '"default";r=50;t=30'}, (50, 30)),
        ({"RateLimit": '"burst";r=5;t=1, "daily";r=2;t=3600'}, (2, 3600)),
        ({"RateLimit": "limit=100, remaining=0, reset=7"}, (0, 7)),
        ({"RateLimit": '"default";r=0', "RateLimit-Policy": '"default";q=100;w=60'}, (0, 60)),
        # the structured field wins over the older headers
        (
            {"RateLimit": '"x";r=1;t=2', "X-RateLimit-Remaining": "9", "X-RateLimit-Reset": "9"},
            (1, 2),
        ),
    ],
)
def test_headers_read(headers, expected):
    assert pacer(FakeClock()).read(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Remaining": "7"},  # no reset: nothing to pace by
        {"X-RateLimit-Remaining": "many", "X-RateLimit-Reset": "12"},
        {"RateLimit": "garbage"},
        {"RateLimit": '"default";r=1'},  # no reset and no policy
    ],
)
def test_headers_that_say_nothing_usable_are_ignored(headers):
    assert pacer(FakeClock()).read(headers) is None


def test_threads_take_separate_slots():
    """However the threads interleave, only the announced number go before the reset."""
    clock = FakeClock()
    limiter = pacer(clock, reserve=10)
    limiter.observe({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "30"})
    delays: list[float] = []
    lock = threading.Lock()

    def take():
        delay = limiter.delay()
        with lock:
            delays.append(delay)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(delays) == [0, 10, 25, 30, 30, 30, 30, 30]


class Quota(BaseAdapter):
    """An upstream that announces two requests per 10 s window and counts what it gets."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[float] = []

    def send(self, request, **kwargs):
        self.times.append(self.clock.now)
        window = [time for time in self.times if time >= self.clock.now // 10 * 10]
        response = requests.Response()
        response.status_code = 200 if len(window) <= 2 else 429
        left = max(0, 2 - len(window))
        response.headers.update(
            {"X-RateLimit-Remaining": str(left), "X-RateLimit-Reset": str(10 - self.clock.now % 10)}
        )
        response._content = b"{}"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def test_the_client_consults_the_pacer_and_is_never_refused():
    clock = FakeClock()
    client = UpstreamClient("http://records.example", "test-token", pacer=pacer(clock, reserve=0))
    quota = Quota(clock)
    client.session.mount("http://", quota)
    for _ in range(6):
        client.get_json("http://records.example/people")  # a 429 would raise here
    assert quota.times == [0, 0, 10, 10, 20, 20]


# --- what an operator of a rate-limited upstream would notice (issue 20) ---


def test_by_default_only_the_last_ten_requests_of_a_window_are_spaced():
    """The documented reserve: with eleven left the next goes at once, and from ten left
    on the rest are spread over the time until the reset (20 s / 10 = 2 s apart)."""
    clock = FakeClock()
    limiter = RateLimitPacer(clock=clock, wall_clock=lambda: 0.0, sleep=clock.sleep)
    limiter.observe({"X-RateLimit-Remaining": "11", "X-RateLimit-Reset": "20"})
    assert [limiter.wait() for _ in range(3)] == [0, 0, 2]


def test_by_default_no_wait_is_longer_than_a_minute():
    clock = FakeClock()
    limiter = RateLimitPacer(clock=clock, wall_clock=lambda: 0.0, sleep=clock.sleep)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3600"})
    assert limiter.wait() == 60


@pytest.mark.parametrize("settings", [{"reserve": -1}, {"max_wait": -0.5}])
def test_a_negative_reserve_or_longest_wait_is_refused_when_the_client_is_built(settings):
    with pytest.raises(ValueError, match="must not be negative"):
        RateLimitPacer(**settings)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # the older RateLimit form without a reset: the X- headers beside it are read
        (
            {"RateLimit": "limit=100, remaining=5", "X-RateLimit-Remaining": "4"}
            | {"X-RateLimit-Reset": "9"},
            (4, 9),
        ),
        # ... and without a remaining, or with words for numbers
        (
            {"RateLimit": "limit=100, reset=5", "RateLimit-Remaining": "3", "RateLimit-Reset": "8"},
            (3, 8),
        ),
        (
            {
                "RateLimit": "remaining=few, reset=soon",
                "X-RateLimit-Remaining": "2",
                "X-RateLimit-Reset": "7",
            },
            (2, 7),
        ),
        # a structured RateLimit that says nothing usable: the RateLimit-* headers
        (
            {"RateLimit": '"default";q=100', "RateLimit-Remaining": "6", "RateLimit-Reset": "5"},
            (6, 5),
        ),
        # RateLimit-* and X-RateLimit-* both there: the IETF draft's wins
        (
            {"RateLimit-Remaining": "1", "RateLimit-Reset": "2"}
            | {"X-RateLimit-Remaining": "8", "X-RateLimit-Reset": "9"},
            (1, 2),
        ),
        # only X-RateLimit-* complete: RateLimit-Remaining alone is not a quota
        (
            {"RateLimit-Remaining": "1", "X-RateLimit-Remaining": "8", "X-RateLimit-Reset": "9"},
            (8, 9),
        ),
        # a reset already past (an epoch before the wall clock): no time left to wait for
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1699999990"}, (0, 0)),
        # fractions and spaces around the numbers
        ({"X-RateLimit-Remaining": " 3 ", "X-RateLimit-Reset": "1.5"}, (3, 1.5)),
    ],
)
def test_headers_read_past_what_they_cannot_say(headers, expected):
    assert pacer(FakeClock()).read(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit": "limit=100, remaining=5"},
        {"RateLimit": "limit=100, remaining=many, reset=7"},
        {"RateLimit": "limit=100, reset=7"},
        {"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "7"},
        {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "7s"},
    ],
)
def test_a_response_with_unreadable_quota_headers_is_taken_as_no_news(headers):
    """No exception on an upstream's odd headers: every request would fail with it."""
    clock = FakeClock()
    limiter = pacer(clock)
    limiter.observe(headers)
    assert [limiter.wait() for _ in range(3)] == [0, 0, 0]


def test_after_the_reset_the_old_windows_count_is_forgotten():
    """A quota spent in one window does not slow the next: once the reset is past, the
    requests go at once until the upstream says again how much is left."""
    clock = FakeClock()
    limiter = pacer(clock, reserve=0)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "10"})
    assert limiter.wait() == 10
    assert [limiter.wait() for _ in range(3)] == [0, 0, 0]
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"})
    assert limiter.wait() == 5


def test_a_window_whose_reset_is_now_lets_the_request_go():
    clock = FakeClock()
    limiter = pacer(clock)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"})
    assert limiter.wait() == 0


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("999999999", 999999999),  # under 2001-09-09 as epoch seconds: a delta
        ("1000000000", 0),  # from there on an epoch (long past here)
        ("1699999999999", 0),  # epoch milliseconds, past
        ("1000000000000", 0),  # the first that can only be milliseconds: 2001-09-09
        ("1700000012000", 12),
    ],
)
def test_the_reset_is_a_delta_or_an_epoch_from_the_documented_thresholds(reset, seconds):
    headers = {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": reset}
    assert pacer(FakeClock()).read(headers) == (1, seconds)


def test_a_longest_wait_of_zero_is_allowed_and_never_waits():
    clock = FakeClock()
    limiter = pacer(clock, max_wait=0)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"})
    assert [limiter.wait() for _ in range(3)] == [0, 0, 0]


def test_at_the_reset_the_slots_handed_out_in_the_old_window_hold_nothing_back():
    """Threads took slots faster than the clock ran (the last one past the reset): once
    the window resets, a request goes at once, whatever the old window had promised."""
    clock = FakeClock()
    limiter = pacer(clock, reserve=10)
    limiter.observe({"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "10"})
    assert [round(limiter.delay(), 2) for _ in range(3)] == [0, 2.5, 5.83]
    clock.now = 10.0
    assert limiter.delay() == 0
