"""What both listeners share, behind one lock: the records, the tokens, the rules, the log
of requests and the record of connections, so that a test can ask what the connector did
(which requests, with which headers, and when it hung up)."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from service.tools.hostile_upstream.oauth import DEFAULT_EXPIRES_IN
from service.tools.hostile_upstream.oauth import OAuth
from service.tools.hostile_upstream.records import Store
from service.tools.hostile_upstream.rules import Rule
from service.tools.hostile_upstream.wire import Peer
from service.tools.hostile_upstream.wire import Request

LOG_SIZE = 10_000  # requests kept in the log, and finished connections in the stats
LOGGED_BODY = 4096  # bytes of each request body kept in the log, as text


@dataclass(eq=False)
class Connection:
    """One accepted connection. One that has served only admin requests is the test's own,
    and one left from before the stats were cleared (a client's idle keep-alive) is
    stale until it brings a request: the stats leave both out."""

    number: int
    listener: str
    peer: Peer
    opened: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    admin: int = 0
    last: str | None = None
    action: str | None = None
    busy: bool = False
    request_read: float | None = None
    stale: bool = False
    discarded: bool = False

    @property
    def counted(self) -> bool:
        return not (self.stale or self.discarded) and (self.requests > 0 or self.admin == 0)

    def describe(self, closed_by: str | None = None) -> dict[str, Any]:
        now = time.monotonic()
        shown: dict[str, Any] = {
            "id": self.number,
            "listener": self.listener,
            "requests": self.requests,
            "last": self.last,
            "action": self.action,
            "busy": self.busy,
            "body_bytes": self.peer.body_bytes,
            "opened": self.opened,
            "seconds": round(now - self.started, 3),
            "seconds_after_request": (
                None if self.request_read is None else round(now - self.request_read, 3)
            ),
        }
        if closed_by is not None:
            shown["closed_by"] = closed_by
        return shown


class State:
    """One tool's state; the lock guards every field (``stopping`` is an event of its own)."""

    def __init__(
        self,
        token: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        expires_in: float = DEFAULT_EXPIRES_IN,
    ) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.token = token
        self.oauth_defaults = (client_id, client_secret, expires_in)
        self.urls: dict[str, str] = {}
        self.numbers = itertools.count(1)
        self.open: dict[int, Connection] = {}
        self.store = Store()
        self.oauth = OAuth(client_id, client_secret, expires_in)
        self.rules: list[Rule] = []
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_SIZE)
        self.finished: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_SIZE)
        self.counts: dict[str, collections.Counter[str]] = {}
        self.clear_stats()

    # --- the admin API's resets (the caller holds the lock) -----------------------------

    def reset(self) -> None:
        """A blank tool, as at start: no records, rules, log, counts or issued tokens.
        A connection still busy with a rule's answer (a hang, an endless body) is cut and
        forgotten, so that the next test does not see it finish."""
        self.store = Store()
        self.oauth = OAuth(*self.oauth_defaults)
        self.rules = []
        self.log.clear()
        for connection in self.open.values():
            if connection.busy:
                connection.discarded = True
                connection.peer.abort()
        self.clear_stats()

    def clear_stats(self) -> None:
        """Counts from zero; the connections open now are stale (left out) until their next
        request, and are then counted from zero."""
        self.counts = {"main": collections.Counter(), "other": collections.Counter()}
        self.finished.clear()
        for connection in self.open.values():
            connection.stale = True

    def stats(self) -> dict[str, Any]:
        counted = [c for c in self.open.values() if c.counted]
        return {
            "requests": {listener: dict(counts) for listener, counts in self.counts.items()},
            "open": {
                listener: sum(1 for c in counted if c.listener == listener)
                for listener in ("main", "other")
            },
            "open_connections": [c.describe() for c in counted],
            "connections": list(self.finished),
            "tokens_issued": self.oauth.count,
        }

    # --- the connections (each takes the lock) ------------------------------------------

    def opened(self, listener: str, peer: Peer) -> Connection:
        with self.lock:
            connection = Connection(next(self.numbers), listener, peer)
            self.open[connection.number] = connection
            return connection

    def received(self, connection: Connection, request: Request) -> Rule | None:
        """Count and log a request (not the admin API's), and answer the rule that takes it."""
        with self.lock:
            if connection.stale:
                connection.stale = False
                connection.requests = 0
                connection.peer.body_bytes = 0
            connection.requests += 1
            connection.last = f"{request.method} {request.target}"
            connection.request_read = time.monotonic()
            self.counts[connection.listener][request.method] += 1
            number, rule = next(
                (
                    (n, r)
                    for n, r in enumerate(self.rules)
                    if r.answers(connection.listener, request)
                ),
                (None, None),
            )
            if rule is not None:
                rule.used += 1
                connection.busy = True
            connection.action = rule.action if rule is not None else None
            self.log.append(
                {
                    "time": time.time(),
                    "listener": connection.listener,
                    "connection": connection.number,
                    "method": request.method,
                    "target": request.target,
                    "path": request.path,
                    "query": request.query,
                    "version": request.version,
                    "headers": [list(pair) for pair in request.headers],
                    "body_length": len(request.body),
                    "body": request.body[:LOGGED_BODY].decode("utf-8", "replace"),
                    "rule": number,
                    "action": connection.action,
                }
            )
            return rule

    def closed(self, connection: Connection, closed_by: str) -> None:
        with self.lock:
            self.open.pop(connection.number, None)
            if connection.counted:
                self.finished.append(connection.describe(closed_by))
