"""An in-memory Tickets API: the second example's upstream, shaped unlike the Records API.

Where the Records API has cursors, a bearer token, string ids and microsecond times, this
one has what many real APIs have instead:

- page numbers: ``GET /{resource}?page=2&per_page=50`` answers ``{"items": [...], "page":
  2, "per_page": 50, "total": 120, "total_pages": 3}``;
- an API key header, ``X-Api-Key: <key>`` (a missing or wrong key is a 401);
- integer ids (``{"id": 17, ...}``; in a path, ``/tickets/17``);
- second-precision times, ``"modified_at": "2026-01-02T03:04:05Z"``, which many tickets
  share;
- ``modified_since=<time>`` (inclusive: ``modified_at >= modified_since``). With it, the
  list holds every ticket changed since, deleted ones included with ``"deleted": true``;
  without it, the live tickets only. That is the only way to see a deletion.

The list is in ascending (``modified_at``, ``id``) order. ``PUT /{resource}/{id}`` creates
or replaces a ticket (the server sets ``modified_at`` and ``deleted``), ``DELETE`` marks it
deleted (204; an unknown or deleted id is a 404). Run it with

    python -m service.tools.demo_tickets --port 8100 --api-key demo-key

Test hooks under ``/_admin`` (no key), as the Records demo has them: ``reset``, inserts with
explicit times (``records/{resource}``), a raw dump, ``faults`` (a storm of errors, a list
that fails after some pages, ``change_after_pages``: a ticket changed between two list
pages), ``clock`` (freeze it, advance it, or make it coarser than a second) and ``stats``.
"""

from __future__ import annotations

from service.tools.demo_tickets.app import create_app

__all__ = ["create_app"]
