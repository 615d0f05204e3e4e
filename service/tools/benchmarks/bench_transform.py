"""The transform benchmark: the connector's HTTP transform and a naive one, side by side.

Why: issue 10 asks how fast the reference transform (``<collection>-record``: one upstream
lookup per entity) runs against the transform one usually starts with. Both run under
gunicorn with the contract's command and the connector's defaults (1 worker, 32 threads),
in front of the demo Records API started with ``--latency-ms 5`` (every upstream request
takes 5 ms, like a near SaaS API):

- ``naive``: ``create_naive_app`` below: for each entity of a batch, in turn, one
  ``requests.get`` of its record (no session, so a new connection each time).
- ``connector``: ``POST /transform/<collection>-record``: pooled connections,
  ``SINK_CONCURRENCY`` lookups at once; the framework's reference adapter
  (``service.tools.reference``), not a fork's module, as in the feed and sink benchmarks.

The driver posts batches of 100 (the http transform's default ``batch_size``) with the
tools' Sesam client (``service.tools.sesam_client``), one after the other, over one
keep-alive session, as a pipe does, and checks that both answer the same entities. The
competitors run in rotation, ``--repeat`` times each; medians are reported, because the
machine is shared and noisy. *CPU (s) / 1k* is the CPU time of a transform's server
processes per 1,000 entities (the connector walks each batch one entity at a time with
the standard library's decoder, as its sink does, to bound its memory).

From the repository root:

    .venv/bin/python -m service.tools.benchmarks.bench_transform --entities 2000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from service.tools.benchmarks.servers import REFERENCE_APP
from service.tools.benchmarks.servers import RESOURCE
from service.tools.benchmarks.servers import Server
from service.tools.benchmarks.servers import machine
from service.tools.benchmarks.servers import naive_app
from service.tools.benchmarks.servers import start_app
from service.tools.benchmarks.servers import start_demo_upstream
from service.tools.benchmarks.servers import stop_all
from service.tools.sesam_client import SesamClient

NAIVE_APP = "service.tools.benchmarks.bench_transform:create_naive_app()"
BATCH_SIZE = 100
LATENCY_MS = 5.0
COMPETITORS = ("naive", "connector")


def create_naive_app() -> Any:
    """A transform as first written: sequential, one new connection per lookup."""
    import flask

    app, upstream, headers = naive_app(__name__)

    @app.post("/transform/<collection>-record")
    def transform(collection: str) -> Any:
        out = []
        for entity in flask.request.get_json(force=True):
            url = f"{upstream}/{collection}/{quote(entity['_id'], safe='')}"
            response = requests.get(url, headers=headers, timeout=60)
            found = response.status_code == 200
            if not found and response.status_code != 404:
                response.raise_for_status()
            record = response.json() if found else None
            out.append({**entity, "records:found": found, "records:record": record})
        return flask.jsonify(out)

    return app


def start_servers(directory: Path, latency_ms: float, count: int) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    try:
        servers["upstream"] = start_demo_upstream(directory, "--latency-ms", str(latency_ms))
        upstream = servers["upstream"].url
        requests.post(f"{upstream}/_admin/collections/{RESOURCE}", timeout=60).raise_for_status()
        records = [
            {"id": f"r-{i:07d}", "updated_at": "2026-01-01T00:00:00.000000Z", "n": i}
            for i in range(0, count, 2)  # every other entity has a record, the rest do not
        ]
        requests.post(
            f"{upstream}/_admin/records/{RESOURCE}", json=records, timeout=120
        ).raise_for_status()
        for name, app in (("naive", NAIVE_APP), ("connector", REFERENCE_APP)):
            servers[name] = start_app(name, app, upstream, directory, LOG_LEVEL="WARNING")
    except BaseException:
        stop_all(servers)
        raise
    return servers


def run_once(url: str, entities: list[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    """Every batch as a pipe sends it; answers the entities per second and the output."""
    out: list[dict[str, Any]] = []
    client = SesamClient(f"{url}/transform/{RESOURCE}-record", timeout=600)
    try:
        started = time.perf_counter()
        for i in range(0, len(entities), BATCH_SIZE):
            response = client.post(entities[i : i + BATCH_SIZE])
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
            out.extend(response.json())
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return len(entities) / seconds, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.benchmarks.bench_transform",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    entities = [
        {"_id": f"r-{i:07d}", "_updated": i, "name": f"E {i}"} for i in range(args.entities)
    ]
    rates: dict[str, list[float]] = {name: [] for name in COMPETITORS}
    cpu: dict[str, list[float]] = {name: [] for name in COMPETITORS}
    with tempfile.TemporaryDirectory(prefix="bench-transform-") as directory:
        servers = start_servers(Path(directory), args.latency_ms, args.entities)
        try:
            for _ in range(args.repeat):
                outputs = {}
                for name in COMPETITORS:
                    before = servers[name].cpu_seconds()
                    rate, outputs[name] = run_once(servers[name].url, entities)
                    rates[name].append(rate)
                    used = servers[name].cpu_seconds() - before
                    cpu[name].append(used * 1000 / len(entities))
                if outputs["naive"] != outputs["connector"]:
                    raise RuntimeError("the naive and the connector's transform answered apart")
                if [e["_id"] for e in outputs["connector"]] != [e["_id"] for e in entities]:
                    raise RuntimeError("the transform lost the batch's order")
        finally:
            stop_all(servers)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    ratio = medians["connector"] / medians["naive"]
    result = {
        "entities": args.entities,
        "batch_size": BATCH_SIZE,
        "repeat": args.repeat,
        "upstream_latency_ms": args.latency_ms,
        "entities_per_second": {k: round(v, 1) for k, v in medians.items()},
        "cpu_seconds_per_1k": {k: round(v, 3) for k, v in cpu_medians.items()},
        "all_runs": {k: [round(r, 1) for r in vs] for k, vs in rates.items()},
        "ratio_connector_to_naive": round(ratio, 2),
        "machine": f"{machine()}, load average {os.getloadavg()[0]:.1f}",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.entities} entities (half of them with a record) in batches of {BATCH_SIZE}, "
        f"upstream latency {args.latency_ms:g} ms per request, median of {args.repeat} runs "
        f"({result['machine']})"
    )
    print(f"{'transform':<34} {'entities/s':>10} {'vs naive':>9} {'CPU (s) / 1k':>13}")
    labels = {
        "naive": "naive (sequential, no session)",
        "connector": "connector (<collection>-record)",
    }
    for name in COMPETITORS:
        print(
            f"{labels[name]:<34} {medians[name]:>10.1f} {medians[name] / medians['naive']:>8.1f}x"
            f" {cpu_medians[name]:>13.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
