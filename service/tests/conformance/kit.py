"""The conformance suite's contract: what a fork hands it, typed.

A fork wires the suite in one place, a ``conformance_target`` fixture in
``service/tests/conftest.py`` that answers a ``ConformanceTarget``: its running connector,
the collection to use, and a driver of its upstream that implements
``ConformanceUpstream``. ``conftest.py`` beside this file turns that into the fixtures the
checks use.

The hooks of the loss checks (``change``, ``change_after_pages``, ``coarse_clock``) and of
the credentials check (``expire_tokens``) are optional: a driver that cannot do one raises ``NotSupported`` with the reason (or lacks
the method), and the checks that need it are skipped with that reason in the report.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Protocol


class NotSupported(Exception):
    """Raised by a driver's hook that its upstream cannot do; the message says why."""


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
        """Undo the breaks, and give the upstream its own clock back (``coarse_clock``)."""

    def change(self, entity_id: str) -> None:
        """Optional: change one live record upstream, as a user of that system would: a
        field's value changes, and the upstream gives it a new modification time."""

    def change_after_pages(self, entity_id: str, pages: int) -> None:
        """Optional: arm a change (as ``change``) that the upstream makes while a client
        pages through a list: after it has served ``pages`` more list pages (of any list
        request), before it answers the next. It happens once."""

    def coarse_clock(self) -> None:
        """Optional: from now until ``heal()``, the upstream stamps every write with one
        and the same time, the current one: a coarse clock (whole seconds, say) whose tick
        lasts as long as the check needs. For an upstream whose times are already coarse,
        freeze its clock."""

    def expire_tokens(self) -> None:
        """Optional: from now on the upstream refuses every access token it has issued so
        far (an OAuth2 token's expiry or revocation), as it would once their lifetime is
        over; new ones are issued as before. An upstream whose credentials never expire (a
        static API key or token) raises ``NotSupported`` saying so."""

    def entity(self, number: int) -> dict[str, Any]:
        """An entity (with ``_id``) that the sink can write."""

    def written(self) -> dict[str, dict[str, Any]]:
        """The live records upstream now, by entity ``_id``, without the fields the
        upstream sets itself (its modification time). The fields are named and valued as
        the feed's entities carry them: the loss checks compare them with what Sesam got."""

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
    #: The connector's settle window (``FEED_SETTLE_SECONDS`` when set, else its adapter's
    #: ``settle_seconds``): the loss checks wait this long, and more, for a record written
    #: late into the window to settle and come, before they call it lost.
    settle_seconds: float = 0.0
