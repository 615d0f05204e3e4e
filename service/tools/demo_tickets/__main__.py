"""The command line: ``python -m service.tools.demo_tickets --port 8100 --api-key demo-key``."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from werkzeug.serving import make_server

from service.tools.demo_tickets.app import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.demo_tickets",
        description="Serve an in-memory Tickets API (page numbers, an API key, integer ids).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        default=None,
        help="the X-Api-Key clients must send (default: $DEMO_TICKETS_API_KEY, else demo-key)",
    )
    parser.add_argument("--no-seed", action="store_true", help="start without demo tickets")
    args = parser.parse_args(argv)
    key = args.api_key or os.environ.get("DEMO_TICKETS_API_KEY") or "demo-key"
    app = create_app(api_key=key, seed=not args.no_seed)
    server = make_server(args.host, args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"demo tickets API listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
