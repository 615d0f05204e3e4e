"""The hostile upstream's test kit: a client for its admin API (``HostileUpstream``), ``rule``
to write its rules, and the fixtures that run it (``python -m
service.tools.hostile_upstream``, docs/hostile-upstream.md).

``hostile_server`` starts it once per test session (per worker under pytest-xdist: ports
from the OS, the log in the worker's own temporary folder); ``hostile`` resets its records,
rules, log and stats before each test. A test module loads them with
``pytest_plugins = ["service.tests.hostile_kit"]``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest
import requests

from service.tools.servers import start
from service.tools.servers import stop
from service.tools.servers import wait_until
from service.tools.servers import wait_until_up

HOSTILE_TOKEN = "hostile-token-s3cr3t"
HOSTILE_CLIENT_ID = "hostile-client"
HOSTILE_CLIENT_SECRET = "hostile-client-s3cr3t"
LISTENING = re.compile(r"listening on (http://\S+) \(main\) and (http://\S+) \(other\)")
T = TypeVar("T")


def rule(
    action: str,
    *,
    method: str | None = None,
    path: str | None = None,
    prefix: str | None = None,
    query: str | None = None,
    listener: str | None = None,
    times: int | None = None,
    **params: Any,
) -> dict[str, Any]:
    """A rule as the tool takes it: ``rule("endless", path="/people", status=503)``.
    ``path`` matches exactly, ``prefix`` the path's start, ``query`` a part of the query;
    ``times`` (default: for ever) how many requests it answers."""
    match = {
        "listener": listener,
        "method": method,
        "path": path,
        "prefix": prefix,
        "query": query,
    }
    spec: dict[str, Any] = {"action": action, **params}
    if any(value is not None for value in match.values()):
        spec["match"] = {key: value for key, value in match.items() if value is not None}
    if times is not None:
        spec["times"] = times
    return spec


def header(entry: dict[str, Any], name: str) -> list[str]:
    """Every value of a header (any case) in a log entry, in the order received."""
    return [value for key, value in entry["headers"] if key.lower() == name.lower()]


class HostileUpstream:
    """The hostile upstream's admin API (``/_hostile/``) and its two origins' URLs."""

    def __init__(self, url: str, token: str = HOSTILE_TOKEN) -> None:
        self.url = url
        self.token = token
        self.admin = requests.Session()
        self.http = requests.Session()  # apart: the admin's connections are not counted
        self.other_url: str = self._admin("GET", "health")["other"]

    def _admin(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.admin.request(
            method, f"{self.url}/_hostile/{path}", json=body, params=params, timeout=60
        )
        if response.status_code >= 400:
            raise AssertionError(
                f"{method} /_hostile/{path}: {response.status_code} {response.text}"
            )
        return response.json()

    def reset(self) -> None:
        """No records, rules, log, stats or issued tokens; connections still busy with a
        rule's answer are cut."""
        self._admin("POST", "reset")

    def seed(self, collection: str, records: list[dict[str, Any]]) -> int:
        """Records as given (creating the collection); those without ``updated_at`` share
        one time."""
        return self._admin("POST", f"records/{collection}", records)["seeded"]

    def records(self, collection: str) -> list[dict[str, Any]]:
        """Every record, tombstones included, in (updated_at, id) order."""
        return self._admin("GET", f"records/{collection}")

    def set_rules(self, *rules: dict[str, Any]) -> list[dict[str, Any]]:
        """Replace the rules (first match answers)."""
        return self._admin("PUT", "rules", list(rules))

    def add_rules(self, *rules: dict[str, Any]) -> list[dict[str, Any]]:
        return self._admin("POST", "rules", list(rules))

    def rules(self) -> list[dict[str, Any]]:
        """The rules, each with ``used``: how many requests it answered."""
        return self._admin("GET", "rules")

    def clear_rules(self) -> None:
        self._admin("DELETE", "rules")

    def log(self, listener: str | None = None) -> list[dict[str, Any]]:
        """Every request received (not the admin's), oldest first: ``listener``, ``method``,
        ``target`` (path and query), ``headers`` ([name, value] as received),
        ``body_length``, ``action`` (the rule's, or None)."""
        return self._admin("GET", "log", **({"listener": listener} if listener else {}))

    def clear_log(self) -> None:
        self._admin("DELETE", "log")

    def stats(self) -> dict[str, Any]:
        """``requests`` (per listener and method), ``open`` (per listener),
        ``open_connections``, ``connections`` (finished: ``closed_by``, ``body_bytes``,
        ``seconds_after_request``, ``action``, ...), ``tokens_issued``."""
        return self._admin("GET", "stats")

    def clear_stats(self) -> None:
        self._admin("DELETE", "stats")

    def oauth(self, **settings: Any) -> dict[str, Any]:
        """Set the token endpoint's ``client_id``, ``client_secret``, ``expires_in``;
        answers them, and the tokens issued."""
        return self._admin("PUT", "oauth", settings) if settings else self._admin("GET", "oauth")

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (a 401 for the client)."""
        self._admin("DELETE", "oauth/tokens")

    def api(
        self,
        method: str,
        path: str,
        *,
        other: bool = False,
        token: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A Records API call as a client would make it, with the token (no redirects)."""
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        base = self.other_url if other else self.url
        return self.http.request(
            method,
            f"{base}/{path.lstrip('/')}",
            headers=headers,
            timeout=60,
            allow_redirects=False,
            **kwargs,
        )

    def wait_for(
        self, condition: Callable[[dict[str, Any]], T], what: str, seconds: float = 30
    ) -> T:
        """Poll the stats until ``condition(stats)`` is true; answers what it answered."""
        return wait_until(lambda: condition(self.stats()), what=what, seconds=seconds)

    def wait_for_connection(
        self,
        *,
        action: str | None = None,
        listener: str = "main",
        closed_by: str | None = None,
        seconds: float = 30,
    ) -> dict[str, Any]:
        """The first finished connection on ``listener`` whose last request a rule of
        ``action`` answered (and that ``closed_by`` closed), once there is one."""

        def finished(stats: dict[str, Any]) -> dict[str, Any] | None:
            return next(
                (
                    c
                    for c in stats["connections"]
                    if c["listener"] == listener
                    and (action is None or c["action"] == action)
                    and (closed_by is None or c["closed_by"] == closed_by)
                ),
                None,
            )

        return self.wait_for(finished, f"a finished {action or 'any'} connection", seconds)


def hostile_upstream_command(token: str = HOSTILE_TOKEN, *options: str) -> list[str]:
    """The hostile upstream on free loopback ports, with the kit's OAuth client."""
    return [
        sys.executable,
        "-m",
        "service.tools.hostile_upstream",
        "--token",
        token,
        "--client-id",
        HOSTILE_CLIENT_ID,
        "--client-secret",
        HOSTILE_CLIENT_SECRET,
        *options,
    ]


def running_hostile_upstream(
    directory: Path, *options: str, token: str = HOSTILE_TOKEN, seconds: float = 30
) -> Iterator[HostileUpstream]:
    """The hostile upstream as a child process, for a fixture to yield; stopped after. Its
    ports come from the OS (``--port 0``), read from the line it prints when listening."""
    log = directory / "hostile-upstream.log"
    process = start(hostile_upstream_command(token, *options), log=log)
    try:
        found = wait_until(
            lambda: LISTENING.search(log.read_text(encoding="utf-8", errors="replace")),
            what="listening",
            seconds=seconds,
            process=process,
            log=log,
        )
        url = found.group(1)
        wait_until_up(f"{url}/_hostile/health", process, log, seconds)
        yield HostileUpstream(url, token)
    finally:
        stop(process, seconds=15)


@pytest.fixture(scope="session")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    yield from running_hostile_upstream(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def hostile(hostile_server: HostileUpstream) -> HostileUpstream:
    """The hostile upstream, blank: no records, rules, log or stats."""
    hostile_server.reset()
    return hostile_server
