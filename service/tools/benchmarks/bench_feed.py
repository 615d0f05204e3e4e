"""The feed benchmark: the limit, a naive connector and this connector, side by side.

Why: issues 2 and 11 set targets relative to what the upstream allows and to the approach
the connector replaces, so the three run in one benchmark run, on one synthetic collection
of about 300-byte records served by the demo Records API in two ways (``--upstream``):

- ``fast``: every page encoded once at start and served from memory (the demo's
  ``--pre-encoded``), so the upstream costs next to nothing and the figures are the
  connector's own cost (issue 11);
- ``computed``: each page computed and encoded in Python on request (memory stays flat),
  a slow upstream: there the connector's read-ahead hides its own time behind the
  upstream's.

The competitors:

- ``limit``: a client fetching every upstream page at page size 1000 with one
  ``requests.Session``, reading each page's bytes in one read, as the connector does (only
  the cursor at its end is parsed).
- ``parse``: the limit, plus parsing each page as the connector does
  (``service.framework.jsontext.loads``): what any feed that must read each record spends
  before it writes a byte.
- ``naive``: ``service/tools/benchmarks/naive_connector.py``, every page into a list, then
  ``json.dumps``; under the connector's gunicorn settings, so only the approach differs.
- ``connector``: the framework's reference adapter (``service.tools.reference``), started
  with the contract's command and its defaults; a fork's own module is not what is measured.

For the two servers a client streams the response and counts bytes and ``"_id":``
marks, so the client does not dominate. The competitors run in rotation, ``--repeat``
times each, and the medians are reported, because the machine is shared and noisy.
Peak RSS is the sum over a server's processes (gunicorn master and workers), sampled
every 50 ms during each request; the upstream's is sampled separately. *CPU / 100k* is
the CPU time of the server's workers (gunicorn's master left out; for the limit, this
client's) per 100,000 entities: a shared machine shakes it less than wall time.

From the repository root:

    .venv/bin/python -m service.tools.benchmarks.bench_feed --records 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from service.framework import jsontext
from service.framework.upstream import _finite_float
from service.framework.upstream import _reject_constant
from service.tools.benchmarks.servers import REFERENCE_APP
from service.tools.benchmarks.servers import RESOURCE
from service.tools.benchmarks.servers import TOKEN
from service.tools.benchmarks.servers import Server
from service.tools.benchmarks.servers import start_app
from service.tools.benchmarks.servers import start_demo_upstream
from service.tools.benchmarks.servers import stop_all

PAGE_SIZE = 1000
COMPETITORS = ("limit", "parse", "naive", "connector")
CLIENTS = ("limit", "parse")  # run in this process: no server of their own
UPSTREAMS = ("fast", "computed")
CURSOR_MARK = b'"next_cursor":'  # the demo's list envelope ends with it
ENTITY_MARK = b'"_id":'  # once per entity; a string value would escape its quotes
MB = 1024 * 1024
# The issues' targets, at TARGET_SIZE records on the fast upstream.
TARGET_SIZE = 300_000
MAX_TIME_VS_LIMIT = 3.0
MAX_TIME_VS_NAIVE = 0.15
MAX_RSS_MB = 100
MAX_RSS_GROWTH_MB = 10  # "flat": smallest to largest size


@dataclasses.dataclass
class Run:
    """One timed request (or, for the limit and the parse, one walk over every page)."""

    competitor: str
    seconds: float | None = None
    first_byte: float | None = None
    entities: int = 0
    size_bytes: int = 0
    pages: int = 0
    cpu_seconds: float = 0.0  # this client's (limit, parse), or the server's workers
    server_peak_rss: int = 0
    upstream_peak_rss: int = 0
    error: str | None = None


# --- servers ----------------------------------------------------------------------------


APPS = {
    "naive": "service.tools.benchmarks.naive_connector:create_app()",
    "connector": REFERENCE_APP,
}


# The demo upstream pre-encoding a large collection takes a while before it listens.
UPSTREAM_START_SECONDS = 600


def start_gunicorn(name: str, upstream_url: str, directory: Path) -> Server:
    """The naive or the connector, with the contract's command and gunicorn settings."""
    return start_app(name, APPS[name], upstream_url, directory)


def start_servers(records: int, upstream_kind: str, directory: Path) -> dict[str, Server]:
    """The demo upstream with ``records`` synthetic records, the naive and the connector."""
    options = ["--synthetic", f"{RESOURCE}={records}"]
    if upstream_kind == "fast":
        options += ["--pre-encoded", str(PAGE_SIZE)]
    upstream = start_demo_upstream(directory, *options, seconds=UPSTREAM_START_SECONDS)
    servers = {"upstream": upstream}
    try:
        for name in APPS:
            servers[name] = start_gunicorn(name, upstream.url, directory)
    except BaseException:
        stop_all(servers)
        raise
    return servers


# --- memory -----------------------------------------------------------------------------


class RssSampler:
    """Samples the summed RSS of each watched server's processes every ``interval``.

    With ``cap_bytes``, a server over the cap is killed (``capped`` names it), so a
    runaway naive connector fails its run instead of taking the machine down.
    """

    def __init__(
        self, servers: dict[str, Server], interval: float, cap_bytes: dict[str, int] | None = None
    ) -> None:
        self.servers = servers
        self.interval = interval
        self.cap_bytes = cap_bytes or {}
        self.peaks = dict.fromkeys(servers, 0)
        self.capped: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for name, server in self.servers.items():
            total = 0
            for process in server.processes():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_info().rss
            self.peaks[name] = max(self.peaks[name], total)
            cap = self.cap_bytes.get(name)
            if cap is not None and total > cap and name not in self.capped:
                self.capped.add(name)
                server.kill()


# --- the competitors --------------------------------------------------------------------


def next_cursor(page: bytes) -> str | None:
    """The cursor at the end of a list page, without parsing the page."""
    return json.loads(b"{" + page[page.rindex(CURSOR_MARK) :])["next_cursor"]  # type: ignore


def run_limit(upstream_url: str, parse: bool = False) -> Run:
    """Every upstream page's bytes, as fast as one client can read them: the floor. With
    ``parse``, each page parsed too, as the connector parses it."""
    run = Run("parse" if parse else "limit")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    params: dict[str, Any] = {"limit": PAGE_SIZE}
    started = time.perf_counter()
    while True:
        response = session.get(
            f"{upstream_url}/{RESOURCE}", params=params, timeout=(10, 600), stream=True
        )
        response.raise_for_status()
        page = response.raw.read(decode_content=True)  # one read, as the connector reads
        response.raw.release_conn()
        if parse:
            jsontext.loads(page, _reject_constant, _finite_float)  # the connector's parse
        if run.first_byte is None:
            run.first_byte = time.perf_counter() - started  # the first whole page
        run.pages += 1
        run.entities += page.count(b'"id":')  # once per record (a value's quote is escaped)
        run.size_bytes += len(page)
        cursor = next_cursor(page)
        if not cursor:
            break
        params["cursor"] = cursor
    run.seconds = time.perf_counter() - started
    session.close()
    return run


def run_stream(name: str, url: str) -> Run:
    """Stream one feed response, counting bytes and entities, never holding it."""
    run = Run(name)
    started = time.perf_counter()
    try:
        with requests.get(url, stream=True, timeout=(10, 1800)) as response:
            if response.status_code != 200:
                run.error = f"HTTP {response.status_code}"
                return run
            carry = b""
            first = last = b""
            for chunk in response.iter_content(chunk_size=64 * 1024):
                if not chunk:
                    continue
                if run.first_byte is None:
                    run.first_byte = time.perf_counter() - started
                    first = chunk[:1]
                joined = carry + chunk
                run.entities += joined.count(ENTITY_MARK)
                carry = joined[-(len(ENTITY_MARK) - 1) :]  # too short to hold a whole mark
                run.size_bytes += len(chunk)
                last = chunk[-1:]
        run.seconds = time.perf_counter() - started
        if (first, last) != (b"[", b"]"):
            run.error = f"not an array: starts {first!r}, ends {last!r}"
    except requests.RequestException as error:
        run.error = f"broken: {type(error).__name__}"
    return run


def measure(
    name: str, servers: dict[str, Server], interval: float, cap_bytes: dict[str, int]
) -> Run:
    watched = {key: servers[key] for key in ("upstream", "naive", "connector")}
    gc.collect()
    with RssSampler(watched, interval, cap_bytes) as sampler:
        if name in CLIENTS:
            cpu_before = time.process_time()
            run = run_limit(servers["upstream"].url, parse=name == "parse")
            run.cpu_seconds = time.process_time() - cpu_before
        else:
            cpu_before = servers[name].worker_cpu_seconds()
            run = run_stream(name, f"{servers[name].url}/{RESOURCE}")
            run.cpu_seconds = servers[name].worker_cpu_seconds() - cpu_before
    if name in sampler.capped:
        run.error = f"killed: RSS over the {cap_bytes[name] // MB} MB cap"
        run.seconds = None
    run.server_peak_rss = sampler.peaks[name] if name not in CLIENTS else 0
    run.upstream_peak_rss = sampler.peaks["upstream"]
    return run


def verify(servers: dict[str, Server], records: int, names: list[str]) -> None:
    """Untimed: each server's whole body parses and holds every record, in order."""
    expected = [f"rec-{i:09d}" for i in range(records)]
    for name in names:
        response = requests.get(f"{servers[name].url}/{RESOURCE}", timeout=(10, 1800))
        response.raise_for_status()
        ids = [entity["_id"] for entity in response.json()]
        if ids != expected:
            raise AssertionError(f"{name}: {len(ids)} entities, not the {records} records")


# --- the benchmark ----------------------------------------------------------------------


@dataclasses.dataclass
class Summary:
    """One competitor at one size: medians of the successful runs, peaks over all."""

    competitor: str
    records: int
    runs: list[Run]
    upstream: str = "computed"

    @property
    def ok(self) -> list[Run]:
        return [run for run in self.runs if run.error is None and run.seconds is not None]

    @property
    def seconds(self) -> float | None:
        return _median([run.seconds for run in self.ok])

    @property
    def first_byte(self) -> float | None:
        return _median([run.first_byte for run in self.ok])

    @property
    def cpu_seconds(self) -> float | None:
        return _median([run.cpu_seconds for run in self.ok])

    @property
    def cpu_per_100k(self) -> float | None:
        return _median(
            [run.cpu_seconds * 100_000 / run.entities for run in self.ok if run.entities]
        )

    @property
    def entities(self) -> int | None:
        counts = {run.entities for run in self.ok}
        return counts.pop() if len(counts) == 1 else None

    @property
    def server_peak_mb(self) -> float:
        return max((run.server_peak_rss for run in self.runs), default=0) / MB

    @property
    def upstream_peak_mb(self) -> float:
        return max((run.upstream_peak_rss for run in self.runs), default=0) / MB

    @property
    def error(self) -> str | None:
        errors = [run.error for run in self.runs if run.error]
        return errors[0] if errors else None

    def as_json(self) -> dict[str, Any]:
        return {
            "competitor": self.competitor,
            "upstream": self.upstream,
            "records": self.records,
            "seconds": self.seconds,
            "first_byte": self.first_byte,
            "cpu_seconds": self.cpu_seconds,
            "cpu_seconds_per_100k": self.cpu_per_100k,
            "entities": self.entities,
            "server_peak_mb": self.server_peak_mb,
            "upstream_peak_mb": self.upstream_peak_mb,
            "error": self.error,
            "runs": [dataclasses.asdict(run) for run in self.runs],
        }


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def bench_size(
    records: int,
    upstream_kind: str,
    args: argparse.Namespace,
    verify_body: bool,
    loads: list[float],
) -> dict[str, Summary]:
    """Every competitor ``args.repeat`` times, in rotation, against fresh servers."""
    runs: dict[str, list[Run]] = {name: [] for name in COMPETITORS}
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as directory:
        log(f"--- {records:,} records, {upstream_kind} upstream")
        servers = start_servers(records, upstream_kind, Path(directory))
        try:
            naive_skipped = records > args.naive_max_records
            if verify_body:
                verify(servers, records, ["connector"] if naive_skipped else list(APPS))
                for name in APPS:  # fresh processes: verification is not a peak to report
                    servers[name].stop()
                    servers[name] = start_gunicorn(name, servers["upstream"].url, Path(directory))
            caps = {"naive": args.naive_rss_cap_mb * MB}
            for repetition in range(args.repeat):
                shift = repetition % len(COMPETITORS)
                for name in COMPETITORS[shift:] + COMPETITORS[:shift]:
                    if name == "naive" and (naive_skipped or not servers["naive"].alive):
                        if naive_skipped and not runs["naive"]:
                            runs["naive"].append(
                                Run(
                                    "naive",
                                    error=(
                                        "skipped: over --naive-max-records "
                                        f"{args.naive_max_records}"
                                    ),
                                )
                            )
                        continue
                    loads.append(os.getloadavg()[0])  # the machine is shared: say how busy
                    run = measure(name, servers, args.interval, caps)
                    runs[name].append(run)
                    log(
                        f"{records:>9} {upstream_kind:<8} {name:<9} rep {repetition + 1}: "
                        + (
                            f"{run.seconds:.2f}s first byte {run.first_byte * 1000:.0f}ms "
                            f"CPU {run.cpu_seconds:.2f}s "
                            f"{run.entities} entities {run.size_bytes / MB:.0f} MB "
                            f"server RSS {run.server_peak_rss / MB:.0f} MB "
                            f"upstream RSS {run.upstream_peak_rss / MB:.0f} MB"
                            if run.error is None
                            else run.error
                        )
                    )
                    time.sleep(args.pause)
        finally:
            stop_all(servers)
    return {name: Summary(name, records, runs[name], upstream_kind) for name in COMPETITORS}


# --- the report -------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def _seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


def _milliseconds(value: float | None) -> str:
    return f"{value * 1000:.0f}" if value is not None else "n/a"


Results = dict[tuple[str, int], dict[str, Summary]]  # (upstream, records): competitors


def report(results: Results, args: argparse.Namespace, loads: list[float]) -> str:
    lines = [
        f"Feed benchmark: medians of {args.repeat} rotation(s); "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; load average "
        f"{min(loads):.1f} to {max(loads):.1f} while it ran.",
        "",
        "| upstream | records | competitor | time (s) | × limit | connector ÷ this "
        "| first byte (ms) | CPU (s) | CPU (s) / 100k | peak RSS, server (MB) "
        "| peak RSS, upstream (MB) | entities |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (upstream, records), summaries in results.items():
        limit = summaries["limit"].seconds
        connector = summaries["connector"].seconds
        for name in COMPETITORS:
            summary = summaries[name]
            head = f"| {upstream} | {records:,} | {name} |"
            if summary.seconds is None:
                error = summary.error or "no run"
                shown = error if error.startswith("skipped") else f"failed: {error}"
                peaks = [summary.server_peak_mb, summary.upstream_peak_mb]
                rss = " | ".join(f"{peak:.0f}" if peak else "" for peak in peaks)
                lines.append(f"{head} {shown} | | | | | | {rss} | |")
                continue
            server_rss = "(client)" if name in CLIENTS else f"{summary.server_peak_mb:.0f}"
            lines.append(
                f"{head} {_seconds(summary.seconds)} "
                f"| {_ratio(summary.seconds, limit)} | {_ratio(connector, summary.seconds)} "
                f"| {_milliseconds(summary.first_byte)} | {_seconds(summary.cpu_seconds)} "
                f"| {_seconds(summary.cpu_per_100k)} | {server_rss} "
                f"| {summary.upstream_peak_mb:.0f} | {summary.entities:,} |"
            )
    lines += ["", *targets(results)]
    return "\n".join(lines)


def targets(results: Results) -> list[str]:
    """The issues' targets, each with the figure that meets or misses it."""
    lines = ["| target | figure | met |", "| --- | --- | --- |"]

    def row(target: str, figure: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else "yes" if met else "no"
        lines.append(f"| {target} | {figure} | {verdict} |")

    kind = "fast" if any(upstream == "fast" for upstream, _ in results) else "computed"
    sizes = sorted(records for upstream, records in results if upstream == kind)
    size = TARGET_SIZE if TARGET_SIZE in sizes else sizes[-1]
    at = results[(kind, size)]
    limit, parse, naive, connector = (at[name].seconds for name in COMPETITORS)
    vs_limit = connector / limit if connector and limit else None
    vs_naive = connector / naive if connector and naive else None
    row(
        f"time ≤ {MAX_TIME_VS_LIMIT:g} × limit at {size:,} ({kind} upstream)",
        f"{vs_limit:.2f} ×" if vs_limit else "n/a",
        None if vs_limit is None else vs_limit <= MAX_TIME_VS_LIMIT,
    )
    row(
        f"time ≤ {MAX_TIME_VS_NAIVE:g} × naive at {size:,} ({kind} upstream)",
        f"{vs_naive:.2f} ×" if vs_naive else "n/a",
        None if vs_naive is None else vs_naive <= MAX_TIME_VS_NAIVE,
    )
    floor = parse / naive if parse and naive else None
    row(
        f"(for scale) reading and parsing the pages alone, no output, ÷ naive at {size:,}",
        f"{floor:.2f} ×" if floor else "n/a",
        None,
    )
    peaks: dict[int, float] = {}
    for (_, records), summaries in results.items():
        peaks[records] = max(peaks.get(records, 0.0), summaries["connector"].server_peak_mb)
    top = max(peaks.values())
    row(f"peak RSS ≤ {MAX_RSS_MB} MB (master + worker)", f"{top:.0f} MB", top <= MAX_RSS_MB)
    smallest, largest = min(peaks), max(peaks)
    growth = peaks[largest] - peaks[smallest]
    row(
        f"RSS flat (grows < {MAX_RSS_GROWTH_MB} MB) from {smallest:,} to {largest:,}",
        f"{peaks[smallest]:.0f} → {peaks[largest]:.0f} MB",
        None if smallest == largest else growth < MAX_RSS_GROWTH_MB,
    )
    # Within one upstream page: the first byte leaves once the connector has fetched one
    # page (the limit's first page) and converted it (its own time per page), with a
    # page's time to spare; the connector's answering all pages first would be far over.
    first_byte = at["connector"].first_byte
    limit_first = at["limit"].first_byte
    if first_byte is not None and connector and limit_first is not None:
        page = connector / math.ceil(size / PAGE_SIZE)
        row(
            f"first byte within one upstream page at {size:,} ({kind} upstream)",
            f"{first_byte * 1000:.0f} ms (the upstream's first page: {limit_first * 1000:.1f}"
            f" ms; the connector: {page * 1000:.1f} ms a page)",
            first_byte < limit_first + 2 * page,
        )
    else:
        row("first byte within one upstream page", "n/a", None)
    return lines


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.benchmarks.bench_feed",
        description="Time the feed against the upstream's limit and a naive connector.",
    )
    parser.add_argument(
        "--records",
        type=int,
        nargs="+",
        default=[100_000, 300_000, 1_000_000],
        help="collection sizes to run (default: 100000 300000 1000000)",
    )
    parser.add_argument(
        "--upstream",
        nargs="+",
        choices=UPSTREAMS,
        default=list(UPSTREAMS),
        help="fast: pages pre-encoded in memory (the connector's own cost); computed: "
        "pages computed per request, a slow upstream (default: both)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rotations of the three competitors per size (default 3)",
    )
    parser.add_argument(
        "--naive-max-records",
        type=int,
        default=1_000_000,
        help="skip the naive connector above this size",
    )
    parser.add_argument(
        "--naive-rss-cap-mb",
        type=int,
        default=4096,
        help="kill the naive connector (a failed run) above this RSS",
    )
    parser.add_argument(
        "--interval", type=float, default=0.05, help="seconds between RSS samples (default 0.05)"
    )
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds of rest between measurements (default 1)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip parsing the smallest size's bodies in full (it holds them "
        "in this process's memory)",
    )
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted(set(args.records))
    results: Results = {}
    loads: list[float] = []
    for upstream in [kind for kind in UPSTREAMS if kind in args.upstream]:
        for number, records in enumerate(sizes):
            verify_body = number == 0 and not args.no_verify
            results[(upstream, records)] = bench_size(records, upstream, args, verify_body, loads)
    loads.append(os.getloadavg()[0])
    text = report(results, args, loads)
    print(text, flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    f"{upstream} {records}": {
                        name: summary.as_json() for name, summary in summaries.items()
                    }
                    for (upstream, records), summaries in results.items()
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
