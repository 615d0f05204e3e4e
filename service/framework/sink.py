"""The sink: Sesam's JSON push protocol, written into the upstream.

``POST /<resource>`` takes a JSON array of entities. In order:

1. the query parameters (a full sync needs its sequence tokens): 400;
2. the body, whatever the Content-Type says: size (413), JSON, an array of objects,
   each with a non-empty string ``_id``, each mappable to an upstream record: 400
   naming the entity's index;
3. the full-sync sequence rules (``service.framework.sequences``): 409;
4. the writes: one per distinct ``_id`` (the last version in the batch wins), at most
   ``SINK_CONCURRENCY`` at once; a failure answers 502 (504 if every failure was a
   timeout) naming the failed ids and upstream statuses;
5. at the end of a full sync, optional deletion of what the sync did not send;
6. the sequence advances, only now.

A 4xx writes nothing and does not advance the sequence; neither does a 5xx, so Sesam's
retry of the same request is accepted. Every write is idempotent (PUT, and DELETE where
404 counts as done), which also makes Sesam's one-entity-at-a-time fallback safe.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from flask import Response
from flask import jsonify
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from service.framework.adapter import Adapter
from service.framework.adapter import require_collection
from service.framework.errors import ApiError
from service.framework.errors import BadRequest
from service.framework.errors import Conflict
from service.framework.errors import PayloadTooLarge
from service.framework.errors import upstream_failure
from service.framework.sequences import Sequence
from service.framework.sequences import SequenceConflict
from service.framework.sequences import SequenceStore
from service.framework.sequences import SyncParams
from service.framework.sequences import Verdict
from service.framework.sequences import parse_params
from service.framework.settings import Settings
from service.framework.upstream import UpstreamError
from service.framework.upstream import UpstreamTimeout

log = logging.getLogger(__name__)

MAX_FAILURES_SHOWN = 100
LIVE_ID_CHUNK = 1000


class BatchError(ValueError):
    """The body is not a valid batch (400); the message names the problem and index."""


@dataclasses.dataclass(frozen=True)
class Write:
    """One upstream write: ``record`` is None for a delete."""

    entity_id: str
    record: dict[str, Any] | None

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

    def log_text(self) -> str:
        sync = (
            self.full_sync.log_text()
            if self.full_sync is not None
            else f" is_full={str(self.is_full).lower()}"
        )
        return (
            f"sink {self.resource} entities={self.entities} duplicates={self.duplicates} "
            f"upserts={self.upserts} deletes={self.deletes}{sync}"
        )


@dataclasses.dataclass(frozen=True)
class Batch:
    """A validated request: its sync parameters and its writes, one per ``_id``."""

    params: SyncParams
    writes: list[Write]
    duplicates: int

    @property
    def live(self) -> int:
        return sum(1 for w in self.writes if w.record is not None)


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


def parse_body(data: bytes) -> Any:
    """JSON text (UTF-8, or UTF-16/32 as RFC 8259 allows readers to detect)."""
    if not data.strip():
        raise BatchError("the body is empty; send a JSON array of entities ([] for none)")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except BatchError:
        raise
    except RecursionError:
        raise BatchError("the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise BatchError("the body is not UTF-8 text") from None
    except ValueError as error:
        raise BatchError(f"the body is not JSON: {error}") from None


def _strict_json(record: dict[str, Any]) -> bool:
    """A record the upstream can read: no lone surrogates, no NaN."""
    try:
        json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def prepare_batch(
    entities: Any, to_record: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[list[Write], int]:
    """Validate every entity before anything is written; answer the writes (one per
    ``_id``, the last version wins) and how many versions were superseded."""
    if not isinstance(entities, list):
        raise BatchError(
            f"the body must be a JSON array of entities, not a JSON {_json_type(entities)}"
        )
    writes: dict[str, Write] = {}
    for index, entity in enumerate(entities):
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
        if entity.get("_deleted") is True:
            record = None
        else:
            try:
                record = to_record(entity)
            except RecursionError:
                raise BatchError(f"entity {index} ({entity_id!r}) is nested too deeply") from None
            except ValueError as error:
                raise BatchError(f"entity {index} ({entity_id!r}): {error}") from None
            if not _strict_json(record):
                raise BatchError(
                    f"entity {index} ({entity_id!r}) holds a string that is not "
                    "valid Unicode (a lone surrogate)"
                )
        writes.pop(entity_id, None)  # keep the last version, in its place
        writes[entity_id] = Write(entity_id, record)
    return list(writes.values()), len(entities) - len(writes)


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


def run_writes(writes: list[Write], perform: Callable[[Write], Any], concurrency: int) -> Outcome:
    """Every write, at most ``concurrency`` at once; after the first failure no new write
    starts (an upstream that is down would otherwise cost a retry budget per entity)."""
    outcome = Outcome()
    if not writes:
        return outcome
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

    if concurrency == 1 or len(writes) == 1:
        for write in writes:
            run(write)
        return outcome
    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(writes)), thread_name_prefix="sink-write"
    ) as pool:
        for future in [pool.submit(run, write) for write in writes]:
            future.result()  # run() catches UpstreamError; anything else is a bug: raise
    return outcome


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
    detail = (
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


def _chunks(values: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
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

    def __init__(self, adapter: Adapter, settings: Settings) -> None:
        self.adapter = adapter
        self.max_body_bytes = settings.sink_max_body_bytes
        self.concurrency = settings.sink_concurrency
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
                "sink %s status=%d entities=%d duplicates=%d upserts=%d deletes=%d%s "
                "seconds=%.3f %s",
                collection,
                status,
                summary.entities,
                summary.duplicates,
                summary.upserts,
                summary.deletes,
                summary.full_sync.log_text()
                if summary.full_sync
                else f" is_full={str(summary.is_full).lower()}",
                time.monotonic() - started,
                outcome,
            )

    def run(self, collection: str, summary: Summary) -> None:
        """The steps: read and validate, check the sequence, write, delete what a full
        sync did not send, accept."""
        params = self.read_params()
        summary.is_full = params.is_full
        batch = self.read_batch(params)
        summary.entities = len(batch.writes) + batch.duplicates
        summary.duplicates = batch.duplicates
        check = self.check_sequence(collection, batch, summary)
        self.write(collection, batch.writes, summary)
        if not check.full:
            return
        assert summary.full_sync is not None
        summary.full_sync.deletion = self.delete_missing(collection, batch, check, summary)
        self.accept(collection, batch, check)

    def read_params(self) -> SyncParams:
        try:
            return parse_params(request.args)
        except ValueError as error:
            raise BadRequest(str(error)) from None

    def read_batch(self, params: SyncParams) -> Batch:
        """The body, whatever the Content-Type says: size (413), then every entity."""
        request.max_content_length = self.max_body_bytes
        try:
            data = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise PayloadTooLarge(
                f"the body is larger than SINK_MAX_BODY_BYTES ({self.max_body_bytes} "
                "bytes); lower the pipe's batch_size"
            ) from None
        try:
            entities = parse_body(data)
            del data  # memory: the text is not needed once parsed
            writes, duplicates = prepare_batch(entities, self.adapter.to_record)
        except BatchError as error:
            raise BadRequest(str(error)) from None
        return Batch(params, writes, duplicates)

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
        if self.full_sync_delete and tracking and not retry_of_ended:
            assert params.sequence_id is not None
            self.store.record_ids(
                collection, params.sequence_id, (w.entity_id for w in batch.writes)
            )
        return SequenceCheck(verdict, current, tracking)

    def write(self, collection: str, writes: list[Write], summary: Summary) -> None:
        """One write per distinct ``_id``; any failure is a 502/504 naming the ids."""
        outcome = run_writes(writes, functools.partial(self.perform, collection), self.concurrency)
        summary.upserts, summary.deletes = outcome.upserts, outcome.deletes
        if outcome.failures:
            raise write_failed(outcome, summary, "writes")

    def perform(self, collection: str, write: Write) -> None:
        if write.record is None:
            self.adapter.delete(collection, write.entity_id)
        else:
            self.adapter.upsert(collection, write.entity_id, write.record)

    def delete_missing(
        self, collection: str, batch: Batch, check: SequenceCheck, summary: Summary
    ) -> str:
        """Deletion detection at the end of a full sync; answers what happened."""
        params, full_sync = batch.params, summary.full_sync
        assert full_sync is not None
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
        assert params.sequence_id is not None
        missing = [Write(i, None) for i in self.missing_ids(collection, params.sequence_id)]
        if self.store.current(collection) != check.current:
            # The sequence moved on while the live ids were listed: a copy of this request
            # ended it, or a new sync replaced it, and either dropped the ids it sent, so
            # every record may look missing. Delete nothing; accept says retry or 409.
            return "already_done"
        outcome = run_writes(missing, functools.partial(self.perform, collection), self.concurrency)
        full_sync.deleted_missing = outcome.deletes
        if outcome.failures:
            raise write_failed(outcome, summary, "deletions of records the full sync did not send")
        return "done"

    def missing_ids(self, collection: str, sequence_id: str) -> list[str]:
        """Live upstream ids the sequence did not send (asked a page at a time)."""
        missing: list[str] = []
        try:
            for chunk in _chunks(self.adapter.live_ids(collection), LIVE_ID_CHUNK):
                sent = self.store.sent_among(collection, sequence_id, chunk)
                missing.extend(i for i in chunk if i not in sent)
        except UpstreamError as error:
            raise upstream_failure(
                isinstance(error, UpstreamTimeout),
                f"listing the upstream's live records failed: {error}",
            ) from None
        return missing

    def accept(self, collection: str, batch: Batch, check: SequenceCheck) -> None:
        """The sequence advances, only now that every write succeeded."""
        try:
            self.store.accept(
                collection, batch.params, live_entities=batch.live, tracking=check.tracking
            )
        except SequenceConflict as error:
            raise Conflict(
                f"{error} (the sequence changed while this request was written; its writes stand)"
            ) from None
