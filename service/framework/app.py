"""The application factory's body, shared by every connector: ``build_app`` reads like a
table of contents of what a connector is."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask
from flask import Response
from flask import jsonify

from service.framework import deadlines
from service.framework.adapter import Adapter
from service.framework.auth import register_basic_auth
from service.framework.errors import register_error_handlers
from service.framework.feed import register_feed
from service.framework.memory import SLOTS_KEPT_FREE
from service.framework.memory import MemoryBudget
from service.framework.settings import Settings
from service.framework.settings import configure_logging
from service.framework.settings import load_settings
from service.framework.sink import Bodies
from service.framework.sink import Sink
from service.framework.transform import TransformEndpoint


class AppFactory:
    """``create_app(config=None)`` for one adapter and its settings class. Gunicorn calls
    it (``'service.<module>:create_app()'``, the fork's module); its ``settings_class``
    lets the gunicorn master check every setting before a worker starts."""

    def __init__(self, adapter_class: type[Adapter], settings_class: type[Settings]) -> None:
        self.adapter_class = adapter_class
        self.settings_class = settings_class

    def __call__(self, config: Mapping[str, str] | None = None) -> Flask:
        return build_app(self.adapter_class, self.settings_class, config)


def build_app(
    adapter_class: type[Adapter],
    settings_class: type[Settings],
    config: Mapping[str, str] | None = None,
) -> Flask:
    """The app for one adapter. ``config`` overrides the environment (tests use it)."""
    settings = load_settings(settings_class, {**os.environ, **(config or {})})
    configure_logging(settings.log_level)
    adapter = adapter_class(settings)
    app = Flask(adapter_class.__module__, static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_error_handlers(app)
    register_basic_auth(app, settings)
    register_health(app)
    deadlines.start()  # the thread that ends upstream requests at their deadlines
    budget = memory_budget(settings)  # one budget for feeds, sink and transform bodies
    register_feed(app, adapter, budget)
    bodies = Bodies(settings, budget)
    Sink(adapter, settings, bodies).register(app)
    TransformEndpoint(adapter, settings, bodies).register(app)
    return app


def memory_budget(settings: Settings) -> MemoryBudget:
    """The worker's budget: ``WORKER_MEMORY_BUDGET`` bytes, and ``THREADS`` less one
    requests at once (so ``/health`` always finds a thread)."""
    return MemoryBudget(settings.worker_memory_budget, settings.threads - SLOTS_KEPT_FREE)


def register_health(app: Flask) -> None:
    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok"})
