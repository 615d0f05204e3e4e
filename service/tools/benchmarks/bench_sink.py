"""The sink benchmark: this connector and a naive sink, side by side, in one run.

Why: issue 3 asks for at least 5 times the entities per second of the approach a sink
usually starts as. Both competitors run under gunicorn with the contract's command and
the connector's default settings (1 worker, 32 threads), in front of the demo Records API
started with ``--latency-ms 5`` (every upstream request takes 5 ms, like a near SaaS API):

- ``naive``: ``create_naive_app`` below, what a first sink looks like: for each entity
  of a batch, in turn, one ``requests.put`` or ``requests.delete`` (no session, so a new
  connection each time).
- ``connector``: this connector (pooled connections, ``SINK_CONCURRENCY`` writes at once),
  pushed to as an incremental sync and as a full sync with deletion detection on; the
  framework's reference adapter (``service.tools.reference``), not a fork's module.
- ``limit``: no sink at all: this process writes every entity straight to the upstream
  with the connector's own client and mapping, 8 writes at once. What the connector can
  at best reach on this machine; ``connector / limit`` shows what the sink itself costs.

The driver pushes the same entities as Sesam's ``json`` sink does
(``service.tools.sesam_client``): batches of 100, one after the other, over one keep-alive
session, every sync ending with an empty batch.
Before each run the collection is emptied; after it, the upstream is checked to hold
every entity. The competitors run in rotation, ``--repeat`` times each, at each
``--latency-ms`` (default 0 and 5: a sink's own cost shows at 0, the waiting at 5);
medians are reported, because the machine is shared and noisy. *CPU (s) / 1k* is the CPU
time of a server's processes per 1,000 entities.

First, in this process, the cost of parsing one batch of 100 entities as Sesam sends it,
with the standard library and with ``parse_body`` (orjson), whole, and as the sink walks
it (one entity at a time with the standard library's decoder, twice, to bound its
memory): time per batch, and the memory the parsed batch holds.

From the repository root:

    .venv/bin/python -m service.tools.benchmarks.bench_sink --entities 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from service.tools.benchmarks.servers import REFERENCE_APP
from service.tools.benchmarks.servers import RESOURCE
from service.tools.benchmarks.servers import TOKEN
from service.tools.benchmarks.servers import Server
from service.tools.benchmarks.servers import machine
from service.tools.benchmarks.servers import naive_app
from service.tools.benchmarks.servers import start_app
from service.tools.benchmarks.servers import start_demo_upstream
from service.tools.benchmarks.servers import stop_all
from service.tools.sesam_client import Sequence
from service.tools.sesam_client import SesamClient

NAIVE_APP = "service.tools.benchmarks.bench_sink:create_naive_app()"
BATCH_SIZE = 100
LATENCY_MS = 5.0
TARGET_RATIO = 5.0
COMPETITORS = ("limit", "naive", "connector", "connector-full")
LIMIT_CONCURRENCY = 8  # SINK_CONCURRENCY's default


# --- the naive sink ---------------------------------------------------------------------


def create_naive_app() -> Any:
    """A sink as first written: sequential, one new connection per entity."""
    import flask

    app, upstream, headers = naive_app(__name__)

    @app.post("/<resource>")
    def sink(resource: str) -> Any:
        for entity in flask.request.get_json(force=True):
            url = f"{upstream}/{resource}/{quote(entity['_id'], safe='')}"
            if entity.get("_deleted") is True:
                response = requests.delete(url, headers=headers, timeout=60)
                if response.status_code not in (204, 404):
                    response.raise_for_status()
            else:
                body = {k: v for k, v in entity.items() if not k.startswith("_")}
                requests.put(url, json=body, headers=headers, timeout=60).raise_for_status()
        return {"ok": True}

    return app


# --- servers ----------------------------------------------------------------------------


def start_servers(
    directory: Path, latency_ms: float, settings: dict[str, str] | None = None
) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    try:
        servers["upstream"] = start_demo_upstream(directory, "--latency-ms", str(latency_ms))
        upstream = servers["upstream"].url
        servers["naive"] = start_app(
            "naive", NAIVE_APP, upstream, directory, FULL_SYNC_DELETE="true"
        )
        servers["connector"] = start_app(
            "connector",
            REFERENCE_APP,
            upstream,
            directory,
            FULL_SYNC_DELETE="true",
            **(settings or {}),
        )
    except BaseException:
        stop_all(servers)
        raise
    return servers


# --- the runs ---------------------------------------------------------------------------


def make_entities(count: int) -> list[dict[str, Any]]:
    """About 350 bytes each, with Sesam's reserved fields and typed strings."""
    return [
        {
            "_id": f"e-{i:07d}",
            "_updated": i,
            "_hash": f"{i:032x}",
            "_deleted": False,
            "name": f"Person {i}",
            "email": f"person.{i}@example.com",
            "born": f"~t19{i % 100:02d}-0{i % 9 + 1}-1{i % 10}",
            "balance": f"~f{i * 7 % 100000}.{i % 100:02d}",
            "company": f"~:crm:company-{i % 50}",
            "address": {"street": f"Storgata {i % 300}", "city": "Tromsø", "country": "NO"},
            "tags": ["customer", "nordic"] if i % 2 else ["supplier"],
        }
        for i in range(count)
    ]


def reset_collection(upstream: str) -> None:
    requests.post(f"{upstream}/_admin/reset", json={"seed": False}, timeout=60).raise_for_status()
    requests.post(f"{upstream}/_admin/collections/{RESOURCE}", timeout=60).raise_for_status()


def push(url: str, entities: list[dict[str, Any]], full: bool) -> float:
    """Every batch as Sesam sends it, the final empty one included; answers the seconds."""
    sequence = Sequence(full=full, new_id=lambda: str(uuid.uuid4()), always_flags=True)
    client = SesamClient(f"{url}/{RESOURCE}", timeout=600)
    try:
        started = time.perf_counter()
        answers = client.push(entities, sequence, batch_size=BATCH_SIZE)
        if answers[-1].status_code != 200:
            raise RuntimeError(f"{url}: {answers[-1].status_code} {answers[-1].text[:300]}")
        return time.perf_counter() - started
    finally:
        client.close()


def verify(upstream: str, entities: list[dict[str, Any]]) -> None:
    records = requests.get(f"{upstream}/_admin/records/{RESOURCE}", timeout=60).json()
    live = {r["id"] for r in records if not r["deleted"]}
    missing = len({e["_id"] for e in entities} - live)
    if missing or len(live) != len(entities):
        raise RuntimeError(f"the upstream holds {len(live)} records; {missing} entities missing")


@dataclasses.dataclass
class Run:
    rate: float  # entities per second
    sink_cpu_ms: float | None  # CPU milliseconds per entity in the sink's processes
    upstream_cpu_ms: float  # the same, in the upstream


def push_direct(upstream: str, entities: list[dict[str, Any]]) -> float:
    """The limit: this process writes straight to the upstream with the connector's own
    client, as many writes at once as the connector, no sink in between."""
    from service.framework.settings import load_settings
    from service.tools.reference import Records
    from service.tools.reference import ReferenceSettings

    records = Records(
        load_settings(ReferenceSettings, {"UPSTREAM_URL": upstream, "UPSTREAM_TOKEN": TOKEN})
    )
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=LIMIT_CONCURRENCY) as pool:
            for batch in (
                entities[i : i + BATCH_SIZE] for i in range(0, len(entities), BATCH_SIZE)
            ):
                list(
                    pool.map(
                        lambda e: records.upsert(RESOURCE, e["_id"], records.to_record(e)), batch
                    )
                )
        return time.perf_counter() - started
    finally:
        records.client.close()


def run_once(name: str, servers: dict[str, Server], entities: list[dict[str, Any]]) -> Run:
    upstream = servers["upstream"].url
    reset_collection(upstream)
    if name == "limit":
        cpu = servers["upstream"].cpu_seconds()
        seconds = push_direct(upstream, entities)
        upstream_cpu = servers["upstream"].cpu_seconds() - cpu
        verify(upstream, entities)
        return Run(len(entities) / seconds, None, upstream_cpu * 1000 / len(entities))
    if name == "connector-full":
        # Records the full sync did not send, for deletion detection to find.
        requests.post(
            f"{upstream}/_admin/records/{RESOURCE}",
            json=[{"id": f"stale-{i}"} for i in range(100)],
            timeout=60,
        ).raise_for_status()
    server = servers["naive" if name == "naive" else "connector"]
    cpu = (server.cpu_seconds(), servers["upstream"].cpu_seconds())
    seconds = push(server.url, entities, full=name == "connector-full")
    sink_cpu = server.cpu_seconds() - cpu[0]
    upstream_cpu = servers["upstream"].cpu_seconds() - cpu[1]
    verify(upstream, entities)
    count = len(entities)
    return Run(count / seconds, sink_cpu * 1000 / count, upstream_cpu * 1000 / count)


def _median(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)  # type: ignore


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --- parsing one batch ------------------------------------------------------------------


def parse_costs(repeat: int = 200) -> dict[str, dict[str, float]]:
    """One batch of BATCH_SIZE entities as Sesam sends it, parsed ``repeat`` times by the
    standard library and by the sink's ``parse_body``: the median milliseconds, and the
    bytes the parsed batch holds (tracemalloc, so Python's own allocations only)."""
    from service.framework.sink import _reject_constant
    from service.framework.sink import body_text
    from service.framework.sink import parse_body
    from service.framework.sink import walk

    def sink_walk(data: bytes) -> None:
        """What the sink does: the body walked one entity at a time, twice (a check of
        every entity, then the writes), holding one entity at a time."""
        text = body_text(data)
        for _ in range(2):
            for _entity in walk(text):
                pass

    body = json.dumps(make_entities(BATCH_SIZE)).encode("utf-8")
    parsers = {
        "stdlib json": lambda data: json.loads(data, parse_constant=_reject_constant),
        "parse_body (orjson)": parse_body,
        "the sink's walk (stdlib, 2 passes)": sink_walk,
    }
    costs: dict[str, dict[str, float]] = {}
    assert list(walk(body_text(body))) == json.loads(body)
    for name, parse in parsers.items():
        assert parse(body) in (None, json.loads(body))
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            parse(body)
            times.append(time.perf_counter() - started)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        parsed = parse(body)
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del parsed
        costs[name] = {
            "body_bytes": len(body),
            "ms": statistics.median(times) * 1000,
            "held_bytes": held - before,
            "peak_bytes": peak - before,
        }
    return costs


# --- the benchmark ----------------------------------------------------------------------


def run_latency(
    latency_ms: float, args: argparse.Namespace, settings: dict[str, str], entities: list[Any]
) -> dict[str, Any]:
    """Every competitor ``args.repeat`` times, in rotation, against fresh servers."""
    runs: dict[str, list[Run]] = {name: [] for name in COMPETITORS}
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as directory:
        servers = start_servers(Path(directory), latency_ms, settings)
        try:
            for _ in range(args.repeat):
                for name in COMPETITORS:
                    runs[name].append(run_once(name, servers, entities))
        finally:
            stop_all(servers)
    rates = {name: statistics.median(r.rate for r in values) for name, values in runs.items()}
    sink_cpu = {name: _median([r.sink_cpu_ms for r in values]) for name, values in runs.items()}
    upstream_cpu = {
        name: statistics.median(r.upstream_cpu_ms for r in values) for name, values in runs.items()
    }
    ratio = rates["connector"] / rates["naive"]
    return {
        "upstream_latency_ms": latency_ms,
        "entities_per_second": {k: round(v, 1) for k, v in rates.items()},
        "all_runs": {k: [round(r.rate, 1) for r in vs] for k, vs in runs.items()},
        # CPU milliseconds per entity are CPU seconds per 1,000 entities
        "sink_cpu_seconds_per_1k": {
            k: None if v is None else round(v, 2) for k, v in sink_cpu.items()
        },
        "upstream_cpu_seconds_per_1k": {k: round(v, 2) for k, v in upstream_cpu.items()},
        "ratio_connector_to_naive": round(ratio, 2),
        "ratio_full_sync_to_naive": round(rates["connector-full"] / rates["naive"], 2),
        "ratio_connector_to_limit": round(rates["connector"] / rates["limit"], 2),
        "target_met": ratio >= TARGET_RATIO,
    }


LABELS = {
    "limit": "limit (client straight to upstream)",
    "naive": "naive (sequential, no session)",
    "connector": "connector, incremental",
    "connector-full": "connector, full sync + deletion",
}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['entities']} entities in batches of {BATCH_SIZE}, median of "
        f"{result['repeat']} runs ({result['machine']})",
    ]
    if result["connector_settings"]:
        settings = result["connector_settings"]
        lines.append("connector settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    lines += [
        "",
        "| parser, one batch of 100 entities | body (KB) | time (ms) | parsed batch holds (KB) "
        "| peak while parsing (KB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, cost in result["parse"].items():
        lines.append(
            f"| {name} | {cost['body_bytes'] / 1024:.1f} | {cost['ms']:.3f} "
            f"| {cost['held_bytes'] / 1024:.0f} | {cost['peak_bytes'] / 1024:.0f} |"
        )
    lines += [
        "",
        "| upstream latency (ms) | sink | entities/s | vs naive | sink CPU (s) / 1k "
        "| upstream CPU (s) / 1k |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for at in result["latencies"]:
        rates = at["entities_per_second"]
        for name in COMPETITORS:
            lines.append(
                f"| {at['upstream_latency_ms']:g} | {LABELS[name]} | {rates[name]:.0f} "
                f"| {rates[name] / rates['naive']:.1f}× "
                f"| {_ms(at['sink_cpu_seconds_per_1k'][name])} "
                f"| {at['upstream_cpu_seconds_per_1k'][name]:.2f} |"
            )
    lines.append("")
    for at in result["latencies"]:
        verdict = "met" if at["target_met"] else "NOT met"
        lines.append(
            f"at {at['upstream_latency_ms']:g} ms: target connector >= {TARGET_RATIO:g}x naive: "
            f"{verdict} ({at['ratio_connector_to_naive']:.1f}x); "
            f"connector / limit: {at['ratio_connector_to_limit']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.benchmarks.bench_sink", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--entities", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0, LATENCY_MS],
        help="upstream latencies to run at, in turn (default: 0 5)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a connector setting other than its default, e.g. SINK_CONCURRENCY=16",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    entities = make_entities(args.entities)
    load_before = os.getloadavg()[0]
    parse = parse_costs()
    latencies = [run_latency(ms, args, settings, entities) for ms in args.latency_ms]
    result = {
        "entities": args.entities,
        "batch_size": BATCH_SIZE,
        "repeat": args.repeat,
        "connector_settings": settings,
        "target_ratio": TARGET_RATIO,
        "parse": parse,
        "latencies": latencies,
        "machine": f"{machine()}, load average {load_before:.1f} "
        f"before and {os.getloadavg()[0]:.1f} after",
    }
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
