"""The sink: Sesam's JSON push protocol, written into the upstream.

``POST /<resource>`` takes a JSON array of entities. In order:

1. the query parameters (a full sync needs its sequence tokens): 400;
2. the body, whatever the Content-Type says and however it is framed: size (413,
   chunked bodies too), JSON, an array of objects, each with a non-empty string ``_id``
   that is valid Unicode, each ``_id`` (deleted or not) mappable to the upstream's key
   (``Adapter.key``) and each entity to an upstream record: 400 naming the entity's
   index;
3. the full-sync sequence rules (``service.framework.sequences``): 409;
4. the writes: one per distinct ``_id`` (the last version in the batch wins), at most
   ``SINK_CONCURRENCY`` at once; a failure answers 502 (504 if every failure was a
   timeout) naming the failed ids and upstream statuses;
5. at the end of a full sync, optional deletion of what the sync did not send;
6. the sequence advances, only now.

A 4xx writes nothing and does not advance the sequence; neither does a 5xx, so Sesam's
retry of the same request is accepted.

Memory: a parsed batch of small entities takes 20 to 60 times its text, so a batch is
never parsed whole. The body is kept as text and walked one entity at a time, once to
validate it, then again to write it; what is kept per entity is a hash and a flag. The
bodies one worker holds at once are bounded (``WORKER_MEMORY_BUDGET``, shared with the
feeds: ``service.framework.memory``): a batch that does not fit waits for room, then gets
503 with ``Retry-After``, which Sesam retries; the
transform (``service.framework.transform``) reads its bodies the same way, within the same
budget (``Bodies``). The walk uses the standard library's decoder one entity at a time
(orjson has no incremental decoder; ``parse_body``, for tests and tools, uses it whole).

Every write is idempotent (PUT, and DELETE where 404 counts as done), which also makes
Sesam's one-entity-at-a-time fallback safe.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import itertools
import json
import logging
import re
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence as Items
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from typing import TypeVar

from flask import Flask
from flask import Response
from flask import jsonify
from flask import request

from service.framework import jsontext
from service.framework.adapter import Adapter
from service.framework.adapter import require_collection
from service.framework.deadlines import deadline
from service.framework.errors import ApiError
from service.framework.errors import BadRequest
from service.framework.errors import Conflict
from service.framework.errors import PayloadTooLarge
from service.framework.errors import RequestTimeout
from service.framework.errors import ServiceUnavailable
from service.framework.errors import UnsupportedMediaType
from service.framework.errors import upstream_failure
from service.framework.masking import mask
from service.framework.memory import Ledger
from service.framework.memory import MemoryBudget
from service.framework.sequences import Sequence
from service.framework.sequences import SequenceConflict
from service.framework.sequences import SequenceStore
from service.framework.sequences import SyncParams
from service.framework.sequences import Verdict
from service.framework.sequences import parse_params
from service.framework.settings import ANSWER_ALLOWANCE
from service.framework.settings import BODY_COST
from service.framework.settings import Settings
from service.framework.upstream import REFUSED_STATUSES
from service.framework.upstream import UpstreamError
from service.framework.upstream import UpstreamTimeout
from service.framework.upstream import retry_budget

log = logging.getLogger(__name__)

MAX_FAILURES_SHOWN = 100
LIVE_ID_CHUNK = 1000
READ_CHUNK = 65536
RETRY_AFTER_SECONDS = 5
#: A full sync's deletions hold a lease this long, renewed before each group of them; a
#: group's deletes must end within it (their deadline), so a newer sequence never waits
#: longer, and no deletion of an older one is in flight once it writes.
DELETION_LEASE_SECONDS = 60.0
#: An adapter's mistakes on the upstream's data (a record without its id, an id it cannot
#: map): the listing for deletion detection fails as an upstream failure (502).
DATA_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError)

T = TypeVar("T")


class BatchError(ValueError):
    """The body is not a valid batch (400); the message names the problem and index."""


@dataclasses.dataclass(frozen=True)
class Write:
    """One upstream write: ``record`` is None for a delete."""

    entity_id: str
    record: dict[str, Any] | None
    key: Any = None  # the upstream's key for the entity (Adapter.key); None: the _id

    @property
    def operation(self) -> str:
        return "put" if self.record is not None else "delete"


@dataclasses.dataclass(frozen=True)
class Failure:
    entity_id: str
    operation: str
    status: int | None
    reason: str
    timeout: bool


@dataclasses.dataclass
class Outcome:
    upserts: int = 0
    deletes: int = 0
    failures: list[Failure] = dataclasses.field(default_factory=list)
    not_attempted: int = 0


@dataclasses.dataclass
class FullSync:
    """What the answer and the log line say of a full-sync request."""

    sequence_id: str | None
    request_id: str | None
    is_first: bool
    is_last: bool
    verdict: str
    deletion: str | None = None
    deleted_missing: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def log_text(self) -> str:
        text = (
            f" is_full=true sequence_id={self.sequence_id!r} request_id={self.request_id!r}"
            f" is_first={str(self.is_first).lower()} is_last={str(self.is_last).lower()}"
            f" verdict={self.verdict}"
        )
        if self.deletion is not None:
            text += f" deletion={self.deletion}"
        if self.deleted_missing is not None:
            text += f" deleted_missing={self.deleted_missing}"
        return text


@dataclasses.dataclass
class Summary:
    """The answer to a sink request, and its log line: counts, and the full sync's state."""

    resource: str
    is_full: bool = False
    entities: int = 0
    duplicates: int = 0
    upserts: int = 0
    deletes: int = 0
    full_sync: FullSync | None = None

    def as_json(self) -> dict[str, Any]:
        answer = {k: v for k, v in dataclasses.asdict(self).items() if k != "full_sync"}
        if self.full_sync is not None:
            answer["full_sync"] = self.full_sync.as_json()
        return answer

    def log_text(self, status: int) -> str:
        """The request's log line, less its duration and outcome."""
        sync = (
            self.full_sync.log_text()
            if self.full_sync is not None
            else f" is_full={str(self.is_full).lower()}"
        )
        return (
            f"sink {self.resource} status={status} entities={self.entities} "
            f"duplicates={self.duplicates} upserts={self.upserts} deletes={self.deletes}{sync}"
        )


class Batch:
    """A validated request: its sync parameters and its body, whose entities are parsed
    again on each pass instead of kept. ``writes()`` gives one write per ``_id``, the last
    version in the batch, in its place."""

    def __init__(
        self,
        params: SyncParams,
        text: str,
        to_record: Callable[[dict[str, Any]], dict[str, Any]],
        to_key: Callable[[str], Any] = str,
    ) -> None:
        self.params = params
        self.text = text
        self.to_record = to_record
        self.to_key = to_key
        hashes = array("q")  # hash of each entity's _id, in body order
        deleted = bytearray()  # 1 where the entity has _deleted: true
        for index, entity in enumerate(walk(text)):
            entity_id, record, _ = check_write(index, entity, to_record, to_key)
            hashes.append(hash(entity_id))
            deleted.append(record is None)
        self.entities = len(hashes)
        # Only the ids whose hash repeats can be duplicates: their last index, exactly.
        suspects = repeated(hashes)
        self._last: dict[str, int] = {}
        if suspects:
            for index, entity in enumerate(walk(text)):
                if hashes[index] in suspects:
                    self._last[entity["_id"]] = index
        self.duplicates = self.entities - len(self._last) - sum(h not in suspects for h in hashes)
        self.live = sum(not deleted[index] for index in self._last.values()) + sum(
            h not in suspects and not gone for h, gone in zip(hashes, deleted, strict=True)
        )

    def _versions(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, entity) for the last version of each id, in body order."""
        for index, entity in enumerate(walk(self.text)):
            entity_id = entity["_id"]
            if self._last.get(entity_id, index) == index:
                yield entity_id, entity

    def ids(self) -> Iterator[str]:
        return (entity_id for entity_id, _ in self._versions())

    def writes(self) -> Iterator[Write]:
        """The writes, mapped again (``to_record``, ``to_key``): the first pass checked
        that every one maps, so these do not raise."""
        for entity_id, entity in self._versions():
            deleted = entity.get("_deleted") is True
            record = None if deleted else self.to_record(entity)
            yield Write(entity_id, record, self.to_key(entity_id))


@dataclasses.dataclass(frozen=True)
class SequenceCheck:
    """Where the request stands in its full sync (``verdict``), before anything is written."""

    verdict: Verdict
    current: Sequence | None
    tracking: bool  # the sequence stores the ids it sent, so deletion detection may run

    @property
    def full(self) -> bool:
        return self.verdict is not Verdict.INCREMENTAL


def _reject_constant(name: str) -> Any:
    raise BatchError(f"the body holds {name}, which is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SPACE = re.compile(r"[ \t\n\r]*")


def body_text(data: bytes | bytearray) -> str:
    """JSON text (UTF-8, or UTF-16/32 as RFC 8259 allows readers to detect)."""
    if not data.strip():
        raise BatchError("the body is empty; send a JSON array of entities ([] for none)")
    try:
        return data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError:
        raise BatchError("the body is not UTF-8 text") from None


def _decode(text: str, position: int) -> tuple[Any, int]:
    """One JSON value at ``position``: (the value, where it ends)."""
    try:
        return _DECODER.raw_decode(text, position)
    except BatchError:
        raise
    except RecursionError:
        raise BatchError("the body is nested too deeply") from None
    except ValueError as error:
        raise BatchError(f"the body is not JSON: {error}") from None


def _not_json(message: str, text: str, position: int) -> BatchError:
    return BatchError(f"the body is not JSON: {json.JSONDecodeError(message, text, position)}")


def walk(text: str) -> Iterator[Any]:
    """The entities of a JSON array, parsed one at a time: the array is never whole in
    memory. Anything but an array is refused, naming its JSON type."""
    position = _SPACE.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("[", position):
        if text.startswith("{", position):  # not parsed: it may be megabytes
            raise BatchError("the body must be a JSON array of entities, not a JSON object")
        value, end = _decode(text, position)
        if _SPACE.match(text, end).end() != len(text):  # type: ignore[union-attr]
            raise _not_json("Extra data", text, end)
        raise BatchError(
            f"the body must be a JSON array of entities, not a JSON {_json_type(value)}"
        )
    position = _SPACE.match(text, position + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", position):
        end = position + 1
    else:
        while True:
            value, position = _decode(text, position)
            yield value
            position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
            if text.startswith(",", position):
                position = _SPACE.match(text, position + 1).end()  # type: ignore[union-attr]
                continue
            if text.startswith("]", position):
                end = position + 1
                break
            raise _not_json("Expecting ',' delimiter", text, position)
    if _SPACE.match(text, end).end() != len(text):  # type: ignore[union-attr]
        raise _not_json("Extra data", text, end)


def parse_body(data: bytes) -> Any:
    """The whole body parsed at once, with orjson and the standard library for what orjson
    refuses (``service.framework.jsontext``): for tests, tools and benchmarks. The sink and
    the transform never parse a body whole: they walk it (``walk``)."""
    if not data.strip():
        raise BatchError("the body is empty; send a JSON array of entities ([] for none)")
    try:
        return jsontext.loads(data, _reject_constant)
    except BatchError:
        raise
    except RecursionError:
        raise BatchError("the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise BatchError("the body is not UTF-8 text") from None
    except ValueError as error:
        raise BatchError(f"the body is not JSON: {error}") from None


def repeated(hashes: array) -> set[int]:
    """The hashes that occur more than once, and a few that only share a slot: one bit per
    slot in a table of at least 16 slots per hash, so 300,000 ids cost 1 MB, not a dict."""
    slots = 1 << max(10, (16 * len(hashes)).bit_length())
    mask = slots - 1
    table = bytearray(slots // 8)
    found: set[int] = set()
    for value in hashes:
        slot = value & mask
        bit = 1 << (slot & 7)
        if table[slot >> 3] & bit:
            found.add(value)
        else:
            table[slot >> 3] |= bit
    return found


def _unreadable(record: dict[str, Any]) -> str | None:
    """Why the upstream could not read the record as JSON, or None when it can."""
    try:
        json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return "holds a string that is not valid Unicode (a lone surrogate)"
    except ValueError:
        return "holds a number JSON cannot carry (NaN, or beyond a double, such as 1e400)"
    return None


def check_array(entities: Any) -> list[Any]:
    """The body is a JSON array (of entities, each checked by ``check_entity``)."""
    if not isinstance(entities, list):
        raise BatchError(
            f"the body must be a JSON array of entities, not a JSON {_json_type(entities)}"
        )
    return entities


def check_entity(entity: Any, index: int) -> str:
    """One entity of a batch (the sink's and the transform's rule): an object with a
    non-empty string ``_id`` that is valid Unicode; answers the id."""
    if not isinstance(entity, dict):
        raise BatchError(f"entity {index} is a JSON {_json_type(entity)}, not an object")
    if "_id" not in entity:
        raise BatchError(f"entity {index} has no _id")
    entity_id = entity["_id"]
    if not isinstance(entity_id, str):
        raise BatchError(
            f"entity {index}: _id must be a string, not a JSON {_json_type(entity_id)}"
        )
    if not entity_id:
        raise BatchError(f"entity {index}: _id must not be empty")
    if not _valid_unicode(entity_id):
        raise BatchError(
            f"entity {index}: _id {entity_id!r} is not valid Unicode (a lone surrogate)"
        )
    return entity_id


def check_write(
    index: int,
    entity: Any,
    to_record: Callable[[dict[str, Any]], dict[str, Any]],
    to_key: Callable[[str], Any] = str,
) -> tuple[str, dict[str, Any] | None, Any]:
    """One sink entity's checks: (its id, its record or None for a delete, the upstream's
    key for the id), or BatchError. Every ``_id``, deleted or not, goes through ``to_key``
    (``Adapter.key``)."""
    entity_id = check_entity(entity, index)
    try:
        key = to_key(entity_id)
    except ValueError as error:
        raise BatchError(f"entity {index} ({entity_id!r}): {error}") from None
    if entity.get("_deleted") is True:
        return entity_id, None, key
    try:
        record = to_record(entity)
    except RecursionError:
        raise BatchError(f"entity {index} ({entity_id!r}) is nested too deeply") from None
    except ValueError as error:
        raise BatchError(f"entity {index} ({entity_id!r}): {error}") from None
    problem = _unreadable(record)
    if problem is not None:
        raise BatchError(f"entity {index} ({entity_id!r}) {problem}")
    return entity_id, record, key


def prepare_batch(
    entities: Any,
    to_record: Callable[[dict[str, Any]], dict[str, Any]],
    to_key: Callable[[str], Any] = str,
) -> tuple[list[Write], int]:
    """A parsed batch, validated whole before anything is written (the sink's rules, for
    tests and tools; the sink itself walks its body, ``Batch``): the writes (one per
    ``_id``, the last version wins) and how many versions were superseded."""
    check_array(entities)
    writes: dict[str, Write] = {}
    for index, entity in enumerate(entities):
        entity_id, record, key = check_write(index, entity, to_record, to_key)
        writes.pop(entity_id, None)  # keep the last version, in its place
        writes[entity_id] = Write(entity_id, record, key)
    return list(writes.values()), len(entities) - len(writes)


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


@dataclasses.dataclass
class Bounded:
    """What ``run_bounded`` did: each item's result and upstream error (by index; None
    where there is none), and how many items never started."""

    results: list[Any]
    errors: list[UpstreamError | None]
    not_attempted: int = 0

    @property
    def failures(self) -> list[tuple[int, UpstreamError]]:
        """The upstream failures as (index, error), in the items' order."""
        return [(index, error) for index, error in enumerate(self.errors) if error is not None]


def run_bounded(
    items: Items[T], perform: Callable[[T], Any], concurrency: int, name: str
) -> Bounded:
    """``perform`` on every item, at most ``concurrency`` at once (threads named ``name``);
    after the first UpstreamError no new item starts (an upstream that is down would
    otherwise cost a retry budget per item). Any other exception is a bug: it is raised."""
    done = Bounded([None] * len(items), [None] * len(items))
    failed = threading.Event()
    lock = threading.Lock()

    def run(index: int) -> None:
        if failed.is_set():
            with lock:
                done.not_attempted += 1
            return
        try:
            result = perform(items[index])
        except UpstreamError as error:
            failed.set()
            done.errors[index] = error
            return
        done.results[index] = result

    if concurrency == 1 or len(items) <= 1:
        for index in range(len(items)):
            run(index)
    else:
        with ThreadPoolExecutor(
            max_workers=min(concurrency, len(items)), thread_name_prefix=name
        ) as pool:
            tasks = [pool.submit(contextvars.copy_context().run, run, i) for i in range(len(items))]
            for future in tasks:
                future.result()  # run() catches UpstreamError; anything else is a bug: raise
    return done


def run_writes(
    writes: Iterable[Write], perform: Callable[[Write], Any], concurrency: int
) -> Outcome:
    """Every write, at most ``concurrency`` at once; after the first failure no new write
    starts (an upstream that is down would otherwise cost a retry budget per entity).
    ``writes`` is taken one at a time, so a lazy iterable is never held whole."""
    outcome = Outcome()
    pending = iter(writes)
    first = list(itertools.islice(pending, 2))  # enough to tell one write from more
    pending = itertools.chain(first, pending)
    failed = threading.Event()
    lock = threading.Lock()

    def run(write: Write) -> None:
        if failed.is_set():
            with lock:
                outcome.not_attempted += 1
            return
        try:
            perform(write)
        except UpstreamError as error:
            failed.set()
            failure = Failure(
                write.entity_id,
                write.operation,
                error.status,
                str(error),
                isinstance(error, UpstreamTimeout),
            )
            with lock:
                outcome.failures.append(failure)
            return
        with lock:
            if write.record is None:
                outcome.deletes += 1
            else:
                outcome.upserts += 1

    def drain() -> None:
        while True:
            with lock:
                write = next(pending, None)
            if write is None:
                return
            run(write)

    if concurrency == 1 or len(first) <= 1:
        drain()
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sink-write") as pool:
            # Each thread in a copy of this context: the request's deadline and ledger.
            tasks = [pool.submit(contextvars.copy_context().run, drain) for _ in range(concurrency)]
            for future in tasks:
                future.result()  # run() catches UpstreamError; anything else is a bug: raise
    return outcome


class Bodies:
    """How the sink and the transform read a request's body, one object per worker so
    that they share its ``MemoryBudget``: held within ``WORKER_MEMORY_BUDGET`` (``held``),
    then read whatever the Content-Type says and however it is framed (``text``)."""

    def __init__(self, settings: Settings, budget: MemoryBudget | None = None) -> None:
        self.max_body_bytes = settings.sink_max_body_bytes
        self.client_timeout = settings.client_timeout
        self.concurrency = settings.sink_concurrency
        self.budget = budget or MemoryBudget(settings.worker_memory_budget, settings.threads)

    def held(self, what: str) -> contextlib.AbstractContextManager[Ledger]:
        """Room for this request in the budget, held while the batch is handled: a 413 at
        once for a declared length over the limit, else a wait, then a 503. Its body
        counts ``BODY_COST`` times its size, and the upstream's answers to its requests
        (``SINK_CONCURRENCY`` at once) ``ANSWER_ALLOWANCE`` each, or more as they come."""
        size = self.body_size()
        return self.budget.admit(
            what, base=BODY_COST * size, holds=self.concurrency, allowance=ANSWER_ALLOWANCE
        )

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the body is larger than SINK_MAX_BODY_BYTES ({self.max_body_bytes} "
            "bytes); lower the pipe's batch_size"
        )

    def body_size(self) -> int:
        """The bytes to hold for this request's body: its length, or the most a chunked
        body may have; a declared length over the limit is refused before any wait."""
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise self.too_large()
        return self.max_body_bytes if length is None else length

    def read_body(self) -> bytearray:
        """The body, whatever the Content-Type says and however it is framed: a chunked
        body is counted as it arrives, so it is refused (413) past the limit, not cut."""
        environ = request.environ
        refuse_codings(environ)
        length = request.content_length
        if length is None and not environ.get("wsgi.input_terminated"):
            return bytearray()  # WSGI: no length and no framing means no body
        wanted = self.max_body_bytes + 1 if length is None else length
        stream = environ["wsgi.input"]
        data = bytearray()
        deadline = time.monotonic() + self.client_timeout
        try:
            while len(data) < wanted:
                chunk = stream.read(min(READ_CHUNK, wanted - len(data)))
                if not chunk:
                    break
                data += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError
        except TimeoutError:
            raise RequestTimeout(
                f"the body did not arrive within CLIENT_TIMEOUT ({self.client_timeout:g}s)"
            ) from None
        except Exception as error:  # the server's reader: a broken chunk, a lost client
            raise BadRequest(f"the body could not be read: {error}") from None
        if len(data) > self.max_body_bytes:
            raise self.too_large()
        if length is not None and len(data) < length:
            raise BadRequest(f"the body ended after {len(data)} of its {length} bytes")
        return data

    def text(self) -> str:
        """The body as JSON text: 413, 408, or 400 if it is no text."""
        data = self.read_body()
        try:
            return body_text(data)
        except BatchError as error:
            raise BadRequest(str(error)) from None


def refuse_codings(environ: dict[str, Any]) -> None:
    """A body sent compressed (``Content-Encoding``) or with a transfer coding other than
    ``chunked`` (``Transfer-Encoding: gzip, chunked``) is refused (415): the server takes
    off the chunking only, and the rest would be read as JSON text."""
    encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"the body is sent with Content-Encoding: {encoding[:50]}; send it as it is "
            "(Sesam does): nothing was written"
        )
    codings = [c.strip().lower() for c in environ.get("HTTP_TRANSFER_ENCODING", "").split(",")]
    if any(coding not in ("", "chunked") for coding in codings):
        raise UnsupportedMediaType(
            f"the body is sent with Transfer-Encoding: {', '.join(codings)[:80]}; only "
            "chunked is read: nothing was written"
        )


def write_failed(outcome: Outcome, summary: Summary, what: str) -> ApiError:
    """The 502 (504 when every failure timed out) for writes that failed upstream."""
    failures = outcome.failures
    shown = [
        {
            "_id": f.entity_id,
            "operation": f.operation,
            "upstream_status": f.status,
            "reason": f.reason,
        }
        for f in failures[:MAX_FAILURES_SHOWN]
    ]
    statuses = sorted({str(f.status) for f in failures})
    refused = sorted({str(f.status) for f in failures if f.status in REFUSED_STATUSES})
    detail = (
        f"the upstream refused the credentials ({', '.join(refused)}): check the token the "
        "connector sends. "
        if refused
        else ""
    )
    detail += (
        f"{len(failures)} {what} failed upstream (statuses {', '.join(statuses)}); "
        f"{outcome.not_attempted} not attempted after the first failure. Every "
        "write is idempotent: retry the same request"
    )
    detail += " (the full-sync sequence did not advance)." if summary.full_sync else "."
    return upstream_failure(
        all(f.timeout for f in failures),
        detail,
        failed=shown,
        failed_count=len(failures),
        not_attempted=outcome.not_attempted,
        summary=summary.as_json(),
    )


def _chunks(values: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Sink:
    """``POST /<collection>``: one request is read, checked, written and accepted, in
    that order, each step a method; any step may raise an ``ApiError`` and stop there."""

    def __init__(self, adapter: Adapter, settings: Settings, bodies: Bodies | None = None) -> None:
        self.adapter = adapter
        self.bodies = bodies or Bodies(settings)
        self.concurrency = settings.sink_concurrency
        self.retry_budget = settings.upstream_sink_retry_budget
        self.deadline = settings.upstream_sink_deadline
        self.state_dir = settings.state_dir
        self.full_sync_delete = settings.full_sync_delete
        self.allow_empty_delete = settings.full_sync_allow_empty_delete
        try:
            self.store = SequenceStore(settings.state_dir)
        except (OSError, sqlite3.Error) as error:
            raise RuntimeError(
                f"STATE_DIR={settings.state_dir!r} cannot hold the sequence state: {error}"
            ) from None

    def register(self, app: Flask) -> None:
        app.add_url_rule("/<collection>", "sink", self.handle, methods=["POST"])

    def handle(self, collection: str) -> Response:
        require_collection(self.adapter, collection)
        started = time.monotonic()
        summary = Summary(collection)
        status, outcome = 500, "failed: unexpected error (logged below)"
        try:
            self.run(collection, summary)
            status, outcome = 200, "ok"
            return jsonify(summary.as_json())
        except ApiError as error:
            status, outcome = error.status, f"rejected: {error.detail}"
            failed = error.extra.get("failed")
            if failed:
                outcome += " failed: " + ", ".join(
                    f"{f['_id']!r} {f['operation']} {f['upstream_status']}" for f in failed[:10]
                )
            raise
        finally:
            log.info(
                "%s seconds=%.3f %s", summary.log_text(status), time.monotonic() - started, outcome
            )

    def run(self, collection: str, summary: Summary) -> None:
        """The steps: read and validate, check the sequence, write, delete what a full
        sync did not send, accept."""
        params = self.read_params()
        summary.is_full = params.is_full
        with self.bodies.held(f"a sink batch for {collection}") as ledger, self.state_errors():
            batch = self.read_batch(params)
            summary.entities = batch.entities
            summary.duplicates = batch.duplicates
            check = self.check_sequence(collection, batch, summary)
            with deadline(self.deadline, f"UPSTREAM_SINK_DEADLINE ({self.deadline:g}s)"):
                self.write(collection, batch.writes(), summary)
            batch.text = ""  # memory: what follows needs the counts, not the body
            ledger.drop_base()
            if not check.full:
                return
            assert summary.full_sync is not None  # nosec B101: narrows the type; holds by construction
            summary.full_sync.deletion = self.delete_missing(collection, batch, check, summary)
            summary.full_sync.verdict = self.accept(collection, batch, check).value

    @contextlib.contextmanager
    def state_errors(self) -> Iterator[None]:
        """The full-sync state cannot be read or written (a full or read-only disk, a
        broken file): 503 naming STATE_DIR. The sequence is checked, and written, before
        the upstream is, so such a request writes nothing upstream."""
        try:
            yield
        except sqlite3.Error as error:
            log.error("sink: the full-sync state at STATE_DIR=%r failed: %s", self.state_dir, error)
            raise ServiceUnavailable(
                f"the connector cannot keep its full-sync state in STATE_DIR="
                f"{self.state_dir!r} ({error}): check the disk; retry",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None

    def read_params(self) -> SyncParams:
        try:
            return parse_params(request.args)
        except ValueError as error:
            raise BadRequest(str(error)) from None

    def read_batch(self, params: SyncParams) -> Batch:
        """The body, then every entity checked (a 400 names the first bad one)."""
        text = self.bodies.text()
        try:
            return Batch(params, text, self.adapter.to_record, self.adapter.key)
        except BatchError as error:
            raise BadRequest(str(error)) from None

    def check_sequence(self, collection: str, batch: Batch, summary: Summary) -> SequenceCheck:
        """The full-sync rules (409), before anything is written; a tracked sequence
        stores the ids it sends, for deletion detection at its end."""
        params = batch.params
        if not (params.is_full or params.sequence_id is not None):
            return SequenceCheck(Verdict.INCREMENTAL, None, False)
        try:
            verdict, current = self.store.check(collection, params)
        except SequenceConflict as error:
            raise Conflict(str(error)) from None
        if verdict is Verdict.INCREMENTAL:
            return SequenceCheck(verdict, current, False)
        tracking = (
            self.full_sync_delete
            if verdict is Verdict.START
            else bool(current is not None and current.tracking)
        )
        summary.full_sync = FullSync(
            params.sequence_id, params.request_id, params.is_first, params.is_last, verdict.value
        )
        retry_of_ended = current is not None and current.ended and verdict is Verdict.RETRY
        assert params.sequence_id is not None  # nosec B101: narrows the type; holds by construction
        if verdict is Verdict.START:
            self.wait_for_deletion(collection, params.sequence_id)
        if self.full_sync_delete and tracking and not retry_of_ended:
            self.store.record_ids(collection, params.sequence_id, batch.ids())
        return SequenceCheck(verdict, current, tracking)

    def wait_for_deletion(self, collection: str, sequence_id: str) -> None:
        """A new sequence writes only once the sequence it replaces deletes no more: that
        one gives its lease up at its next group of deletions (it sees this claim), or
        its lease runs out, and with it every deletion it had in flight."""
        started = time.monotonic()
        while (left := self.store.lease_held_by_other(collection, sequence_id)) > 0:
            if time.monotonic() - started > DELETION_LEASE_SECONDS + 5:
                raise ServiceUnavailable(
                    f"an earlier full sync of {collection} is still deleting; retry",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            time.sleep(min(0.1, left))

    def write(self, collection: str, writes: Iterable[Write], summary: Summary) -> None:
        """One write per distinct ``_id``; any failure is a 502/504 naming the ids."""
        outcome = run_writes(writes, functools.partial(self.perform, collection), self.concurrency)
        summary.upserts, summary.deletes = outcome.upserts, outcome.deletes
        if outcome.failures:
            raise write_failed(outcome, summary, "writes")

    def perform(self, collection: str, write: Write) -> None:
        """One write, with the sink's short retry budget (it runs in a worker thread)."""
        key = write.entity_id if write.key is None else write.key
        with retry_budget(self.retry_budget):
            if write.record is None:
                self.adapter.delete(collection, key)
            else:
                self.adapter.upsert(collection, key, write.record)

    def delete_missing(
        self, collection: str, batch: Batch, check: SequenceCheck, summary: Summary
    ) -> str:
        """Deletion detection at the end of a full sync; answers what happened."""
        params, full_sync = batch.params, summary.full_sync
        assert full_sync is not None  # nosec B101: narrows the type; holds by construction
        if not self.full_sync_delete:
            return "off"
        if not params.is_last:
            return "pending" if check.tracking else "untracked"
        full_sync.deleted_missing = 0
        if check.verdict is Verdict.RETRY:
            return "already_done"
        if not check.tracking:
            log.warning(
                "sink %s: full sync %s ended, but it began before FULL_SYNC_DELETE "
                "was on (or its state was lost): nothing deleted",
                collection,
                params.sequence_id,
            )
            return "skipped_untracked"
        current = check.current
        earlier = current.live_entities if current and check.verdict is Verdict.CONTINUE else 0
        if batch.live + earlier == 0 and not self.allow_empty_delete:
            log.warning(
                "sink %s: full sync %s sent no entities: deleting nothing "
                "(FULL_SYNC_ALLOW_EMPTY_DELETE=true would delete every record)",
                collection,
                params.sequence_id,
            )
            return "skipped_empty"
        assert params.sequence_id is not None  # nosec B101: narrows the type; holds by construction
        sequence_id = params.sequence_id
        missing = self.missing_ids(collection, sequence_id)
        # The lease: taken only if the sequence is still as it was checked (no copy of
        # this request ended it, no new sync replaced it: either would have dropped the
        # ids it sent, and every record would look missing), renewed before each group,
        # and given up when a newer sequence has begun. Deletes run within it.
        store, lease = self.store, DELETION_LEASE_SECONDS
        if not store.lease_deletion(collection, sequence_id, check.current, lease):
            return "already_done" if store.current(collection) != check.current else "superseded"
        deleted, stopped = 0, False
        try:
            for group in _chunks(missing, self.concurrency * 8):
                if not store.lease_deletion(collection, sequence_id, check.current, lease):
                    stopped = True
                    break
                with deadline(lease, f"the deletion lease ({lease:g}s)"):
                    outcome = run_writes(
                        group, functools.partial(self.perform, collection), self.concurrency
                    )
                deleted += outcome.deletes
                full_sync.deleted_missing = deleted
                if outcome.failures:
                    raise write_failed(
                        outcome, summary, "deletions of records the full sync did not send"
                    )
        finally:
            store.end_deletion(collection, sequence_id)
        return "superseded" if stopped else "done"

    def missing_ids(self, collection: str, sequence_id: str) -> list[Write]:
        """The deletes of live upstream ids the sequence did not send (asked a page at a
        time), every one mapped to its key before any is deleted."""
        missing: list[Write] = []
        key = self.adapter.key
        try:
            with retry_budget(self.retry_budget):
                for chunk in _chunks(self.adapter.live_ids(collection), LIVE_ID_CHUNK):
                    sent = self.store.sent_among(collection, sequence_id, chunk)
                    missing.extend(Write(i, None, key(i)) for i in chunk if i not in sent)
        except UpstreamError as error:
            raise upstream_failure(
                isinstance(error, UpstreamTimeout),
                f"listing the upstream's live records failed: {error}",
            ) from None
        except DATA_ERRORS as error:
            raise upstream_failure(
                False,
                "listing the upstream's live records failed: a record the adapter could not "
                f"read ({type(error).__name__}: {mask(str(error))[:200]}); nothing was deleted",
            ) from None
        return missing

    def accept(self, collection: str, batch: Batch, check: SequenceCheck) -> Verdict:
        """The sequence advances, only now that every write succeeded. The verdict is
        decided again: a copy of this request accepted meanwhile makes this one a retry."""
        try:
            return self.store.accept(
                collection, batch.params, live_entities=batch.live, tracking=check.tracking
            )
        except SequenceConflict as error:
            raise Conflict(
                f"{error} (the sequence changed while this request was written; its writes stand)"
            ) from None
