"""The conformance suite's contract: what a fork hands it, typed.

A fork wires the suite in one place, a ``conformance_target`` fixture in
``service/tests/conftest.py`` that answers a ``ConformanceTarget``: its running connector,
the collection to use, and a driver of its upstream that implements
``ConformanceUpstream``. ``conftest.py`` beside this file turns that into the fixtures the
checks use.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Protocol


class ConformanceUpstream(Protocol):
    """The upstream behind the collection, as the suite seeds, breaks and inspects it."""

    #: Records per upstream page the connector asks for (its page size setting).
    page_size: int

    def seed(self, count: int, tie: int) -> None:
        """Fill the empty collection with ``count`` live records, ``tie`` of them (in the
        middle of the feed) sharing one modification time."""

    def delete(self, entity_id: str) -> None:
        """Delete one record upstream, as a user of that system would."""

    def break_before_first_page(self) -> None:
        """Make every upstream request fail until ``heal()``."""

    def break_after_first_page(self) -> None:
        """Serve the first list page, then make requests fail until ``heal()``."""

    def heal(self) -> None:
        """Undo the breaks."""

    def entity(self, number: int) -> dict[str, Any]:
        """An entity (with ``_id``) that the sink can write."""

    def written(self) -> dict[str, dict[str, Any]]:
        """The live records upstream now, by entity ``_id``, without the fields the
        upstream sets itself (its modification time)."""

    def writes(self) -> int:
        """How many writes (creates, updates, deletes) the upstream has taken."""


@dataclasses.dataclass
class ConformanceTarget:
    """What the suite checks: a running connector and the upstream behind it."""

    url: str  # the connector's base URL
    collection: str  # the path a pipe names, served by the feed and the sink
    upstream: ConformanceUpstream
    auth: Any = None  # for requests, when the connector needs basic auth
    #: An HTTP transform (``POST /transform/<name>``) over the collection's feed entities,
    #: one entity out for each in; None skips the transform checks.
    transform: str | None = None
    #: ``{"test_name": "why this fork skips it"}``; a skip without a reason is an error.
    skips: dict[str, str] = dataclasses.field(default_factory=dict)
