"""A hostile upstream: a Records API on loopback that misbehaves on demand, at the byte level.

Why: a connector sits in front of third-party APIs, proxies and gateways that send gzip
bombs, trickle their answers, never end a body, loop their cursors, redirect writes and
quote credentials back. The functional tests run the real connector against this tool to
show that each such answer gets a bounded, safe reaction. The demo upstream (Flask) cannot
do this: a WSGI server frames every answer itself.

    python -m service.tools.hostile_upstream --port 8800 --other-port 8801 --token T

Two origins: ``main``, the upstream the connector is configured with, and ``other``, a
second origin (another port) that serves the same API from the same records and logs
everything, to catch a credential or a write that leaves the configured origin. By default
both answer as a minimal, correct Records API; the rules set under ``/_hostile/rules``
make them misbehave. docs/hostile-upstream.md is the manual; the tests' client and fixture
are in service/tests/hostile_kit.py.

Standard library only. The modules: ``wire`` (HTTP on a raw socket), ``records`` (the
records, pages and cursors), ``oauth`` (tokens and the token endpoint), ``api`` (the
default answers), ``rules`` (rules and their parameters), ``bodies`` (the large bodies),
``actions`` (the misbehaviours), ``state`` (what the listeners share: log, stats),
``admin`` (``/_hostile/``), ``server`` (the listeners, a connection's life) and
``__main__`` (the command line).
"""
