"""An in-memory Records API that follows the upstream contract to the letter.

Why it exists: the functional tests need a real upstream on loopback that can misbehave
on demand, `docker-compose up` needs something to sync against, and the benchmark needs
a huge collection that costs no memory. It follows the contract, not a real product, so
it is deliberately strict: anything the contract calls wrong gets a 400 here.

Run it beside the connector:

    python -m service.tools.demo_upstream --port 8000 --token demo-token

Test hooks live under `/_admin` (no auth; collection names cannot start with `_`):
reset, bulk inserts with chosen `updated_at`, a raw dump, fault injection (a record changed
between two list pages among them), a clock that can be made coarse or frozen, and stats.

The modules: ``store`` (timestamps, collections in (updated_at, id) order, pages,
cursors), ``synthetic`` (computed collections for the benchmarks), ``seed`` (the demo
data), ``faults`` (fault injection), ``responses`` (JSON in and out), ``admin`` (the
``/_admin`` switches both demos share), ``app`` (the Flask app: the records API and the
admin API), ``pre_encoded`` (the synthetic collections' pages encoded once, for the
benchmarks' ``--pre-encoded``), ``serving`` (the address options and the server both demos'
command lines share) and ``__main__`` (the command line).
"""

from __future__ import annotations

from service.tools.demo_upstream.app import create_app
from service.tools.demo_upstream.seed import seed_collections
from service.tools.demo_upstream.store import format_timestamp
from service.tools.demo_upstream.store import parse_timestamp

__all__ = ["create_app", "format_timestamp", "parse_timestamp", "seed_collections"]
