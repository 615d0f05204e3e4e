"""Gunicorn settings for a streaming service; read by the contract's command.

The app is the connector's own, as ``fork.toml`` names it (``wsgi_app``), so that the
contract's command, the image's CMD, names no module: a fork's app changes only its own
file. An app named on the command line (``module:create_app()``) is served instead.

Threaded workers: a sync worker is killed mid-stream when a feed outlasts its timeout.
They are gunicorn's gthread, hardened against slow and stalled clients
(``service/framework/worker.py``): heads read without a thread, ``CLIENT_TIMEOUT``.
Every setting of the app is checked here, in the master, so a missing variable stops
start-up with one clear line instead of a worker traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gunicorn.arbiter import Arbiter  # noqa: E402
from gunicorn.config import Config  # noqa: E402

from service.framework import __version__  # noqa: E402
from service.framework.settings import Settings  # noqa: E402
from service.framework.settings import load_settings_or_exit  # noqa: E402
from service.framework.worker import ConnectorWorker  # noqa: E402


def _app() -> str:
    """The app named on the command line, else the connector's own (``fork.toml``)."""
    args = Config().parser().parse_args(sys.argv[1:]).args
    if args:
        return args[-1]
    path = os.path.join(ROOT, "fork.toml")
    try:
        with open(path, "rb") as file:
            return str(tomllib.load(file)["app"])
    except OSError as error:
        problem = f"cannot read {path} ({error.strerror})"
    except (KeyError, tomllib.TOMLDecodeError):
        problem = f'{path} names no app (app = "service.<module>:create_app()")'
    raise SystemExit(f"configuration error: no app to serve: {problem}")


def _settings_class(app: str) -> type[Settings]:
    """The settings class of the app (``module:create_app()``)."""
    module, _, factory = app.partition(":")
    create_app = getattr(importlib.import_module(module), factory.split("(")[0] or "app", None)
    return getattr(create_app, "settings_class", Settings)


wsgi_app = _app()
_settings = load_settings_or_exit(_settings_class(wsgi_app))

bind = f"0.0.0.0:{_settings.port}"
ConnectorWorker.client_timeout = _settings.client_timeout  # workers inherit it at fork
worker_class = "service.framework.worker.ConnectorWorker"
workers = _settings.workers
threads = _settings.threads
# Connections per worker, idle or in flight (a stalled one holds a socket and at most 64 KB).
worker_connections = 256
# A feed of a large collection streams for many minutes; gthread workers heartbeat
# from their main loop, so this is the silence allowed, not a cap on a response.
timeout = 120
graceful_timeout = 20  # below docker-compose's stop_grace_period (30s)
keepalive = 75
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
# gunicorn 25+ opens a control socket, by default at one path per user: stopping one
# instance removed the socket of every other. One path per instance (the master's pid).
control_socket = os.path.join(tempfile.gettempdir(), f"gunicorn-{os.getpid()}.ctl")


def on_starting(server: Arbiter) -> None:
    """One line in the log (Sesam's status page) that says what runs: the app, and the
    framework's release (CHANGELOG.md)."""
    server.log.info("serving %s on framework %s", wsgi_app, __version__)
