"""BROKEN ON PURPOSE: the Tickets adapter with a cursor that is an offset in disguise.

Many upstreams hand out an opaque cursor (``$skiptoken``, ``next``, a next link) that is,
underneath, an offset: "the page after the first 200". This adapter models that with the
Tickets API: the next page number is handed on as a cursor, trusted, never checked. It
re-anchors on ``modified_since`` after each page as the blocks do, so a change between
pages of different times loses nothing, and it passed every loss check that changes a
record after the first page. Inside a tie wider than a page, though, the walk steps
within one query; a change there moves a ticket to the end, the list shifts up by one
under the cursor, and the ticket that crossed the page boundary is never delivered. A
direct run of a fork built like this lost a record while the suite passed 42 of 42.
``test_a_change_inside_a_tie_between_two_pages_of_one_query_loses_nothing`` must fail it
(``test_conformance_catches_loss.py``); ``PageNumberPaging`` (which reads the record
before each page again, and starts over when the list moved) is the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from service.framework.app import AppFactory
from service.framework.paging import LoopGuard
from service.framework.paging import Page
from service.framework.paging import PageNumberPaging
from service.framework.upstream import UpstreamClient
from service.tools.examples.tickets import Tickets
from service.tools.examples.tickets import TicketsSettings


@dataclasses.dataclass(kw_only=True)
class PageNumberAsCursor(PageNumberPaging):
    """Page numbers stepped like a cursor: no look back at the page before."""

    def steps(
        self, client: UpstreamClient, url: str, params: dict[str, Any], guard: LoopGuard
    ) -> Iterator[Page]:
        page = self.first_page
        while True:
            body = client.get_json(
                url, {**params, self.page_param: page, self.size_param: self.size}
            )
            records = self.extract(body, url)
            final = not records or self.is_last(body, (page - self.first_page) * self.size, 1)
            yield records, final
            if final:
                return
            page += 1
            guard.step(page)


class OffsetCursorTickets(Tickets):
    def __init__(self, settings: TicketsSettings) -> None:
        super().__init__(settings)
        blocks = self.paging
        self.paging = PageNumberAsCursor(
            position=blocks.position,
            codec=blocks.codec,
            since_params=blocks.since_params,
            records=blocks.records,
            size=blocks.size,
        )


create_app = AppFactory(OffsetCursorTickets, TicketsSettings)
