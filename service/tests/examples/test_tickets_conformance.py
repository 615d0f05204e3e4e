"""The conformance suite, every check of it, against the Tickets example (``conftest.py``
beside this file wires it). Importing the checks runs them here with this wiring."""

from service.tests.conformance.test_sesam_conformance import *  # noqa: F403
