"""Full-sync sequences of Sesam's JSON push protocol, kept in SQLite.

Every gunicorn worker and thread must see one state, and a restart must not lose or
corrupt it, so it lives in an SQLite file under ``STATE_DIR`` (WAL mode, a busy
timeout). The rules are a pure function, ``decide``; ``SequenceStore`` runs them inside
``BEGIN IMMEDIATE`` transactions, so check-and-advance is atomic across processes.

Per collection there is at most one sequence: the active one, or the last one, ended.
A full-sync request is checked before any write and the sequence is advanced only after
every write succeeded, so a failed request leaves the state as it was and Sesam's retry
of the same request (same ``request_id`` and ``previous_request_id``) is accepted.
A request that repeats the last *accepted* one is accepted again without advancing
(``RETRY``): its response may have been lost on the way back to Sesam.

For deletion detection the ids a sequence sent are stored too (``sent_ids``), and
dropped when the sequence ends or is replaced.

Overlapping syncs: a new sequence's first request claims the collection when it is
checked, before it writes (``claims``): from then on every later request of the sequence it
replaces gets 409, though the new one is not accepted yet. A sequence's deletion of what it
did not send holds a lease (``leases``), renewed before each group of deletions and given
up as soon as a newer sequence has claimed the collection; a new sequence's first request
waits for the lease to end before it writes. So nothing the newest sequence sent is ever
deleted by an older one.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sqlite3
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager

DATABASE = "sequences.sqlite3"
BUSY_TIMEOUT_SECONDS = 30
_SQL_VARIABLES = 500  # ids per IN (...) query; SQLite's old limit is 999

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sequences (
    collection TEXT PRIMARY KEY,
    sequence_id TEXT NOT NULL,
    last_request_id TEXT NOT NULL,
    last_previous_request_id TEXT,
    last_is_first INTEGER NOT NULL,
    ended INTEGER NOT NULL,
    tracking INTEGER NOT NULL,
    live_entities INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    collection TEXT PRIMARY KEY,
    sequence_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    claimed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    collection TEXT PRIMARY KEY,
    sequence_id TEXT NOT NULL,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_ids (
    collection TEXT NOT NULL,
    sequence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    PRIMARY KEY (collection, sequence_id, entity_id)
) WITHOUT ROWID;
"""


class SequenceConflict(Exception):
    """The request breaks the sequence rules: Sesam must start the sync again (409)."""


@dataclasses.dataclass(frozen=True)
class SyncParams:
    """The push protocol's query parameters of one request."""

    is_full: bool
    sequence_id: str | None = None
    request_id: str | None = None
    previous_request_id: str | None = None
    is_first: bool = False
    is_last: bool = False


@dataclasses.dataclass(frozen=True)
class Sequence:
    """The stored state of a collection's current (or last) full sync."""

    collection: str
    sequence_id: str
    last_request_id: str
    last_previous_request_id: str | None
    last_is_first: bool
    ended: bool
    tracking: bool  # ids stored since is_first, so deletion detection may run
    live_entities: int
    requests: int


class Verdict(enum.Enum):
    INCREMENTAL = "incremental"  # is_full=false: no sequence to keep
    START = "start"  # is_first=true: starts a sequence, replacing any other
    CONTINUE = "continue"  # the next request of the active sequence
    RETRY = "retry"  # the last accepted request again: accept, do not advance


def _flag(args: Mapping[str, str], name: str) -> bool:
    value = args.get(name)
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return lowered == "true"


def _token(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name)
    return value if value else None


def parse_params(args: Mapping[str, str]) -> SyncParams:
    """The query parameters; a full sync without its tokens is a ValueError (400)."""
    params = SyncParams(
        is_full=_flag(args, "is_full"),
        sequence_id=_token(args, "sequence_id"),
        request_id=_token(args, "request_id"),
        previous_request_id=_token(args, "previous_request_id"),
        is_first=_flag(args, "is_first"),
        is_last=_flag(args, "is_last"),
    )
    if params.is_full:
        for name in ("sequence_id", "request_id"):
            if getattr(params, name) is None:
                raise ValueError(f"a full sync (is_full=true) needs {name}")
        if not params.is_first and params.previous_request_id is None:
            raise ValueError(
                "a full-sync request that is not is_first=true needs previous_request_id"
            )
    return params


def decide(current: Sequence | None, params: SyncParams, claimed: str | None = None) -> Verdict:
    """The protocol's sequence rules: what this request is, or SequenceConflict.
    ``claimed``: the sequence whose first request was checked last, accepted or not."""
    if not params.is_full:
        if current is not None and not current.ended and params.sequence_id == current.sequence_id:
            raise SequenceConflict(
                f"is_full changed within sequence {current.sequence_id!r}: "
                "is_full=false for a full sync"
            )
        return Verdict.INCREMENTAL
    if (
        claimed is not None
        and not params.is_first
        and claimed != params.sequence_id
        and (current is None or claimed != current.sequence_id)
    ):
        raise SequenceConflict(
            f"sequence {params.sequence_id!r} was replaced by sequence {claimed!r}, which "
            "has begun: its later requests are refused"
        )
    if (
        current is not None
        and current.sequence_id == params.sequence_id
        and current.last_request_id == params.request_id
    ):
        same = (
            current.last_is_first == params.is_first
            and current.ended == params.is_last
            and (params.is_first or current.last_previous_request_id == params.previous_request_id)
        )
        if same:
            return Verdict.RETRY
        raise SequenceConflict(
            f"request_id {params.request_id!r} was already accepted in sequence "
            f"{params.sequence_id!r} with other parameters"
        )
    if params.is_first:
        if current is not None and current.sequence_id == params.sequence_id:
            raise SequenceConflict(
                f"is_first=true for sequence {params.sequence_id!r}, which has already started"
            )
        return Verdict.START
    if current is None or current.sequence_id != params.sequence_id:
        active = "none" if current is None or current.ended else repr(current.sequence_id)
        raise SequenceConflict(
            f"sequence {params.sequence_id!r} is not the active sequence (active: {active})"
        )
    if current.ended:
        raise SequenceConflict(f"sequence {params.sequence_id!r} has already ended")
    if params.previous_request_id != current.last_request_id:
        raise SequenceConflict(
            f"previous_request_id {params.previous_request_id!r} does not match the "
            f"previous request {current.last_request_id!r} of sequence {params.sequence_id!r}"
        )
    return Verdict.CONTINUE


class SequenceStore:
    """The sequences of every collection, in one SQLite file shared by all workers."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, DATABASE)
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # A connection per use: cheap next to an HTTP request, and never shared between
        # threads or inherited across a fork.
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        # WAL with synchronous=NORMAL never corrupts; a power cut may lose the last
        # advance, and Sesam's next request then gets a 409 and starts the sync again.
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    @contextmanager
    def _transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    @staticmethod
    def _load(connection: sqlite3.Connection, collection: str) -> Sequence | None:
        row = connection.execute(
            "SELECT collection, sequence_id, last_request_id, last_previous_request_id, "
            "last_is_first, ended, tracking, live_entities, requests "
            "FROM sequences WHERE collection = ?",
            (collection,),
        ).fetchone()
        if row is None:
            return None
        return Sequence(
            row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), bool(row[6]), row[7], row[8]
        )

    def current(self, collection: str) -> Sequence | None:
        with self._transaction(immediate=False) as connection:
            return self._load(connection, collection)

    @staticmethod
    def _claimed(connection: sqlite3.Connection, collection: str) -> str | None:
        row = connection.execute(
            "SELECT sequence_id FROM claims WHERE collection = ?", (collection,)
        ).fetchone()
        return None if row is None else str(row[0])

    def check(self, collection: str, params: SyncParams) -> tuple[Verdict, Sequence | None]:
        """The verdict before any write, with the state it was made on. A write, so that
        a state directory that cannot be written fails here, before the upstream is: a
        first request claims the collection (``claims``), any other marks its sequence
        as seen now."""
        now = time.time()
        with self._transaction() as connection:
            current = self._load(connection, collection)
            verdict = decide(current, params, self._claimed(connection, collection))
            if verdict is Verdict.START:
                connection.execute(
                    "INSERT OR REPLACE INTO claims (collection, sequence_id, request_id, "
                    "claimed_at) VALUES (?, ?, ?, ?)",
                    (collection, params.sequence_id, params.request_id, now),
                )
            elif current is not None:
                connection.execute(
                    "UPDATE sequences SET updated_at = ? WHERE collection = ?", (now, collection)
                )
        return verdict, current

    def lease_held_by_other(self, collection: str, sequence_id: str) -> float:
        """Seconds until the deletion lease another sequence holds ends (0: none)."""
        with self._transaction(immediate=False) as connection:
            row = connection.execute(
                "SELECT sequence_id, until FROM leases WHERE collection = ?", (collection,)
            ).fetchone()
        if row is None or row[0] == sequence_id:
            return 0.0
        return max(0.0, float(row[1]) - time.time())

    def lease_deletion(
        self, collection: str, sequence_id: str, expected: Sequence | None, seconds: float
    ) -> bool:
        """Take (or renew) the deletion lease for ``seconds``, if the sequence is still
        the state ``expected`` describes (a first lease) or still current (a renewal), and
        no newer sequence has claimed the collection. False: delete nothing more."""
        now = time.time()
        with self._transaction() as connection:
            current = self._load(connection, collection)
            claimed = self._claimed(connection, collection)
            held = connection.execute(
                "SELECT sequence_id FROM leases WHERE collection = ?", (collection,)
            ).fetchone()
            renewal = held is not None and held[0] == sequence_id
            if claimed is not None and claimed != sequence_id:
                return False  # a newer sequence has begun
            if not renewal and current != expected:
                return False  # the sequence moved on while its ids were listed
            ours = claimed == sequence_id or (
                current is not None and current.sequence_id == sequence_id
            )
            if not ours:
                return False
            connection.execute(
                "INSERT OR REPLACE INTO leases (collection, sequence_id, until) VALUES (?, ?, ?)",
                (collection, sequence_id, now + seconds),
            )
        return True

    def end_deletion(self, collection: str, sequence_id: str) -> None:
        """Give the deletion lease back."""
        with self._transaction() as connection:
            connection.execute(
                "DELETE FROM leases WHERE collection = ? AND sequence_id = ?",
                (collection, sequence_id),
            )

    def record_ids(self, collection: str, sequence_id: str, ids: Iterable[str]) -> None:
        """Remember ids a sequence sent. Stored before the writes: an id stored for a
        request that then failed can only spare a record from deletion, never doom one."""
        rows = ((collection, sequence_id, entity_id) for entity_id in ids)  # memory: lazily
        with self._transaction() as connection:
            connection.executemany(
                "INSERT OR IGNORE INTO sent_ids (collection, sequence_id, entity_id) "
                "VALUES (?, ?, ?)",
                rows,
            )

    def sent_among(self, collection: str, sequence_id: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the sequence sent (asked in chunks: memory stays bounded)."""
        found: set[str] = set()
        connection = self._connect()
        try:
            for start in range(0, len(ids), _SQL_VARIABLES):
                chunk = ids[start : start + _SQL_VARIABLES]
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0]
                    for row in connection.execute(
                        "SELECT entity_id FROM sent_ids WHERE collection = ? AND sequence_id = ? "
                        f"AND entity_id IN ({marks})",  # nosec B608: only "?" marks, values bound
                        (collection, sequence_id, *chunk),
                    )
                )
        finally:
            connection.close()
        return found

    def accept(
        self, collection: str, params: SyncParams, *, live_entities: int, tracking: bool
    ) -> Verdict:
        """Check again and advance, in one IMMEDIATE transaction: of two racing copies
        of a request, one advances and the other is a RETRY (or a conflict)."""
        now = time.time()
        with self._transaction() as connection:
            current = self._load(connection, collection)
            verdict = decide(current, params, self._claimed(connection, collection))
            if verdict is Verdict.START:
                connection.execute(
                    "INSERT OR REPLACE INTO sequences (collection, sequence_id, "
                    "last_request_id, last_previous_request_id, last_is_first, ended, "
                    "tracking, live_entities, requests, started_at, updated_at) "
                    "VALUES (?, ?, ?, ?, 1, ?, ?, ?, 1, ?, ?)",
                    (
                        collection,
                        params.sequence_id,
                        params.request_id,
                        params.previous_request_id,
                        int(params.is_last),
                        int(tracking),
                        live_entities,
                        now,
                        now,
                    ),
                )
                connection.execute(
                    "DELETE FROM sent_ids WHERE collection = ? AND sequence_id != ?",
                    (collection, params.sequence_id),
                )
                connection.execute(
                    "DELETE FROM claims WHERE collection = ? AND sequence_id = ?",
                    (collection, params.sequence_id),
                )
            elif verdict is Verdict.CONTINUE:
                connection.execute(
                    "UPDATE sequences SET last_request_id = ?, last_previous_request_id = ?, "
                    "last_is_first = 0, ended = ?, live_entities = live_entities + ?, "
                    "requests = requests + 1, updated_at = ? WHERE collection = ?",
                    (
                        params.request_id,
                        params.previous_request_id,
                        int(params.is_last),
                        live_entities,
                        now,
                        collection,
                    ),
                )
            if params.is_last and verdict in (Verdict.START, Verdict.CONTINUE):
                connection.execute(
                    "DELETE FROM sent_ids WHERE collection = ?",
                    (collection,),
                )
        return verdict
