"""What both demos' command lines share: the address options and the threaded werkzeug
server that stops on SIGTERM. (The Records demo can also run under gunicorn: its
``__main__`` has that.)"""

from __future__ import annotations

import argparse
import signal

import flask
from werkzeug.serving import make_server


def add_address_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port, help="0 picks a free port")


def serve(app: flask.Flask, host: str, port: int, name: str) -> int:
    """Serve until Ctrl-C or SIGTERM, first saying where ``name`` listens (with ``--port 0``
    the only way to learn the port)."""
    server = make_server(host, port, app, threaded=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    shown = f"[{host}]" if ":" in host else host
    print(f"{name} listening on http://{shown}:{server.server_port}", flush=True)
    server.serve_forever()  # returns on KeyboardInterrupt (Ctrl-C, or SIGTERM below)
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """Docker and test harnesses stop us with SIGTERM; leave as cleanly as on Ctrl-C."""
    raise KeyboardInterrupt
