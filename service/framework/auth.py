"""HTTP basic auth for Sesam's calls, when the system config sets ``authentication``.

Off unless AUTH_USERNAME and AUTH_PASSWORD are set. ``/health`` stays open, for the
container's health check.
"""

from __future__ import annotations

import hmac

from flask import Flask
from flask import request

from service.framework.errors import Unauthorized
from service.framework.settings import Settings

OPEN_ENDPOINTS = frozenset({"health"})


def register_basic_auth(app: Flask, settings: Settings) -> None:
    if not settings.auth_username:
        return
    username = settings.auth_username.encode("utf-8")
    password = settings.auth_password.encode("utf-8")

    @app.before_request
    def require_basic_auth() -> None:
        if request.endpoint in OPEN_ENDPOINTS:
            return
        try:
            given = request.authorization
        except (ValueError, UnicodeError):  # werkzeug raises on non-ASCII or broken base64
            given = None
        if (
            given is not None
            and given.type == "basic"
            and hmac.compare_digest((given.username or "").encode("utf-8"), username)
            and hmac.compare_digest((given.password or "").encode("utf-8"), password)
        ):
            return
        raise Unauthorized(
            "this connector needs HTTP basic auth: set authentication, username and "
            "password in the Sesam system's config",
            headers={"WWW-Authenticate": 'Basic realm="connector"'},
        )
