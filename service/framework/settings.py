"""Settings: read once at start-up from UPPER_CASE environment variables.

Every variable is declared once, as a field of a settings class made with ``setting()``:
name, how to read it, default, secret, meaning. The framework's own are the fields of
``Settings``; a fork subclasses it beside its adapter and declares its upstream's there.
A test checks the configuration table in the docs (docs/configuration.md) against these
declarations.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import TypeVar
from urllib.parse import urlsplit

from service.framework import masking


class ConfigError(Exception):
    """A variable is missing or malformed; the message names it."""


def url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        # requests would send user:password as basic auth instead of the token, and every
        # error message and log line that names a URL would print it.
        raise ValueError("must not hold credentials (user:password@): use the token setting")
    return value.rstrip("/")


def shown(value: str) -> str:
    """A value as an error message may print it: any URL credentials left out."""
    parts = urlsplit(value)
    if "@" in parts.netloc:
        value = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
    return repr(value)


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < number < 86400:
        raise ValueError("must be a number of seconds above 0")
    return number


def seconds_or_zero(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 <= number < 86400:
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def seconds_or_unset(value: str) -> float | None:
    """Seconds (0 or more), or None for a variable left unset (its default, ""): for a
    setting that overrides what the adapter declares only when the operator sets it."""
    return None if value == "" else seconds_or_zero(value)


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def logging_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def directory(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a directory")
    return value


@dataclasses.dataclass(frozen=True)
class Variable:
    """One environment variable: the single declaration of a setting."""

    name: str
    parse: Callable[[str], Any]
    default: str | None  # None: required
    secret: bool
    meaning: str
    multiline: bool = False  # line breaks and tabs allowed (a PEM key); other controls never


def setting(
    name: str,
    parse: Callable[[str], Any],
    *,
    default: str | None = None,
    secret: bool = False,
    meaning: str,
    multiline: bool = False,
) -> Any:
    """Declare a setting as a field of a settings class: its variable, how to read it, its
    default (None: required), whether it is a secret (never printed, masked wherever it
    would show), what it means. Control characters are refused in every value (a token
    copied with its line break would fail every request, quoting the token in the error);
    ``multiline`` lets line breaks and tabs through, for a value such as a PEM key."""
    return dataclasses.field(
        metadata={"variable": Variable(name, parse, default, secret, meaning, multiline)},
        repr=not secret,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The framework's settings. A fork subclasses this class in its adapter module and
    declares its upstream's own settings there, each with ``setting(...)``."""

    port: int = setting(
        "PORT", int_between(1, 65535), default="5000", meaning="Port gunicorn binds on 0.0.0.0."
    )
    log_level: str = setting(
        "LOG_LEVEL",
        logging_level,
        default="INFO",
        meaning="DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    workers: int = setting(
        "WORKERS",
        int_between(1, 64),
        default="1",
        meaning="Gunicorn worker processes (each about 40 to 55 MB RSS).",
    )
    threads: int = setting(
        "THREADS",
        int_between(1, 256),
        default="32",
        meaning="Threads per gunicorn worker: requests served at once, one kept free for "
        "/health (feeds and batches beyond the rest get 503; a stalled client holds one "
        "for at most CLIENT_TIMEOUT).",
    )
    client_timeout: float = setting(
        "CLIENT_TIMEOUT",
        seconds,
        default="30",
        meaning="Seconds a client may stall while it sends its request or reads the answer; "
        "then its connection is closed.",
    )
    upstream_connect_timeout: float = setting(
        "UPSTREAM_CONNECT_TIMEOUT",
        seconds,
        default="10",
        meaning="Seconds to wait for a connection to the upstream.",
    )
    upstream_read_timeout: float = setting(
        "UPSTREAM_READ_TIMEOUT",
        seconds,
        default="60",
        meaning="Seconds to wait for an upstream answer.",
    )
    upstream_retries: int = setting(
        "UPSTREAM_RETRIES",
        int_between(0, 100),
        default="10",
        meaning="Retries of one upstream request (429, 502, 503, 504, dropped connections; "
        "POST and PATCH only on a 429 or a 503 with Retry-After).",
    )
    upstream_feed_retry_budget: float = setting(
        "UPSTREAM_FEED_RETRY_BUDGET",
        seconds,
        default="120",
        meaning="Most seconds one upstream request of the feed may spend waiting between "
        "retries: a failed feed restarts Sesam's whole run, so it rides out an outage.",
    )
    upstream_sink_retry_budget: float = setting(
        "UPSTREAM_SINK_RETRY_BUDGET",
        seconds,
        default="5",
        meaning="Most seconds one upstream request of a sink or transform batch may spend "
        "waiting between retries: Sesam retries the batch itself, so fail fast.",
    )
    upstream_request_deadline: float = setting(
        "UPSTREAM_REQUEST_DEADLINE",
        seconds,
        default="180",
        meaning="Most seconds one upstream request may take in all: connecting, the answer's "
        "head and whole body, retries and the waits between them (an upstream that trickles "
        "its answer is cut off here; UPSTREAM_READ_TIMEOUT bounds each wait within it).",
    )
    upstream_sink_deadline: float = setting(
        "UPSTREAM_SINK_DEADLINE",
        seconds,
        default="60",
        meaning="Most seconds the upstream requests of one sink or transform batch may take in "
        "all, attempts and waits included: past it the batch fails (504) and Sesam retries it.",
    )
    upstream_max_answer_bytes: int = setting(
        "UPSTREAM_MAX_ANSWER_BYTES",
        int_between(1024, 2**31),
        default="8388608",
        meaning="Largest upstream answer read, on the wire and after decompression; a larger "
        "one fails the request (the feed's run, the batch) with a 502 naming it.",
    )
    upstream_max_record_bytes: int = setting(
        "UPSTREAM_MAX_RECORD_BYTES",
        int_between(1024, 2**31),
        default="1048576",
        meaning="Largest upstream record, as the entity's JSON text: a larger one fails the "
        "feed's run (502, or a broken stream) naming it.",
    )
    upstream_pool_size: int = setting(
        "UPSTREAM_POOL_SIZE",
        int_between(1, 256),
        default="32",
        meaning="Pooled connections to the upstream per worker process.",
    )
    feed_settle_seconds: float | None = setting(
        "FEED_SETTLE_SECONDS",
        seconds_or_unset,
        default="",
        meaning="Records changed in the last this many seconds (by this connector's clock) "
        "are delivered with a provisional _updated, and the next run asks again from the "
        "start of that window: for upstreams whose times are coarse or whose writes can "
        "land with a time already read. 0: off. Unset: the adapter's settle_seconds.",
    )
    sink_max_body_bytes: int = setting(
        "SINK_MAX_BODY_BYTES",
        int_between(1, 2**31),
        default="8388608",
        meaning="Largest sink or transform request body accepted (413 above it).",
    )
    worker_memory_budget: int = setting(
        "WORKER_MEMORY_BUDGET",
        int_between(1048576, 2**40),
        default="50331648",
        meaning="Bytes the requests of one worker may hold at once: feeds' upstream pages "
        "(estimated as parsed), sink and transform bodies (three times their size). A "
        "request that does not fit waits, then gets 503 with Retry-After.",
    )
    sink_concurrency: int = setting(
        "SINK_CONCURRENCY",
        int_between(1, 64),
        default="8",
        meaning="Upstream requests in flight at once for one sink or transform batch.",
    )
    state_dir: str = setting(
        "STATE_DIR",
        directory,
        default="/tmp/connector-state",  # nosec B108: dev runs; the image sets /app/state
        meaning="Directory for the full-sync sequence state (an SQLite file).",
    )
    full_sync_delete: bool = setting(
        "FULL_SYNC_DELETE",
        boolean,
        default="false",
        meaning="Delete upstream records a full sync did not send, when it ends.",
    )
    full_sync_allow_empty_delete: bool = setting(
        "FULL_SYNC_ALLOW_EMPTY_DELETE",
        boolean,
        default="false",
        meaning="Let a full sync that sent no entities delete every record.",
    )
    auth_username: str = setting(
        "AUTH_USERNAME",
        str,
        default="",
        meaning="With AUTH_PASSWORD: the user Sesam must send (HTTP basic auth). Unset: no auth.",
    )
    auth_password: str = setting(
        "AUTH_PASSWORD",
        str,
        default="",
        secret=True,
        meaning="With AUTH_USERNAME: the password Sesam must send.",
    )

    def __post_init__(self) -> None:
        """Rules across settings; a subclass adds its own and calls this one."""
        if bool(self.auth_username) != bool(self.auth_password):
            raise ConfigError("AUTH_USERNAME and AUTH_PASSWORD go together: set both or neither")
        largest = BODY_COST * self.sink_max_body_bytes + self.sink_concurrency * ANSWER_ALLOWANCE
        if self.worker_memory_budget < largest:
            raise ConfigError(
                f"WORKER_MEMORY_BUDGET must be at least {BODY_COST} times SINK_MAX_BODY_BYTES "
                f"and {ANSWER_ALLOWANCE >> 10} KiB per SINK_CONCURRENCY ({largest} bytes): a "
                "batch of the largest size must fit"
            )


S = TypeVar("S", bound=Settings)

#: Variables that no longer exist: set, they stop the start with the name to use instead,
#: rather than being ignored without a word.
RENAMED = {
    "UPSTREAM_RETRY_BUDGET": "UPSTREAM_FEED_RETRY_BUDGET and UPSTREAM_SINK_RETRY_BUDGET "
    "(one budget per direction)",
    "SINK_BYTES_IN_FLIGHT": "WORKER_MEMORY_BUDGET (one budget for feeds, sink and transform "
    "bodies; a body counts three times its size in it)",
}
#: What a sink or transform body costs in ``WORKER_MEMORY_BUDGET``, per byte.
BODY_COST = 3
#: What a sink or transform batch reserves for each upstream answer it may hold at once
#: (``SINK_CONCURRENCY`` of them), beside its body: an upstream's answer to a write, or a
#: record a transform reads, parsed. A larger one makes the reservation grow.
ANSWER_ALLOWANCE = 65536


def variables(settings_class: type[Settings]) -> tuple[Variable, ...]:
    """Every variable a settings class reads, the framework's first, in declaration order."""
    return tuple(field.metadata["variable"] for field in dataclasses.fields(settings_class))


def load_settings(settings_class: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Parse every variable; the first missing or malformed one raises ConfigError."""
    if environ is None:
        environ = os.environ
    for name, instead in RENAMED.items():
        if environ.get(name):
            raise ConfigError(f"{name} is no longer read: set {instead}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(settings_class):
        variable: Variable = field.metadata["variable"]
        raw = environ.get(variable.name)
        if raw is None or raw == "":
            if variable.default is None:
                raise ConfigError(f"{variable.name} is required: {variable.meaning}")
            raw = variable.default
        check_characters(variable, raw)
        try:
            values[field.name] = variable.parse(raw)
        except ValueError as error:
            value = "(secret)" if variable.secret else shown(raw)
            raise ConfigError(f"{variable.name}={value} {error}") from None
        if variable.secret and raw:
            if len(raw) < masking.MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"{variable.name} is shorter than {masking.MIN_SECRET_LENGTH} characters: "
                    "a secret that short cannot be told from other text, to keep it out of "
                    "logs and answers"
                )
            masking.register(raw)
    return settings_class(**values)


def check_characters(variable: Variable, raw: str) -> None:
    """Refuse control characters, naming the setting and where, never the value."""
    allowed = "\n\r\t" if variable.multiline else ""
    for index, character in enumerate(raw):
        if (character < " " or "\x7f" <= character <= "\x9f") and character not in allowed:
            what = (
                "a line break"
                if character in "\n\r"
                else f"the control character U+{ord(character):04X}"
            )
            raise ConfigError(
                f"{variable.name} holds {what} at character {index + 1} of {len(raw)}: "
                "remove it (a value copied from a file often ends in a line break)"
            )


def load_settings_or_exit(settings_class: type[S], environ: Mapping[str, str] | None = None) -> S:
    """For start-up: one clear line on stderr and exit status 2, never a traceback."""
    try:
        return load_settings(settings_class, environ)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def configure_logging(level: str) -> None:
    """Standard logging to stdout, configured once per process."""
    root = logging.getLogger()
    if not any(getattr(h, "_connector", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        handler.setFormatter(masking.MaskingFormatter(formatter))  # no secret in any line
        handler._connector = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
