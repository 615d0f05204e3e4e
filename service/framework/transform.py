"""The HTTP transform: a pipe's ``{"type": "http"}`` transform, served for the adapter.

``POST /transform/<name>`` takes a JSON array of entities (the pipe's ``batch_size``, 100
by default) and answers a JSON array of the entities transformed. In order:

1. the name: a transform the adapter does not offer (``Adapter.transform``) is a 404;
2. the body, as the sink reads it (``service.framework.sink.Bodies``): held within the
   worker's ``WORKER_MEMORY_BUDGET`` (503 with ``Retry-After`` when there is no room), size
   (413 however it is framed), JSON, an array of objects, each with a non-empty string
   ``_id`` that is valid Unicode: 400 naming the entity's index;
3. the transform, once per entity, at most ``SINK_CONCURRENCY`` at once with the sink's
   short retry budget (``UPSTREAM_SINK_RETRY_BUDGET``) and the batch's deadline
   (``UPSTREAM_SINK_DEADLINE``), through the sink's bounded executor; after the first
   upstream failure no new entity starts;
4. the answer, in the batch's order: an entity the transform returns keeps the input's
   reserved fields (``_id``, ``_updated``, ``_deleted``, ...) unless it sets them; a list
   it returns (zero or more entities) is taken as it is, each needing a string ``_id``.

Nothing is half-done: an entity the transform refuses (ValueError) is a 400 naming it, an
upstream failure a 502 (504 when every failure timed out) naming the entities, and a
transform that breaks its contract a 500 naming it. Sesam takes a 2xx answer as the whole
result for the batch, so there is never a 200 with holes.

Memory: like the sink, the body is never parsed whole. It is walked once to check every
entity, then again ``WINDOW`` entities at a time: each window is transformed and its
answer kept as text, so what is held is the body's text, the answer's text and one window
parsed. A batch of more than ``WINDOW`` entities stops after the first window that has an
upstream failure, a refused entity or a broken result (Sesam's default transform batch is
100 entities: one window).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask
from flask import Response

from service.framework.adapter import Adapter
from service.framework.adapter import Entity
from service.framework.adapter import Transform
from service.framework.deadlines import deadline
from service.framework.errors import ApiError
from service.framework.errors import BadRequest
from service.framework.errors import NotFound
from service.framework.errors import upstream_failure
from service.framework.memory import Ledger
from service.framework.settings import Settings
from service.framework.sink import MAX_FAILURES_SHOWN
from service.framework.sink import BatchError
from service.framework.sink import Bodies
from service.framework.sink import check_entity
from service.framework.sink import run_bounded
from service.framework.sink import walk
from service.framework.upstream import UpstreamTimeout
from service.framework.upstream import retry_budget

log = logging.getLogger(__name__)

WINDOW = 1000  # entities parsed and transformed at once


@dataclasses.dataclass(frozen=True)
class Refused:
    """The transform refused an entity (it raised ValueError): the answer is a 400."""

    reason: str


class TransformBroken(ApiError):
    """The adapter's transform broke its contract (a bug in the connector): a 500."""


def merge(entity: Entity, result: Any, name: str, index: int) -> list[Entity]:
    """The entities a transform's result stands for, in order. An entity keeps the
    input's reserved fields unless it sets them; a list is taken as it is."""
    if isinstance(result, dict):
        reserved = {key: value for key, value in entity.items() if key.startswith("_")}
        reserved.update(result)
        results = [reserved]
    elif isinstance(result, list):
        results = result
    else:
        raise TransformBroken(
            f"transform {name!r} returned a {type(result).__name__} for entity {index} "
            f"({entity['_id']!r}); a transform returns an entity or a list of entities"
        )
    for made in results:
        if not isinstance(made, dict) or not isinstance(made.get("_id"), str) or not made["_id"]:
            raise TransformBroken(
                f"transform {name!r} made an entity without a string _id from entity "
                f"{index} ({entity['_id']!r})"
            )
    return results


class TransformEndpoint:
    """``POST /transform/<name>``: read, transform every entity, answer, in that order."""

    def __init__(self, adapter: Adapter, settings: Settings, bodies: Bodies | None = None) -> None:
        self.adapter = adapter
        self.bodies = bodies or Bodies(settings)
        self.concurrency = settings.sink_concurrency
        self.retry_budget = settings.upstream_sink_retry_budget
        self.deadline = settings.upstream_sink_deadline

    def register(self, app: Flask) -> None:
        # Two path segments: never the sink's or the feed's /<collection> (one segment).
        app.add_url_rule("/transform/<name>", "transform", self.handle, methods=["POST"])

    def handle(self, name: str) -> Response:
        transform = self.adapter.transform(name)
        if transform is None:
            raise NotFound(f"this connector has no transform named {name!r}")
        started = time.monotonic()
        count, made, status, outcome = 0, 0, 500, "failed: unexpected error (logged below)"
        try:
            with self.bodies.held(f"the transform {name!r}") as ledger:
                text = self.read()
                count = self.check(text)
                with deadline(self.deadline, f"UPSTREAM_SINK_DEADLINE ({self.deadline:g}s)"):
                    body, made = self.run(name, transform, text, count, ledger)
                del text
            status, outcome = 200, "ok"
            return Response(body, mimetype="application/json")
        except ApiError as error:
            status, outcome = error.status, f"rejected: {error.detail}"
            raise
        finally:
            log.info(
                "transform %s status=%d entities=%d out=%d seconds=%.3f %s",
                name,
                status,
                count,
                made,
                time.monotonic() - started,
                outcome,
            )

    def read(self) -> str:
        """The body's text, as the sink reads it (413, 408, 400)."""
        return self.bodies.text()

    @staticmethod
    def check(text: str) -> int:
        """Every entity checked before any is transformed (400 naming the first bad one);
        answers how many there are."""
        count = 0
        try:
            for index, entity in enumerate(walk(text)):
                check_entity(entity, index)
                count += 1
        except BatchError as error:
            raise BadRequest(str(error)) from None
        return count

    def run(
        self, name: str, transform: Transform, text: str, count: int, ledger: Ledger | None = None
    ) -> tuple[str, int]:
        """The answer's text and how many entities it holds, a window at a time; the
        text counts against the request's memory as it grows (``ledger``)."""
        entities: Iterator[Entity] = walk(text)
        pieces: list[str] = []
        made = 0
        for start in range(0, count, WINDOW):
            window = list(itertools.islice(entities, WINDOW))
            done = run_bounded(
                window, functools.partial(self.apply, transform), self.concurrency, "transform"
            )
            if done.failures:
                not_attempted = done.not_attempted + count - start - len(window)
                raise self.failed(name, window, count, done.failures, not_attempted)
            output: list[Entity] = []
            for offset, (entity, result) in enumerate(zip(window, done.results, strict=True)):
                if isinstance(result, Refused):
                    raise BadRequest(
                        f"entity {start + offset} ({entity['_id']!r}): {result.reason}",
                        transform=name,
                    )
                output.extend(merge(entity, result, name, start + offset))
            if output:
                pieces.append(self.answer(name, output)[1:-1])
                made += len(output)
                if ledger is not None:
                    ledger.add(2 * len(pieces[-1]))  # the piece, and the answer joined
        return "[" + ", ".join(pieces) + "]", made

    @staticmethod
    def answer(name: str, output: list[Entity]) -> str:
        """The answer's text: strict JSON (no NaN), or the transform is broken."""
        try:
            return json.dumps(output, ensure_ascii=False, allow_nan=False)
        except RecursionError:
            raise TransformBroken(
                f"transform {name!r} made entities nested too deeply to write as JSON"
            ) from None
        except (TypeError, ValueError) as error:
            raise TransformBroken(
                f"transform {name!r} made entities that are not JSON: {error}"
            ) from None

    def apply(self, transform: Transform, entity: Entity) -> Any:
        """One entity, in a worker thread, with the sink's short retry budget."""
        with retry_budget(self.retry_budget):
            try:
                return transform(entity)
            except RecursionError:
                return Refused("it is nested too deeply")
            except ValueError as error:
                return Refused(str(error))

    @staticmethod
    def failed(
        name: str,
        window: list[Entity],
        count: int,
        failures: list[tuple[int, Any]],
        not_attempted: int,
    ) -> ApiError:
        """The 502 (504 when every failure timed out) naming the entities that failed
        (``failures`` index the window; ``count`` entities in the batch)."""
        shown = [
            {
                "_id": window[index]["_id"],
                "upstream_status": error.status,
                "reason": str(error),
            }
            for index, error in failures[:MAX_FAILURES_SHOWN]
        ]
        statuses = sorted({str(error.status) for _, error in failures})
        detail = (
            f"transform {name!r}: {len(failures)} of {count} entities failed upstream "
            f"(statuses {', '.join(statuses)}); {not_attempted} not attempted after the first "
            "failure. Nothing was answered for the batch: Sesam may retry it."
        )
        return upstream_failure(
            all(isinstance(error, UpstreamTimeout) for _, error in failures),
            detail,
            failed=shown,
            failed_count=len(failures),
            not_attempted=not_attempted,
        )
