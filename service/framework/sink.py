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
import json
import logging
import re
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

from service.framework.errors import json_error
from service.framework.feed import check_collection
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


class Rejected(Exception):
    """The request is answered with an error and nothing more is done."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra


class BatchError(ValueError):
    """The body is not a valid batch (400); the message names the problem and index."""


@dataclasses.dataclass(frozen=True)
class Write:
    """One upstream write: ``record`` is None for a delete."""

    entity_id: str
    record: dict[str, Any] | None


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


Job = tuple[str, str, Callable[[], Any]]  # (entity id, "put" or "delete", the call)


def run_writes(jobs: list[Job], concurrency: int) -> Outcome:
    """Every job, at most ``concurrency`` at once; after the first failure no new job
    starts (an upstream that is down would otherwise cost a retry budget per entity)."""
    outcome = Outcome()
    if not jobs:
        return outcome
    failed = threading.Event()
    lock = threading.Lock()

    def run(job: Job) -> None:
        entity_id, operation, call = job
        if failed.is_set():
            with lock:
                outcome.not_attempted += 1
            return
        try:
            call()
        except UpstreamError as error:
            failed.set()
            with lock:
                outcome.failures.append(
                    Failure(
                        entity_id,
                        operation,
                        error.status,
                        str(error),
                        isinstance(error, UpstreamTimeout),
                    )
                )
            return
        with lock:
            if operation == "delete":
                outcome.deletes += 1
            else:
                outcome.upserts += 1

    if concurrency == 1 or len(jobs) == 1:
        for job in jobs:
            run(job)
        return outcome
    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(jobs)), thread_name_prefix="sink-write"
    ) as pool:
        for future in [pool.submit(run, job) for job in jobs]:
            future.result()  # run() catches UpstreamError; anything else is a bug: raise
    return outcome


def _chunks(values: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def register_sink(
    app: Flask,
    settings: Settings,
    *,
    collection: re.Pattern[str],
    to_record: Callable[[dict[str, Any]], dict[str, Any]],
    upsert: Callable[[str, str, dict[str, Any]], Any],
    delete: Callable[[str, str], Any],
    live_ids: Callable[[str], Iterable[str]],
) -> None:
    """``POST /<resource>``: the sink of one upstream collection."""
    max_body_bytes = settings.sink_max_body_bytes
    concurrency = settings.sink_concurrency
    state_dir = settings.state_dir
    full_sync_delete = settings.full_sync_delete
    allow_empty_delete = settings.full_sync_allow_empty_delete
    try:
        store = SequenceStore(state_dir)
    except (OSError, sqlite3.Error) as error:
        raise RuntimeError(
            f"STATE_DIR={state_dir!r} cannot hold the sequence state: {error}"
        ) from None

    def jobs_for(resource: str, writes: list[Write]) -> list[Job]:
        jobs: list[Job] = []
        for write in writes:
            if write.record is None:
                jobs.append(
                    (write.entity_id, "delete", lambda i=write.entity_id: delete(resource, i))
                )
            else:
                jobs.append(
                    (
                        write.entity_id,
                        "put",
                        lambda i=write.entity_id, r=write.record: upsert(resource, i, r),
                    )
                )
        return jobs

    def missing_ids(resource: str, sequence_id: str) -> list[str]:
        """Live upstream ids the sequence did not send (asked a page at a time)."""
        missing: list[str] = []
        for chunk in _chunks(live_ids(resource), LIVE_ID_CHUNK):
            sent = store.sent_among(resource, sequence_id, chunk)
            missing.extend(i for i in chunk if i not in sent)
        return missing

    def write_failed(outcome: Outcome, summary: dict[str, Any], what: str) -> Rejected:
        failures = outcome.failures
        status = 504 if all(f.timeout for f in failures) else 502
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
        detail += " (the full-sync sequence did not advance)." if summary.get("full_sync") else "."
        return Rejected(
            status,
            "Bad Gateway" if status == 502 else "Upstream Timeout",
            detail,
            failed=shown,
            failed_count=len(failures),
            not_attempted=outcome.not_attempted,
            summary=summary,
        )

    def handle(resource: str, summary: dict[str, Any]) -> None:
        try:
            params = parse_params(request.args)
        except ValueError as error:
            raise Rejected(400, "Bad Request", str(error)) from None
        summary["is_full"] = params.is_full
        request.max_content_length = max_body_bytes
        try:
            data = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise Rejected(
                413,
                "Request Entity Too Large",
                f"the body is larger than SINK_MAX_BODY_BYTES ({max_body_bytes} "
                "bytes); lower the pipe's batch_size",
            ) from None
        try:
            entities = parse_body(data)
            del data  # memory: the text is not needed once parsed
            writes, duplicates = prepare_batch(entities, to_record)
            del entities
        except BatchError as error:
            raise Rejected(400, "Bad Request", str(error)) from None
        live = sum(1 for w in writes if w.record is not None)
        summary.update(entities=len(writes) + duplicates, duplicates=duplicates)

        verdict = Verdict.INCREMENTAL
        current = None
        if params.is_full or params.sequence_id is not None:
            try:
                verdict, current = store.check(resource, params)
            except SequenceConflict as error:
                raise Rejected(409, "Conflict", str(error)) from None
        full = verdict is not Verdict.INCREMENTAL
        tracking = (
            full_sync_delete
            if verdict is Verdict.START
            else bool(current is not None and current.tracking)
        )
        if full:
            summary["full_sync"] = sync_info = {
                "sequence_id": params.sequence_id,
                "request_id": params.request_id,
                "is_first": params.is_first,
                "is_last": params.is_last,
                "verdict": verdict.value,
            }
            if (
                full_sync_delete
                and tracking
                and not (current is not None and current.ended and verdict is Verdict.RETRY)
            ):
                assert params.sequence_id is not None
                store.record_ids(resource, params.sequence_id, (w.entity_id for w in writes))

        outcome = run_writes(jobs_for(resource, writes), concurrency)
        summary.update(upserts=outcome.upserts, deletes=outcome.deletes)
        if outcome.failures:
            raise write_failed(outcome, summary, "writes")
        if not full:
            return

        sync_info["deletion"] = deletion(
            resource, params, verdict, current, tracking, live, summary
        )
        try:
            store.accept(resource, params, live_entities=live, tracking=tracking)
        except SequenceConflict as error:
            raise Rejected(
                409,
                "Conflict",
                f"{error} (the sequence changed while this request was written; its writes stand)",
            ) from None

    def deletion(
        resource: str,
        params: SyncParams,
        verdict: Verdict,
        current: Any,
        tracking: bool,
        live: int,
        summary: dict[str, Any],
    ) -> str:
        """Deletion detection at the end of a full sync; answers what happened."""
        if not full_sync_delete:
            return "off"
        if not params.is_last:
            return "pending" if tracking else "untracked"
        summary["full_sync"]["deleted_missing"] = 0
        if verdict is Verdict.RETRY:
            return "already_done"
        if not tracking:
            log.warning(
                "sink %s: full sync %s ended, but it began before FULL_SYNC_DELETE "
                "was on (or its state was lost): nothing deleted",
                resource,
                params.sequence_id,
            )
            return "skipped_untracked"
        sent = live + (current.live_entities if verdict is Verdict.CONTINUE else 0)
        if sent == 0 and not allow_empty_delete:
            log.warning(
                "sink %s: full sync %s sent no entities: deleting nothing "
                "(FULL_SYNC_ALLOW_EMPTY_DELETE=true would delete every record)",
                resource,
                params.sequence_id,
            )
            return "skipped_empty"
        assert params.sequence_id is not None
        missing = missing_ids(resource, params.sequence_id)
        outcome = run_writes(
            [(i, "delete", lambda i=i: delete(resource, i)) for i in missing], concurrency
        )
        summary["full_sync"]["deleted_missing"] = outcome.deletes
        if outcome.failures:
            raise write_failed(outcome, summary, "deletions of records the full sync did not send")
        return "done"

    @app.post("/<resource>")
    def sink(resource: str) -> Response:
        check_collection(collection, resource)
        started = time.monotonic()
        summary: dict[str, Any] = {
            "resource": resource,
            "is_full": False,
            "entities": 0,
            "duplicates": 0,
            "upserts": 0,
            "deletes": 0,
        }
        status = 200
        outcome = "ok"
        try:
            handle(resource, summary)
            return jsonify(summary)
        except Rejected as rejected:
            status = rejected.status
            outcome = f"rejected: {rejected.detail}"
            if "failed" in rejected.extra:
                shown = rejected.extra["failed"][:10]
                outcome += " failed: " + ", ".join(
                    f"{f['_id']!r} {f['operation']} {f['upstream_status']}" for f in shown
                )
            return json_error(rejected.status, rejected.error, rejected.detail, **rejected.extra)
        except UpstreamError as error:  # listing live ids for deletion detection
            status = 504 if isinstance(error, UpstreamTimeout) else 502
            outcome = f"failed: {error}"
            return json_error(
                status,
                "Bad Gateway" if status == 502 else "Upstream Timeout",
                f"listing the upstream's live records failed: {error}",
                summary=summary,
            )
        except Exception:
            status = 500
            outcome = "failed: unexpected error (logged below)"
            raise
        finally:
            log.info(
                "sink %s status=%d entities=%d duplicates=%d upserts=%d deletes=%d%s "
                "seconds=%.3f %s",
                resource,
                status,
                summary["entities"],
                summary["duplicates"],
                summary["upserts"],
                summary["deletes"],
                _sync_text(summary),
                time.monotonic() - started,
                outcome,
            )


def _sync_text(summary: dict[str, Any]) -> str:
    info = summary.get("full_sync")
    if info is None:
        return f" is_full={str(summary['is_full']).lower()}"
    text = (
        f" is_full=true sequence_id={info['sequence_id']!r}"
        f" request_id={info['request_id']!r}"
        f" is_first={str(info['is_first']).lower()} is_last={str(info['is_last']).lower()}"
        f" verdict={info['verdict']}"
    )
    if "deletion" in info:
        text += f" deletion={info['deletion']}"
    if "deleted_missing" in info:
        text += f" deleted_missing={info['deleted_missing']}"
    return text
