"""One memory budget per worker (issue 18): what a request holds is reserved, a request
that does not fit waits and then gets 503 with Retry-After, threads stay free for /health,
and the estimate of a parsed answer is an upper bound of what parsing it takes."""

from __future__ import annotations

import contextvars
import gc
import logging
import platform
import tempfile
import threading
import tracemalloc
import weakref

import orjson
import pytest

from service.framework import jsontext
from service.framework import memory
from service.framework.memory import MemoryBudget
from service.framework.memory import MemoryBusy
from service.framework.settings import ConfigError
from service.framework.settings import Settings
from service.framework.settings import load_settings
from service.framework.settings import variables

DEFAULTS = {v.name: v.default for v in variables(Settings)}
MB = 1024 * 1024


def records(count: int) -> bytes:
    return orjson.dumps(
        {
            "data": [
                {
                    "id": f"p-{i:06d}",
                    "updated_at": "2026-03-01T12:00:00.000000Z",
                    "deleted": False,
                    "name": f"Person {i}",
                    "age": i % 90,
                    "tags": ["a", "b"],
                    "address": {"city": "Oslo", "zip": "0150"},
                }
                for i in range(count)
            ],
            "next_cursor": "abc",
        }
    )


SHAPES = {
    "small records": records(3000),
    "empty objects": b'{"data":[' + b",".join([b"{}"] * 100_000) + b"]}",
    "empty lists": b'{"data":[' + b",".join([b"[]"] * 100_000) + b"]}",
    "unique short strings": b"[" + b",".join(b'"%d"' % i for i in range(100_000)) + b"]",
    "floats": b"[" + b",".join([b"1.5"] * 100_000) + b"]",
    "long strings": orjson.dumps([{"id": str(i), "text": "x" * 5000} for i in range(100)]),
    "many keys": orjson.dumps([{f"k{j}": j for j in range(50)} for _ in range(500)]),
    "non-ASCII text": orjson.dumps([{"text": "é" * 50} for _ in range(5000)]),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_estimate_of_a_parsed_answer_is_never_below_what_it_takes(shape):
    data = SHAPES[shape]
    tracemalloc.start()
    try:
        parsed = jsontext.loads(data, lambda name: None)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed is not None
    assert memory.estimate(data) >= held, f"{shape}: {held} held, {memory.estimate(data)} estimated"


def test_the_estimate_is_not_wildly_above_for_ordinary_records():
    data = SHAPES["small records"]
    assert memory.estimate(data) < 12 * len(data)


def test_a_request_holds_its_base_and_its_largest_answers_until_it_ends():
    budget = MemoryBudget(100 * MB, slots=4)
    with budget.admit("a batch", base=1000, holds=3) as ledger:
        memory.charge_answer(500)
        memory.charge_answer(200)  # smaller: nothing more to hold
        assert ledger.reserved == budget.held == 1000 + 3 * 500
        ledger.drop_base()
        assert budget.held == 3 * 500
        ledger.add(100)
        assert budget.held == 3 * 500 + 100
        memory.charge_answer(800)  # larger, beside what the request built: both held
        assert ledger.reserved == budget.held == 3 * 800 + 100
    assert (budget.held, budget.busy) == (0, 0)


def test_an_answer_outside_any_request_counts_against_nothing():
    memory.charge_answer(10**12)  # the tools, the tests: no ledger, no limit


def test_a_request_that_does_not_fit_waits_then_gets_a_503_with_retry_after(monkeypatch):
    monkeypatch.setattr(memory, "ADMISSION_WAIT_SECONDS", 0.2)
    budget = MemoryBudget(1000, slots=4)
    with budget.admit("a first batch", base=800):
        with pytest.raises(MemoryBusy) as busy:
            budget.enter("a second batch", base=300)
    assert busy.value.status == 503
    assert busy.value.headers == {"Retry-After": str(memory.RETRY_AFTER_SECONDS)}
    assert "800 bytes of the WORKER_MEMORY_BUDGET of 1000 are held" in busy.value.detail
    assert (budget.held, budget.busy) == (0, 0)


def test_a_request_larger_than_the_whole_budget_fails_at_once_naming_what_to_change():
    budget = MemoryBudget(1000, slots=4)
    with budget.admit("the feed of people", holds=3) as ledger:
        with pytest.raises(memory.BeyondBudget) as busy:
            ledger.answer(400)
    assert busy.value.status == 502
    detail = busy.value.detail
    assert "the feed of people needs about" in detail
    assert "WORKER_MEMORY_BUDGET=1000" in detail and "UPSTREAM_PAGE_SIZE" in detail


def test_every_slot_taken_is_a_503_at_once_so_threads_stay_free():
    budget = MemoryBudget(100 * MB, slots=2)
    first, second = budget.enter("one"), budget.enter("two")
    with pytest.raises(MemoryBusy, match="2 requests are being served"):
        budget.enter("three")
    first.close()
    budget.enter("three").close()
    second.close()
    assert budget.busy == 0


def test_the_default_budget_keeps_a_thread_free_for_health():
    from service.framework.app import memory_budget

    budget = memory_budget(load_settings(Settings, {}))
    assert budget.slots == int(DEFAULTS["THREADS"]) - 1
    assert budget.capacity == 48 * MB


def test_a_ledger_closed_twice_gives_back_once():
    budget = MemoryBudget(1000, slots=4)
    ledger = budget.enter("a batch", base=100)
    ledger.close()
    ledger.close()
    assert (budget.held, budget.busy) == (0, 0)


def test_memory_goes_back_to_the_system_when_the_worker_falls_idle_after_a_load():
    trims = []
    budget = MemoryBudget(100 * MB, slots=4)
    budget._trim = trims.append
    with budget.admit("a small batch", base=MB):
        pass
    assert trims == []  # a small load: nothing to give back
    outer = budget.enter("a large batch", base=memory.TRIM_AFTER_BYTES)
    with budget.admit("a feed"):
        pass
    assert trims == []  # not idle yet: the large batch still runs
    outer.close()
    assert trims == [0]


def test_waiting_requests_are_woken_when_room_is_given_back(monkeypatch):
    monkeypatch.setattr(memory, "ADMISSION_WAIT_SECONDS", 60.0)
    budget = MemoryBudget(1000, slots=4)
    first = budget.enter("first", base=900)
    admitted = threading.Event()

    def second() -> None:
        with budget.admit("second", base=500):
            admitted.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not admitted.wait(0.2)
    first.close()
    assert admitted.wait(30)
    thread.join(30)


def test_the_budget_must_hold_a_batch_of_the_largest_size_and_its_answers():
    largest = {"SINK_MAX_BODY_BYTES": str(MB), "SINK_CONCURRENCY": "8"}
    with pytest.raises(ConfigError, match="WORKER_MEMORY_BUDGET must be at least 3 times"):
        load_settings(Settings, {**largest, "WORKER_MEMORY_BUDGET": str(3 * MB + 8 * 65536 - 1)})
    load_settings(Settings, {**largest, "WORKER_MEMORY_BUDGET": str(3 * MB + 8 * 65536)})


def test_a_batch_reserves_its_answers_up_front_so_two_never_wait_for_each_other(monkeypatch):
    """Two batches that each held half the budget and then each needed a little more for
    the upstream's answers waited for each other until both got 503 (seen in a 128 MB
    container). With the answers reserved at admission, the second waits before it holds
    anything, and the first goes on."""
    monkeypatch.setattr(memory, "ADMISSION_WAIT_SECONDS", 0.2)
    budget = MemoryBudget(2 * 3 * MB, slots=4)
    first = budget.enter("a batch", base=3 * MB, holds=8, allowance=65536)
    assert first.reserved == 3 * MB + 8 * 65536
    with pytest.raises(MemoryBusy):
        budget.enter("another batch", base=3 * MB, holds=8, allowance=65536)
    with memory.using(first):
        memory.charge_answer(60000)  # within the allowance: no growth, no wait
    assert first.reserved == 3 * MB + 8 * 65536
    first.close()


def test_the_old_sink_budget_stops_the_start_naming_the_new_one():
    with pytest.raises(ConfigError, match="SINK_BYTES_IN_FLIGHT is no longer read.*WORKER_MEMORY"):
        load_settings(Settings, {"SINK_BYTES_IN_FLIGHT": "8388608"})


def test_a_forks_star_import_gets_the_budgets_public_names() -> None:
    """``from service.framework.memory import *`` works and brings what a fork's own code
    needs to reserve memory for a long answer of its own."""
    namespace: dict[str, object] = {}
    exec("from service.framework.memory import *", namespace)
    public = {"BODY_COST", "BeyondBudget", "Ledger", "MemoryBudget", "MemoryBusy", "estimate"}
    assert public <= namespace.keys()


# --- the defaults the docs promise (issue 20) --------------------------------------------------


class NoRoom(threading.Condition):
    """The budget's lock, except that room never comes: each wait's bound is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait_for(self, predicate, timeout=None):
        self.waits.append(timeout)
        return False


def test_a_request_waits_15_s_for_room_then_gets_503_retry_after_5_and_a_warning(caplog):
    budget = MemoryBudget(1000, slots=4)
    with budget.admit("a first batch", base=800):
        budget._room = no_room = NoRoom()
        with (
            caplog.at_level(logging.WARNING, logger="service.framework.memory"),
            pytest.raises(MemoryBusy) as busy,
        ):
            budget.enter("a second batch", base=300)
    assert no_room.waits == [15.0]
    assert busy.value.headers == {"Retry-After": "5"}
    assert [r.getMessage() for r in caplog.records] == [
        "memory budget: answered 503: 800 bytes of the WORKER_MEMORY_BUDGET of 1000 are "
        "held by other requests, and a second batch needs 300 more"
    ]


def feed_beside(held: int):
    """The reference's feed in a worker whose budget (1 MiB, the least there is) has
    ``held`` bytes taken, with an upstream that is not there: the feed takes its
    reservation before it asks the upstream anything."""
    from service.tools.reference import create_app

    app = create_app(
        {
            "UPSTREAM_URL": "http://127.0.0.1:9",
            "UPSTREAM_TOKEN": "test-token",
            "UPSTREAM_RETRIES": "0",
            "STATE_DIR": tempfile.mkdtemp(),
            "SINK_MAX_BODY_BYTES": "1000",
            "WORKER_MEMORY_BUDGET": str(MB),
        }
    )
    budget = app.view_functions["sink"].__self__.bodies.budget
    with budget.admit("a batch", base=held):
        return app.test_client().get("/people")


def test_a_first_feed_reserves_three_pages_of_256_kib(monkeypatch):
    """Before it has read a page, a feed holds three (written, read ahead, being read)
    of 256 KiB: with exactly that left it asks the upstream, with a byte less it waits
    for room, then answers 503."""
    monkeypatch.setattr(memory, "ADMISSION_WAIT_SECONDS", 0.2)
    fits = feed_beside(MB - 3 * 256 * 1024)
    assert fits.status_code == 502
    assert "WORKER_MEMORY_BUDGET" not in fits.get_data(as_text=True)
    short = feed_beside(MB - 3 * 256 * 1024 + 1)
    assert short.status_code == 503
    assert "the feed of people needs 786432 more" in short.json["detail"]


def test_a_forks_own_request_reserves_what_it_says_and_nothing_more():
    """``enter`` and ``admit``'s defaults: no body, one answer held, no allowance."""
    budget = MemoryBudget(100 * MB, slots=4)
    ledger = budget.enter("a fork's own request")
    assert ledger.reserved == 0
    ledger.answer(1000)
    assert ledger.reserved == 1000  # one answer held, not two
    ledger.close()
    with budget.admit("a fork's batch") as ledger:
        ledger.answer(1000)
        assert budget.held == 1000


def test_only_a_feed_teaches_the_next_feed_what_to_reserve():
    budget = MemoryBudget(100 * MB, slots=4)
    with budget.admit("a batch") as ledger:
        ledger.answer(4 * MB)  # a batch's large answer
    ledger = budget.enter("a fork's own request", allowance=10)
    ledger.answer(4 * MB)
    ledger.close()
    assert budget.feed_answer == memory.FIRST_ANSWER_GUESS


def test_the_estimate_is_twice_the_text_and_64_bytes_per_brace_bracket_comma_and_colon():
    assert memory.estimate(b'{"a": [1, 2]}') == 2 * 13 + 64 * 4


@pytest.mark.parametrize(("held", "trimmed"), [(8 * MB - 1, False), (8 * MB, True)])
def test_an_idle_worker_gives_memory_back_after_holding_8_mib(caplog, held, trimmed):
    trims: list[int] = []
    budget = MemoryBudget(100 * MB, slots=4)
    budget._trim = trims.append
    with caplog.at_level(logging.INFO, logger="service.framework.memory"):
        with budget.admit("a large batch", base=held):
            pass
    assert trims == ([0] if trimmed else [])
    given_back = [r.getMessage() for r in caplog.records if "given back" in r.getMessage()]
    expected = "memory budget: idle after holding 8 MiB: free memory given back"
    assert given_back == ([expected] if trimmed else [])


def test_no_memory_is_given_back_while_another_request_runs_even_one_holding_nothing():
    trims: list[int] = []
    budget = MemoryBudget(100 * MB, slots=4)
    budget._trim = trims.append
    large = budget.enter("a large batch", base=8 * MB)
    small = budget.enter("a request that holds nothing yet")
    large.close()
    assert trims == []
    small.close()
    assert trims == [0]


def test_what_a_broken_request_left_in_a_cycle_is_collected_when_the_worker_falls_idle():
    """An idle worker allocates nothing, so the collector would not run by itself."""

    class Page:
        pass

    budget = MemoryBudget(100 * MB, slots=4)
    budget._trim = lambda pad: None
    collecting = gc.isenabled()
    gc.disable()
    try:
        with budget.admit("a large batch", base=8 * MB):
            page = Page()
            page.cycle = page  # an exception, its traceback, the frame holding the page
            left = weakref.ref(page)
            del page
        assert left() is None
    finally:
        if collecting:
            gc.enable()


def test_a_feed_of_small_pages_teaches_the_next_feed_to_reserve_64_kib_a_page_at_least():
    budget = MemoryBudget(100 * MB, slots=4)
    ledger = budget.enter("the feed of people", holds=3, allowance=budget.feed_answer, learn=True)
    ledger.answer(100)
    ledger.close()
    assert budget.feed_answer == 64 * 1024


def test_a_body_dropped_after_its_request_ended_gives_nothing_back_twice():
    budget = MemoryBudget(100 * MB, slots=4)
    ledger = budget.enter("a batch", base=1000)
    ledger.close()
    ledger.drop_base()
    assert (budget.held, budget.busy) == (0, 0)


def test_the_read_ahead_threads_answers_count_against_the_feed_that_bound_it():
    """The feed reads its next page in another thread, in a context made for it: its
    answers still grow the feed's reservation."""
    budget = MemoryBudget(100 * MB, slots=4)
    ledger = budget.enter("the feed of people", holds=3)

    def read_ahead() -> None:
        memory.bind(ledger)
        memory.charge_answer(1000)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(read_ahead,))
    thread.start()
    thread.join()
    assert (ledger.reserved, budget.held) == (3000, 3000)
    ledger.close()


def test_a_forks_code_finds_the_ledger_of_the_request_it_serves():
    budget = MemoryBudget(100 * MB, slots=4)
    assert memory.current() is None
    with budget.admit("a batch") as ledger:
        assert memory.current() is ledger
    assert memory.current() is None


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_on_glibc_an_idle_worker_gives_memory_back_with_malloc_trim():
    trim = memory._malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: memory was given back, 0: there was none to give


class NoTrim:
    """A C library without malloc_trim (musl, macOS)."""


@pytest.mark.parametrize("library", [NoTrim, OSError])
def test_without_malloc_trim_the_budget_works_and_gives_back_nothing(monkeypatch, library):
    def load(name):
        if library is OSError:
            raise OSError("no C library here")
        return library()

    monkeypatch.setattr(memory.ctypes, "CDLL", load)
    budget = MemoryBudget(100 * MB, slots=4)
    assert budget._trim is None
    with budget.admit("a large batch", base=8 * MB):
        pass
    assert (budget.held, budget.busy) == (0, 0)
