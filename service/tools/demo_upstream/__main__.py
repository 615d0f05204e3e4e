"""The command line: ``python -m service.tools.demo_upstream --port 8000 --token demo-token``."""

from __future__ import annotations

import argparse
import os
import re
import sys

import flask

from service.tools.demo_upstream.app import ResourceConverter
from service.tools.demo_upstream.app import create_app
from service.tools.demo_upstream.pre_encoded import PreEncodedPages
from service.tools.demo_upstream.serving import add_address_options
from service.tools.demo_upstream.serving import serve
from service.tools.demo_upstream.store import MAX_LIMIT


def _synthetic_arg(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if not re.fullmatch(ResourceConverter.regex, name) or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=COUNT, got {text!r}")
    return name, int(count)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.demo_upstream",
        description="Serve an in-memory Records API for tests, demos and benchmarks.",
    )
    add_address_options(parser, port=8000)
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token clients must send (default: $DEMO_UPSTREAM_TOKEN, else demo-token)",
    )
    parser.add_argument("--no-seed", action="store_true", help="start without demo data")
    parser.add_argument(
        "--synthetic",
        action="append",
        nargs="+",
        type=_synthetic_arg,
        default=[],
        metavar="NAME=COUNT",
        help="add a computed read-only collection of COUNT records",
    )
    parser.add_argument("--tie-size", type=int, default=1000, help="records per shared time")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay per API request")
    parser.add_argument(
        "--pre-encoded",
        type=int,
        default=None,
        metavar="PAGE_SIZE",
        help="encode every page of the synthetic collections at this page size once at "
        "start and serve them from memory (benchmarks: the upstream then costs next to "
        "nothing)",
    )
    parser.add_argument(
        "--server",
        choices=("werkzeug", "gunicorn"),
        default="werkzeug",
        help="werkzeug closes every connection; gunicorn (one process, threaded) keeps "
        "them alive, as a real API would: the benchmarks use it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = args.token or os.environ.get("DEMO_UPSTREAM_TOKEN") or "demo-token"
    synthetic = dict(pair for group in args.synthetic for pair in group)
    try:
        app = create_app(
            token=token,
            seed=not args.no_seed,
            synthetic=synthetic,
            latency_ms=args.latency_ms,
            tie_size=args.tie_size,
        )
    except ValueError as exc:
        print(f"demo upstream: {exc}", file=sys.stderr)
        return 2
    if args.pre_encoded is not None:
        if not 1 <= args.pre_encoded <= MAX_LIMIT:
            print(f"demo upstream: --pre-encoded must be 1 to {MAX_LIMIT}", file=sys.stderr)
            return 2
        app.wsgi_app = PreEncodedPages(app, args.pre_encoded)  # type: ignore[method-assign]
    if args.server == "gunicorn":
        return _serve_with_gunicorn(app, args.host, args.port)
    return serve(app, args.host, args.port, "demo upstream")


def _serve_with_gunicorn(app: flask.Flask, host: str, port: int) -> int:
    """One worker (the data lives in its memory), threaded, with keep-alive."""
    from gunicorn.app.base import BaseApplication

    class DemoServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": 1,
                "threads": 16,
                "worker_class": "gthread",
                "keepalive": 75,
                "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> flask.Flask:
            return app

    print(f"demo upstream listening on http://{host}:{port} (gunicorn)", flush=True)
    DemoServer().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
