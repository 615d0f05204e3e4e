"""The command line: ``python -m service.tools.hostile_upstream --port P --other-port Q
--token T`` serves the main and the other origin on 127.0.0.1 until SIGTERM (or Ctrl-C)."""

from __future__ import annotations

import argparse
import signal
import sys

from service.tools.hostile_upstream.oauth import DEFAULT_EXPIRES_IN
from service.tools.hostile_upstream.server import HostileServer
from service.tools.hostile_upstream.state import State


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.hostile_upstream",
        description="Serve a Records API on loopback that misbehaves on demand, byte by byte.",
    )
    parser.add_argument("--port", type=int, default=0, help="the main origin (0: any free)")
    parser.add_argument("--other-port", type=int, default=0, help="the other origin (0: any free)")
    parser.add_argument("--token", required=True, help="the bearer token the API accepts")
    parser.add_argument("--client-id", help="the OAuth2 client the token endpoint knows")
    parser.add_argument("--client-secret", help="that client's secret")
    parser.add_argument(
        "--expires-in",
        type=float,
        default=DEFAULT_EXPIRES_IN,
        help="the lifetime of an issued token, in seconds",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = State(args.token, args.client_id, args.client_secret, args.expires_in)
    server = HostileServer(state, args.port, args.other_port)
    signal.signal(signal.SIGTERM, lambda signum, frame: state.stopping.set())
    server.start()
    main_url, other_url = state.urls["main"], state.urls["other"]
    # The fixture reads the ports from this line (with --port 0 the only way to learn them).
    print(f"hostile upstream listening on {main_url} (main) and {other_url} (other)", flush=True)
    try:
        while not state.stopping.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
