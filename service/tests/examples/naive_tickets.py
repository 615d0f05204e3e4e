"""BROKEN ON PURPOSE: the Tickets adapter with the page-number loop a fork writes first.

It walks ``page=1, 2, ...`` until ``total_pages``. When a ticket changes while it walks,
the ticket moves to the end of the list and every ticket after its old place moves up by
one: the one that moves up across the page boundary just passed is never delivered, not
in this run and not in a later one (Sesam's ``since`` is past it). The conformance suite
must fail it (``test_conformance_catches_loss.py``); ``PageNumberPaging`` is the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from service.framework.adapter import Record
from service.framework.app import AppFactory
from service.tools.examples.tickets import Tickets
from service.tools.examples.tickets import TicketsSettings
from service.tools.examples.tickets import modified_since


class NaiveTickets(Tickets):
    def pages(self, collection: str, since: tuple[Any, ...] | None) -> Iterator[list[Record]]:
        params: dict[str, Any] = {"per_page": self.settings.tickets_page_size}
        if since is not None:
            params.update(modified_since(since[0]))
        url = self.client.url(collection)
        page = 1
        while True:
            body = self.client.get_json(url, {**params, "page": page})
            yield body["items"]
            if page >= body["total_pages"]:
                return
            page += 1


create_app = AppFactory(NaiveTickets, TicketsSettings)
