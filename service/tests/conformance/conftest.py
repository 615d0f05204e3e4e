"""The conformance suite's own fixtures, made from the fork's one ``conformance_target``."""

from __future__ import annotations

import pytest

from service.tests.conformance.kit import ConformanceTarget
from service.tests.conformance.kit import ConformanceUpstream


@pytest.fixture
def conformance_connector(conformance_target: ConformanceTarget) -> ConformanceTarget:
    """The running connector: ``url``, ``collection`` and ``auth``."""
    return conformance_target


@pytest.fixture
def conformance_upstream(conformance_target: ConformanceTarget) -> ConformanceUpstream:
    return conformance_target.upstream


@pytest.fixture
def conformance_skips(conformance_target: ConformanceTarget) -> dict[str, str]:
    return conformance_target.skips
