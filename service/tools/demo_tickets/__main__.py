"""The command line: ``python -m service.tools.demo_tickets --port 8100 --api-key demo-key``."""

from __future__ import annotations

import argparse
import os
import sys

from service.tools.demo_tickets.app import create_app
from service.tools.demo_upstream.serving import add_address_options
from service.tools.demo_upstream.serving import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.demo_tickets",
        description="Serve an in-memory Tickets API (page numbers, an API key, integer ids).",
    )
    add_address_options(parser, port=8100)
    parser.add_argument(
        "--api-key",
        default=None,
        help="the X-Api-Key clients must send (default: $DEMO_TICKETS_API_KEY, else demo-key)",
    )
    parser.add_argument("--no-seed", action="store_true", help="start without demo tickets")
    args = parser.parse_args(argv)
    key = args.api_key or os.environ.get("DEMO_TICKETS_API_KEY") or "demo-key"
    app = create_app(api_key=key, seed=not args.no_seed)
    return serve(app, args.host, args.port, "demo tickets API")


if __name__ == "__main__":
    sys.exit(main())
