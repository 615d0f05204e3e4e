"""Settings: read once at start-up from UPPER_CASE environment variables.

Every variable is declared once in ``VARIABLES``; the README's configuration table is
checked against this list by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A variable is missing or malformed; the message names it."""


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < number < 86400:
        raise ValueError("must be a number of seconds above 0")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _directory(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a directory")
    return value


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    parse: Callable[[str], Any]
    default: str | None  # None: required
    secret: bool
    meaning: str

    @property
    def field(self) -> str:
        return self.name.lower()


VARIABLES: tuple[Variable, ...] = (
    Variable("UPSTREAM_URL", _url, None, False, "Base URL of the Records API."),
    Variable("UPSTREAM_TOKEN", _text, None, True, "Bearer token for the Records API."),
    Variable("PORT", _int_between(1, 65535), "5000", False, "Port gunicorn binds on 0.0.0.0."),
    Variable("LOG_LEVEL", _log_level, "INFO", False, "DEBUG, INFO, WARNING or ERROR."),
    Variable(
        "WORKERS",
        _int_between(1, 64),
        "1",
        False,
        "Gunicorn worker processes (each about 40 to 55 MB RSS).",
    ),
    Variable("THREADS", _int_between(1, 256), "8", False, "Threads per gunicorn worker."),
    Variable(
        "UPSTREAM_PAGE_SIZE",
        _int_between(1, 1000),
        "1000",
        False,
        "Records asked for per upstream list request.",
    ),
    Variable(
        "UPSTREAM_CONNECT_TIMEOUT",
        _seconds,
        "10",
        False,
        "Seconds to wait for a connection to the upstream.",
    ),
    Variable(
        "UPSTREAM_READ_TIMEOUT",
        _seconds,
        "60",
        False,
        "Seconds to wait for an upstream answer.",
    ),
    Variable(
        "UPSTREAM_RETRIES",
        _int_between(0, 100),
        "10",
        False,
        "Retries of one upstream request (429, 502, 503, 504, dropped connections).",
    ),
    Variable(
        "UPSTREAM_RETRY_BUDGET",
        _seconds,
        "120",
        False,
        "Most seconds one upstream request may spend waiting between retries.",
    ),
    Variable(
        "UPSTREAM_POOL_SIZE",
        _int_between(1, 256),
        "32",
        False,
        "Pooled connections to the upstream per worker process.",
    ),
    Variable(
        "SINK_MAX_BODY_BYTES",
        _int_between(1, 2**31),
        "8388608",
        False,
        "Largest sink request body accepted (413 above it); a batch costs about 7 times "
        "its size in memory while it is handled.",
    ),
    Variable(
        "SINK_CONCURRENCY",
        _int_between(1, 64),
        "8",
        False,
        "Upstream writes in flight at once for one sink batch.",
    ),
    Variable(
        "STATE_DIR",
        _directory,
        "/tmp/connector-state",
        False,
        "Directory for the full-sync sequence state (an SQLite file).",
    ),
    Variable(
        "FULL_SYNC_DELETE",
        _bool,
        "false",
        False,
        "Delete upstream records a full sync did not send, when it ends.",
    ),
    Variable(
        "FULL_SYNC_ALLOW_EMPTY_DELETE",
        _bool,
        "false",
        False,
        "Let a full sync that sent no entities delete every record.",
    ),
    Variable(
        "AUTH_USERNAME",
        str,
        "",
        False,
        "With AUTH_PASSWORD: the user Sesam must send (HTTP basic auth). Unset: no auth.",
    ),
    Variable(
        "AUTH_PASSWORD",
        str,
        "",
        True,
        "With AUTH_USERNAME: the password Sesam must send.",
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    upstream_url: str
    upstream_token: str = dataclasses.field(repr=False)
    port: int
    log_level: str
    workers: int
    threads: int
    upstream_page_size: int
    upstream_connect_timeout: float
    upstream_read_timeout: float
    upstream_retries: int
    upstream_retry_budget: float
    upstream_pool_size: int
    sink_max_body_bytes: int
    sink_concurrency: int
    state_dir: str
    full_sync_delete: bool
    full_sync_allow_empty_delete: bool
    auth_username: str
    auth_password: str = dataclasses.field(repr=False)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every variable; the first missing or malformed one raises ConfigError."""
    if environ is None:
        environ = os.environ
    values: dict[str, Any] = {}
    for variable in VARIABLES:
        raw = environ.get(variable.name)
        if raw is None or raw == "":
            if variable.default is None:
                raise ConfigError(f"{variable.name} is required: {variable.meaning}")
            raw = variable.default
        try:
            values[variable.field] = variable.parse(raw)
        except ValueError as error:
            shown = "(secret)" if variable.secret else repr(raw)
            raise ConfigError(f"{variable.name}={shown} {error}") from None
    if bool(values["auth_username"]) != bool(values["auth_password"]):
        raise ConfigError("AUTH_USERNAME and AUTH_PASSWORD go together: set both or neither")
    return Settings(**values)


def load_settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For start-up: one clear line on stderr and exit status 2, never a traceback."""
    try:
        return load_settings(environ)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def configure_logging(level: str) -> None:
    """Standard logging to stdout, configured once per process."""
    root = logging.getLogger()
    if not any(getattr(h, "_connector", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._connector = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
